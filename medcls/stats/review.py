"""Cases to look at again: the out-of-fold predictions most at odds with their labels.

Cross-validation scores every case once by a model that never saw it. The cases that model gives
the lowest probability for their own label are where a reader should look first: a wrong label, a
look-alike of the other class (a tumour mimic labelled normal), or an image the model cannot read
yet. For a binary task, the ROC AUC without the case says how much of the pooled figure it costs.
"""

from __future__ import annotations

import numpy as np


def auc_without_each(labels: np.ndarray, positive_scores: np.ndarray) -> np.ndarray:
    """Per case, the ROC AUC of the others (ties count half): how far the pooled figure would rise
    without it. NaN where leaving the case out leaves a class empty."""
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    pos, neg = np.sort(positive_scores[positive]), np.sort(positive_scores[~positive])

    def below(sorted_scores, values):  # how many scores lie below each value, ties half
        return (np.searchsorted(sorted_scores, values, "left") + np.searchsorted(sorted_scores, values, "right")) / 2

    misordered = np.empty(len(labels))  # the positive-negative pairs each case is in, in the wrong order
    misordered[~positive] = below(pos, positive_scores[~positive])  # positives at or below a negative
    misordered[positive] = n_neg - below(neg, positive_scores[positive])  # negatives at or above a positive
    total = misordered[~positive].sum()
    pairs = np.where(positive, (n_pos - 1) * n_neg, n_pos * (n_neg - 1)).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, 1 - (total - misordered) / pairs, np.nan)


def cases_at_odds(labels: np.ndarray, probs: np.ndarray, count: int = 10) -> list[dict]:
    """The `count` cases given the lowest probability for their own label, lowest first: position,
    that probability and (binary) the ROC AUC of all the other cases (None for more classes)."""
    labels = np.asarray(labels, dtype=int)
    own = probs[np.arange(len(labels)), labels]
    without = auc_without_each(labels, probs[:, 1]) if probs.shape[1] == 2 else None
    order = np.argsort(own, kind="stable")[:count]
    return [{"index": int(i), "p_label": float(own[i]),
             "auc_without": None if without is None or np.isnan(without[i]) else float(without[i])} for i in order]
