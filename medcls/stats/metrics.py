"""Clinical metrics on whole splits: sensitivity, specificity, ROC AUC and friends.

Every function takes `(y_true, probs, y_pred)` as documented in `medcls.plugins.hookspecs`. Binary tasks
treat class index 1 as positive; multi-class tasks report the macro average over classes
(one-vs-rest), so a rare class weighs as much as a common one.
"""

from __future__ import annotations

import numpy as np


def decisions(probs: np.ndarray, threshold=None, multi_label: bool = False) -> np.ndarray:
    """The one decision rule, every caller's (scoring, predict, cross-validation, subgroups, compare,
    figures). Binary: positive when P(positive) >= threshold; multi-class, or no threshold yet: the
    most probable class. Multi-label: (N, L) 0/1, each finding present when its probability reaches
    its own threshold (0.5 before one is chosen)."""
    probs = np.atleast_2d(probs)
    if multi_label:
        thresholds = np.full(probs.shape[1], 0.5) if threshold is None else np.asarray(threshold, dtype=np.float64)
        return (probs >= thresholds[None, :]).astype(np.int64)
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1).astype(np.int64)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, positive: int) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) with `positive` as the positive class."""
    t, p = y_true == positive, y_pred == positive
    return int((t & p).sum()), int((~t & p).sum()), int((~t & ~p).sum()), int((t & ~p).sum())


def ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def per_class_mean(y_true, y_pred, n_classes, fn) -> float:
    """`fn(TP, FP, TN, FN)` for the positive class (binary) or macro over classes."""
    classes = [1] if n_classes == 2 else range(n_classes)
    values = [fn(*confusion_counts(y_true, y_pred, c)) for c in classes]
    return float(np.nanmean(values)) if not all(np.isnan(values)) else float("nan")


def sensitivity(y_true, probs, y_pred) -> float:
    """True-positive rate (recall): of the patients with the condition, the fraction flagged."""
    return per_class_mean(y_true, y_pred, probs.shape[1], lambda tp, fp, tn, fn: ratio(tp, tp + fn))


def specificity(y_true, probs, y_pred) -> float:
    """True-negative rate: of the patients without the condition, the fraction cleared."""
    return per_class_mean(y_true, y_pred, probs.shape[1], lambda tp, fp, tn, fn: ratio(tn, tn + fp))


def ppv(y_true, probs, y_pred) -> float:
    """Positive predictive value (precision) at the prevalence of this data set."""
    return per_class_mean(y_true, y_pred, probs.shape[1], lambda tp, fp, tn, fn: ratio(tp, tp + fp))


def npv(y_true, probs, y_pred) -> float:
    """Negative predictive value at the prevalence of this data set."""
    return per_class_mean(y_true, y_pred, probs.shape[1], lambda tp, fp, tn, fn: ratio(tn, tn + fn))


def accuracy(y_true, probs, y_pred) -> float:
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def balanced_accuracy(y_true, probs, y_pred) -> float:
    """Mean of per-class recall: not inflated by the majority class."""
    recalls = [ratio(int(((y_true == c) & (y_pred == c)).sum()), int((y_true == c).sum()))
               for c in range(probs.shape[1])]
    return float(np.nanmean(recalls)) if not all(np.isnan(recalls)) else float("nan")


def f1(y_true, probs, y_pred) -> float:
    return per_class_mean(y_true, y_pred, probs.shape[1], lambda tp, fp, tn, fn: ratio(2 * tp, 2 * tp + fp + fn))


def present_classes(y_true: np.ndarray) -> int:
    return len(np.unique(y_true))


def roc_auc(y_true, probs, y_pred) -> float:
    """Area under the ROC curve (macro one-vs-rest for more than two classes)."""
    from sklearn.metrics import roc_auc_score

    if np.ndim(y_true) == 2:  # multi-label: the mean over findings of each finding's AUC
        return macro_finding_auc(y_true, probs)
    if present_classes(y_true) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    if present_classes(y_true) < probs.shape[1]:
        return float("nan")
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))


def macro_finding_auc(targets: np.ndarray, probs: np.ndarray) -> float:
    """Multi-label: ROC AUC of each finding on its known (non-NaN) cases, averaged over the
    findings where it is defined."""
    values = []
    for j in range(targets.shape[1]):
        known = ~np.isnan(targets[:, j])
        values.append(roc_auc(targets[known, j].astype(np.int64), np.stack([1 - probs[known, j], probs[known, j]], 1),
                              None))
    return float(np.nanmean(values)) if not all(np.isnan(values)) else float("nan")


def pr_auc(y_true, probs, y_pred) -> float:
    """Average precision, the area under the precision-recall curve (macro for multi-class)."""
    from sklearn.metrics import average_precision_score

    if present_classes(y_true) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(average_precision_score(y_true, probs[:, 1]))
    onehot = np.eye(probs.shape[1])[y_true]
    return float(average_precision_score(onehot, probs, average="macro"))


def brier(y_true, probs, y_pred) -> float:
    """Brier score: mean squared error of the predicted probabilities (lower is better)."""
    if not len(y_true):
        return float("nan")
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - (y_true == 1)) ** 2))
    onehot = np.eye(probs.shape[1])[y_true]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def youden_threshold(y_true: np.ndarray, positive_scores: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (Youden's J) on these scores."""
    from sklearn.metrics import roc_curve

    if present_classes(y_true) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y_true, positive_scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def mcc(y_true, probs, y_pred) -> float:
    """Matthews correlation coefficient: one number for the whole 2x2 (or K x K) table."""
    from sklearn.metrics import matthews_corrcoef

    if present_classes(y_true) < 2 and present_classes(y_pred) < 2:
        return float("nan")
    return float(matthews_corrcoef(y_true, y_pred))


ECE_BINS = 15
LOGIT_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p / (1 - p))


def ece(y_true, probs, y_pred) -> float:
    """Expected calibration error over 15 equal-width bins: of P(positive) for binary tasks, of
    the top-class confidence for multi-class ones (Guo et al. 2017). Lower is better."""
    if not len(y_true):
        return float("nan")
    if probs.shape[1] == 2:
        confidence, correct = probs[:, 1], (y_true == 1).astype(np.float64)
    else:
        confidence, correct = probs.max(1), (probs.argmax(1) == y_true).astype(np.float64)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gaps = np.bincount(bins, weights=correct - confidence, minlength=ECE_BINS)
    return float(np.abs(gaps).sum() / len(y_true))


def cross_entropy(probs: np.ndarray, labels: np.ndarray, class_weights: np.ndarray | None = None) -> float:
    """Mean (optionally class-weighted) negative log-likelihood, as the training loss computes it."""
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    weights = np.ones(len(labels)) if class_weights is None else class_weights[labels]
    return float(-(weights * np.log(picked)).sum() / weights.sum())
