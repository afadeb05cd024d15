"""Workflows: what a researcher asks medcls to do (train, cross-validate, ensemble, experiment,
evaluate, compare, predict, explain, export), each built from the core, data, statistics and reports."""
