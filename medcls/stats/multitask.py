"""Multi-task scoring: each auxiliary head with its own figures. A classification head is assessed by
exactly the single-task code (its operating point chosen on validation); a regression head by its
mean absolute error, root mean squared error, R² and Pearson correlation, each with a percentile
bootstrap interval over patients (or cases)."""

from __future__ import annotations

import numpy as np

from medcls.stats.assess import LEVEL, assess
from medcls.stats.bootstrap import bootstrap_figures
from medcls.stats.operating_points import choose_threshold

REGRESSION_FIGURES = ("mae", "rmse", "r2", "pearson_r")


def regression_figures(y: np.ndarray, predicted: np.ndarray) -> dict:
    """MAE, RMSE, R² (1 - residual / total sum of squares) and Pearson's r of one head."""
    if len(y) == 0:
        return {name: float("nan") for name in REGRESSION_FIGURES}
    error = predicted - y
    total = float(((y - y.mean()) ** 2).sum())
    spread = float(np.std(y) * np.std(predicted))
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
            "r2": 1 - float((error ** 2).sum()) / total if total > 0 else float("nan"),
            "pearson_r": float(np.mean((y - y.mean()) * (predicted - predicted.mean())) / spread) if spread > 0
            else float("nan")}


def assess_regression(y: np.ndarray, predicted: np.ndarray, *, groups=None, n_resamples: int = 2000, seed: int = 0,
                      level: float = LEVEL) -> dict:
    """The regression figures of the known cases with percentile bootstrap intervals, resampling
    patients when they have several images (image-level resampling would be too narrow)."""
    values = {"n": int(len(y)), **regression_figures(y, predicted)}
    intervals = bootstrap_figures(lambda rows: regression_figures(y[rows], predicted[rows]), len(y), groups=groups,
                                  n_resamples=n_resamples, seed=seed, level=level)
    return {"kind": "regression", "values": values, "intervals": intervals}


def assess_tasks(tasks: list, outputs: dict, targets: dict, metrics, *, patients: dict, threshold_rule: str = "youden",
                 target: float = 0.95, n_resamples: int = 2000, seed: int = 0, thresholds: dict | None = None) -> dict:
    """Per split and task: the head's figures on the cases whose target is known. `outputs[split]`
    maps task name to predictions (class probabilities or values), `targets[split]` is the (n,
    tasks) target array, `patients[split]` the patient ids (or None). Binary heads get their
    operating point on the validation split by `threshold_rule`, or the stored one from
    `thresholds` (evaluating a finished run)."""
    assessed = {split: {} for split in outputs}
    for j, task in enumerate(tasks):
        threshold = None
        if thresholds is not None:
            threshold = thresholds.get(task.name)
        elif task.kind == "binary":
            known = ~np.isnan(targets["val"][:, j])
            threshold = float(choose_threshold(threshold_rule, targets["val"][known, j].astype(np.int64),
                                               outputs["val"][task.name][known, 1], target=target))
        for split in outputs:
            known = ~np.isnan(targets[split][:, j])
            groups = None if patients[split] is None else patients[split][known]
            predicted, y = outputs[split][task.name][known], targets[split][known, j]
            if task.kind == "regression":
                found = assess_regression(y, predicted, groups=groups, n_resamples=n_resamples, seed=seed)
            else:
                found = {"kind": task.kind, **assess(predicted, y.astype(np.int64), threshold, metrics, patients=groups,
                                                     where=f"{split} split task {task.name}", n_resamples=n_resamples,
                                                     seed=seed)}
            found["threshold"] = threshold
            found["unknown"] = int((~known).sum())
            assessed[split][task.name] = found
    return assessed
