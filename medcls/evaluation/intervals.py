"""Confidence intervals: Wilson score for proportions, DeLong for ROC AUC."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm, rankdata


def wilson(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927): sound at small n and near 0 or 1."""
    if total == 0:
        return float("nan"), float("nan")
    z = norm.ppf(0.5 + level / 2)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


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
