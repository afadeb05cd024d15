"""Evaluation: metrics, confidence intervals, operating points and reports."""
