"""Confidence intervals and paired tests: Wilson score for proportions, DeLong for ROC AUC (and the
paired DeLong test of two AUCs on the same cases), exact McNemar for paired decisions."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, norm, rankdata

from medcls.errors import DataError
from medcls.stats.clustered import paired_auc_test
from medcls.stats.metrics import decisions


def wilson(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927): sound at small n and near 0 or 1."""
    if total == 0:
        return float("nan"), float("nan")
    z = norm.ppf(0.5 + level / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # At 0 or n successes a bound equals p exactly; rounding must not put it on the wrong side.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def delong_components(y_true: np.ndarray, scores: np.ndarray):
    """ROC AUC and DeLong's structural components of the positives and of the negatives, via
    midranks in O(n log n) (Sun & Xu 2014); None when a class is missing."""
    positives, negatives = scores[y_true == 1], scores[y_true != 1]
    m, n = len(positives), len(negatives)
    if m == 0 or n == 0:
        return None
    all_ranks = rankdata(np.concatenate([positives, negatives]))
    pos_ranks, neg_ranks = rankdata(positives), rankdata(negatives)
    auc = (all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v_pos = (all_ranks[:m] - pos_ranks) / n
    v_neg = 1.0 - (all_ranks[m:] - neg_ranks) / m
    return float(auc), v_pos, v_neg


def delong_auc_variance(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its DeLong variance."""
    parts = delong_components(y_true, scores)
    if parts is None:
        return float("nan"), float("nan")
    auc, v_pos, v_neg = parts
    s_pos = v_pos.var(ddof=1) if len(v_pos) > 1 else 0.0
    s_neg = v_neg.var(ddof=1) if len(v_neg) > 1 else 0.0
    return auc, float(s_pos / len(v_pos) + s_neg / len(v_neg))


def delong_interval(y_true: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """DeLong interval for ROC AUC on the logit scale, so it stays inside [0, 1]."""
    auc, variance = delong_auc_variance(y_true, scores)
    if math.isnan(auc):
        return float("nan"), float("nan")
    if auc in (0.0, 1.0) or variance <= 0:
        # Perfect separation makes DeLong's variance zero, which would claim certainty. Bound it
        # as a proportion over the smaller class instead (conservative: min(n+, n-) "trials").
        trials = int(min((y_true == 1).sum(), (y_true != 1).sum()))
        return wilson(round(auc * trials), trials, level)
    z = norm.ppf(0.5 + level / 2)
    logit = math.log(auc / (1 - auc))
    half = z * math.sqrt(variance) / (auc * (1 - auc))
    expit = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    return expit(logit - half), expit(logit + half)


def paired_delong(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, groups=None) -> dict:
    """Difference of two correlated ROC AUCs and its two-sided p-value (DeLong et al. 1988); with
    `groups` (patient ids), over patients (Obuchowski 1997: medcls.stats.clustered)."""
    return paired_auc_test(y, scores_a, scores_b, groups)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact (binomial) McNemar test on paired correct/incorrect decisions."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(min(1.0, 2 * binom.cdf(min(only_a, only_b), discordant, 0.5)))
    return {"a_only_correct": only_a, "b_only_correct": only_b, "p_value": p_value, "method": "exact McNemar"}


def compare_predictions(y, probs_a, probs_b, threshold_a, threshold_b, groups=None) -> dict:
    """AUC, sensitivity and specificity of two binary models on the same cases, with paired tests;
    `groups` (patient ids) makes the AUC test count patients, not images."""
    if probs_a.shape[1] != 2 or probs_b.shape[1] != 2:
        raise DataError("compare handles binary tasks: both runs must have two classes")
    decided_a, decided_b = decisions(probs_a, threshold_a) == 1, decisions(probs_b, threshold_b) == 1
    positives, negatives = y == 1, y != 1
    result = {"n": int(len(y)), "auc": paired_delong(y, probs_a[:, 1], probs_b[:, 1], groups)}
    if groups is not None:
        result["patients"] = int(len(np.unique(groups)))
    for name, members, truth in (("sensitivity", positives, True), ("specificity", negatives, False)):
        correct_a, correct_b = decided_a[members] == truth, decided_b[members] == truth
        result[name] = {"a": float(correct_a.mean()) if members.any() else float("nan"),
                        "b": float(correct_b.mean()) if members.any() else float("nan"),
                        **mcnemar(correct_a, correct_b)}
    return result
