"""Comparing two models on the same cases: paired DeLong test for ROC AUC, exact McNemar tests for
sensitivity and specificity at each model's stored operating point."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, norm

from medcls.errors import DataError
from medcls.evaluation.intervals import delong_components


def paired_delong(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict:
    """Difference of two correlated ROC AUCs and its two-sided p-value (DeLong et al. 1988)."""
    a, b = delong_components(y, scores_a), delong_components(y, scores_b)
    if a is None or b is None:
        raise DataError("paired DeLong test is not computable: the cases hold only one class")
    (auc_a, pos_a, neg_a), (auc_b, pos_b, neg_b) = a, b
    cov_pos = np.cov(np.stack([pos_a, pos_b])) / len(pos_a)
    cov_neg = np.cov(np.stack([neg_a, neg_b])) / len(neg_a)
    cov = cov_pos + cov_neg
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    difference = auc_a - auc_b
    if variance <= 0:
        p_value = 1.0 if difference == 0 else 0.0
        z = math.copysign(math.inf, difference) if difference else 0.0
    else:
        z = difference / math.sqrt(variance)
        p_value = float(2 * norm.sf(abs(z)))
    low, high = difference - 1.959964 * math.sqrt(max(variance, 0)), difference + 1.959964 * math.sqrt(max(variance, 0))
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": difference, "low": low, "high": high, "z": z,
            "p_value": p_value, "method": "paired DeLong"}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired correct/incorrect decisions."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(min(1.0, 2 * binom.cdf(min(only_a, only_b), discordant, 0.5)))
    return {"a_only_correct": only_a, "b_only_correct": only_b, "p_value": p_value, "method": "exact McNemar"}


def compare_predictions(y, probs_a, probs_b, threshold_a, threshold_b) -> dict:
    """AUC, sensitivity and specificity of two binary models on the same cases, with paired tests."""
    if probs_a.shape[1] != 2 or probs_b.shape[1] != 2:
        raise DataError("compare handles binary tasks: both runs must have two classes")
    decided_a, decided_b = probs_a[:, 1] >= threshold_a, probs_b[:, 1] >= threshold_b
    positives, negatives = y == 1, y != 1
    result = {"n": int(len(y)), "auc": paired_delong(y, probs_a[:, 1], probs_b[:, 1])}
    for name, members, truth in (("sensitivity", positives, True), ("specificity", negatives, False)):
        correct_a, correct_b = decided_a[members] == truth, decided_b[members] == truth
        result[name] = {"a": float(correct_a.mean()) if members.any() else float("nan"),
                        "b": float(correct_b.mean()) if members.any() else float("nan"),
                        **mcnemar(correct_a, correct_b)}
    return result


def compare_runs(run_a, run_b, registries, *, data=None, split=None, log=print) -> dict:
    """Score both runs on the same data and split, refuse if the cases differ, then compare."""
    from medcls.evaluation.evaluate import run_predictions

    a = run_predictions(run_a, registries, data=data, split=split, log=log)
    b = run_predictions(run_b, registries, data=data, split=split, log=log)
    keys_a = [a[0].cases[i].key for i in a[0].cache.kept[a[1]]]
    keys_b = [b[0].cases[i].key for i in b[0].cache.kept[b[1]]]
    if keys_a != keys_b:
        only = len(set(keys_a) ^ set(keys_b))
        raise DataError(f"runs '{run_a}' and '{run_b}' would be compared on different cases ({only} differ, "
                        "e.g. different test splits): give both the same --data with --split all")
    if a[4]["classes"] != b[4]["classes"]:
        raise DataError(f"runs '{run_a}' and '{run_b}' have different classes: {a[4]['classes']} vs {b[4]['classes']}")
    result = compare_predictions(a[3], a[2], b[2], a[4]["threshold"], b[4]["threshold"])
    result["split"] = a[5]
    return result
