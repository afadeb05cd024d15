"""Comparing two models on the same cases: paired DeLong test for ROC AUC (over patients when the
data has patient ids: Obuchowski 1997), exact McNemar tests for sensitivity and specificity at each
model's stored operating point."""

from __future__ import annotations

from medcls.errors import DataError
from medcls.stats.intervals import compare_predictions
from medcls.stats.multilabel import compare_findings
from medcls.workflows.evaluate import run_predictions


def compare_runs(run_a, run_b, registries, *, data=None, split=None) -> dict:
    """Score both runs on the same data and split, refuse if the cases differ, then compare."""

    a = run_predictions(run_a, registries, data=data, split=split)
    b = run_predictions(run_b, registries, data=data, split=split)
    if a.keys != b.keys:
        only = len(set(a.keys) ^ set(b.keys))
        raise DataError(f"runs '{run_a}' and '{run_b}' would be compared on different cases ({only} differ, "
                        "e.g. different test splits): give both the same --data with --split all")
    if a.info.classes != b.info.classes:
        raise DataError(f"runs '{run_a}' and '{run_b}' have different classes: {a.info.classes} vs {b.info.classes}")
    if a.data.multi_label:
        result = compare_findings(a.labels, a.probs, b.probs, a.info.threshold, b.info.threshold, a.info.classes,
                                  groups=a.data.patients(a.rows))
    else:
        result = compare_predictions(a.labels, a.probs, b.probs, a.info.threshold, b.info.threshold,
                                     groups=a.data.patients(a.rows))
    result["split"] = a.split
    return result
