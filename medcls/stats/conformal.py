"""Abstention clinicians can use: split-conformal prediction sets, fitted on validation, that hold
the true class with a chosen probability; a case whose set is not a single class is referred
(to a human reader) instead of decided.

Class-conditional (Mondrian) split conformal with the LAC score 1 - P(true class) (Vovk 2005;
Sadinle, Lei & Wasserman 2019): the threshold of each class comes from the validation cases of that
class, so coverage holds for diseased and healthy cases separately (a sensitivity-like guarantee),
not only on average over an imbalanced set. Guarantee: for exchangeable validation and new cases,
P(true class in the set) >= coverage for each class; with n validation cases of a class the
achieved coverage is at most coverage + 1/(n + 1).
"""

from __future__ import annotations

import math

import numpy as np

from medcls.stats.intervals import wilson
from medcls.stats.metrics import confusion_counts

METHOD = "split conformal, class-conditional (LAC score)"


def fit_conformal(probs: np.ndarray, labels: np.ndarray, coverage: float) -> dict:
    """Per class, the least probability a class needs to enter a prediction set."""
    thresholds = []
    for k in range(probs.shape[1]):
        scores = np.sort(1.0 - probs[labels == k, k])
        n = len(scores)
        rank = math.ceil((n + 1) * coverage)  # the rank-th smallest score; beyond n: always include
        qhat = scores[rank - 1] if rank <= n else math.inf
        thresholds.append(float(max(0.0, 1.0 - qhat)) if math.isfinite(qhat) else 0.0)
    return {"coverage": coverage, "thresholds": thresholds, "method": METHOD,
            "calibration_cases": [int((labels == k).sum()) for k in range(probs.shape[1])]}


def prediction_sets(probs: np.ndarray, fitted: dict) -> np.ndarray:
    """(N, K) booleans: class k is in case i's set."""
    return probs >= np.asarray(fitted["thresholds"])[None, :]


def refer(probs: np.ndarray, fitted: dict) -> np.ndarray:
    """Cases to refer: their set holds several classes (ambiguous) or none (unlike any validation case)."""
    return prediction_sets(probs, fitted).sum(1) != 1


def conformal_report(probs: np.ndarray, labels: np.ndarray, fitted: dict) -> dict:
    """On a split (test): coverage achieved overall and per class, how many cases are referred, and
    for binary tasks sensitivity and specificity on the cases kept (decided by their single class)."""
    sets = prediction_sets(probs, fitted)
    size = sets.sum(1)
    covered = sets[np.arange(len(labels)), labels]
    kept = size == 1
    report = {
        "coverage_target": fitted["coverage"], "method": fitted["method"], "n": int(len(labels)),
        "coverage": float(covered.mean()) if len(labels) else float("nan"),
        "coverage_interval": wilson(int(covered.sum()), len(labels)),
        "per_class_coverage": [float(covered[labels == k].mean()) if (labels == k).any() else float("nan")
                               for k in range(probs.shape[1])],
        "referred": int((~kept).sum()), "referral_rate": float((~kept).mean()) if len(labels) else float("nan"),
        "ambiguous": int((size > 1).sum()), "empty": int((size == 0).sum()),
    }
    if probs.shape[1] == 2:
        decided = sets[kept].argmax(1)
        tp, fp, tn, fn = confusion_counts(labels[kept], decided, 1)
        report["kept"] = {
            "n": int(kept.sum()),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "sensitivity_interval": wilson(tp, tp + fn),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "specificity_interval": wilson(tn, tn + fp),
        }
    return report
