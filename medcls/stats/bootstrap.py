"""Stratified bootstrap, resampling images or whole patients, vectorised over resamples.

A resample is a row of case weights (how often each case was drawn), so every built-in binary
metric is a few matrix products over a (resamples x cases) weight matrix instead of 2,000 calls
into scikit-learn. Metrics without a vectorised form fall back to a loop over resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from medcls.stats.metrics import ECE_BINS

DEFAULT_RESAMPLES = 2000
CHUNK = 250  # resamples per weight matrix: 250 x 10,000 float32 is 10 MB


def unit_indices(n: int, groups: np.ndarray | None) -> np.ndarray:
    """The resampling unit of each case: itself, or its patient."""
    if groups is None:
        return np.arange(n)
    _, units = np.unique(groups, return_inverse=True)
    return units


def resample_weights(labels: np.ndarray, groups: np.ndarray | None, n_resamples: int, seed: int):
    """Yield (b, n) float32 weight matrices, stratified by class (a patient's class is its
    highest label), drawing whole patients when `groups` is given."""
    rng = np.random.default_rng(seed)
    units = unit_indices(len(labels), groups)
    n_units = units.max() + 1
    unit_label = np.zeros(n_units, dtype=np.int64)
    np.maximum.at(unit_label, units, labels)
    strata = [np.flatnonzero(unit_label == c) for c in np.unique(unit_label)]
    done = 0
    while done < n_resamples:
        b = min(CHUNK, n_resamples - done)
        unit_counts = np.zeros((b, n_units), dtype=np.float32)
        for members in strata:
            k = len(members)
            draws = rng.integers(0, k, size=(b, k)) + (np.arange(b) * k)[:, None]
            unit_counts[:, members] = np.bincount(draws.ravel(), minlength=b * k).reshape(b, k)
        yield unit_counts[:, units]
        done += b


@dataclass
class WeightedBinary:
    """Per-resample 2x2 tables and ROC/PR step functions of a binary task under weights `W`."""

    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    pos_level: np.ndarray  # (b, L) positive weight per distinct score, highest score first
    neg_level: np.ndarray
    total: np.ndarray
    brier_sum: np.ndarray
    ece_sum: np.ndarray

    @classmethod
    def build(cls, W: np.ndarray, y: np.ndarray, p1: np.ndarray, yhat: np.ndarray) -> "WeightedBinary":
        pos, flagged = (y == 1), (yhat == 1)
        as_float = lambda mask: mask.astype(np.float32)  # noqa: E731
        order = np.argsort(-p1, kind="stable")
        sorted_scores = p1[order]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        W_sorted = W[:, order]
        bins = np.minimum((p1 * ECE_BINS).astype(int), ECE_BINS - 1)
        calibration = np.zeros((len(y), ECE_BINS), dtype=np.float32)
        calibration[np.arange(len(y)), bins] = pos - p1
        return cls(
            tp=W @ as_float(pos & flagged), fp=W @ as_float(~pos & flagged),
            tn=W @ as_float(~pos & ~flagged), fn=W @ as_float(pos & ~flagged),
            pos_level=np.add.reduceat(W_sorted * pos[order], starts, axis=1),
            neg_level=np.add.reduceat(W_sorted * ~pos[order], starts, axis=1),
            total=W.sum(1), brier_sum=W @ ((p1 - pos) ** 2).astype(np.float32),
            ece_sum=np.abs(W @ calibration).sum(1),
        )

    @staticmethod
    def divide(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

    def sensitivity(self):
        return self.divide(self.tp, self.tp + self.fn)

    def specificity(self):
        return self.divide(self.tn, self.tn + self.fp)

    def ppv(self):
        return self.divide(self.tp, self.tp + self.fp)

    def npv(self):
        return self.divide(self.tn, self.tn + self.fn)

    def accuracy(self):
        return self.divide(self.tp + self.tn, self.total)

    def balanced_accuracy(self):
        return (self.sensitivity() + self.specificity()) / 2

    def f1(self):
        return self.divide(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def mcc(self):
        tp, fp, tn, fn = (v.astype(np.float64) for v in (self.tp, self.fp, self.tn, self.fn))
        return self.divide(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))

    def brier(self):
        return self.divide(self.brier_sum, self.total)

    def ece(self):
        return self.divide(self.ece_sum, self.total)

    def roc_points(self):
        """TPR and FPR at each distinct threshold, highest first."""
        positives, negatives = self.pos_level.sum(1, keepdims=True), self.neg_level.sum(1, keepdims=True)
        return self.divide(np.cumsum(self.pos_level, 1), positives), self.divide(np.cumsum(self.neg_level, 1), negatives)

    def roc_auc(self):
        positives, negatives = self.pos_level.sum(1), self.neg_level.sum(1)
        negatives_below = negatives[:, None] - np.cumsum(self.neg_level, 1)
        wins = (self.pos_level * (negatives_below + 0.5 * self.neg_level)).sum(1)
        return self.divide(wins, positives * negatives)

    def pr_auc(self):
        true_pos, false_pos = np.cumsum(self.pos_level, 1), np.cumsum(self.neg_level, 1)
        precision = self.divide(true_pos, true_pos + false_pos)
        return self.divide((self.pos_level * np.nan_to_num(precision)).sum(1), self.pos_level.sum(1))

    def sensitivity_at_specificity(self, target: float):
        tpr, fpr = self.roc_points()
        return np.where(fpr <= 1 - target + 1e-12, tpr, 0.0).max(1)

    def specificity_at_sensitivity(self, target: float):
        tpr, fpr = self.roc_points()
        return 1 - np.where(tpr >= target - 1e-12, fpr, 1.0).min(1)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    low, high = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_binary(y, p1, yhat, statistics: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                     level=0.95, seed=0) -> dict[str, tuple[float, float]]:
    """Percentile intervals of `statistics` (name -> fn(WeightedBinary) -> (b,) array)."""
    collected = {name: [] for name in statistics}
    for W in resample_weights(y, groups, n_resamples, seed):
        stats = WeightedBinary.build(W, y, p1, yhat)
        for name, fn in statistics.items():
            collected[name].append(np.asarray(fn(stats), dtype=np.float64))
    return {name: percentile_interval(np.concatenate(values), level) for name, values in collected.items()}


def bootstrap_loop(y, probs, yhat, functions: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                   level=0.95, seed=0) -> dict[str, tuple[float, float]]:
    """The same intervals for metrics without a vectorised form: one call per resample."""
    collected = {name: [] for name in functions}
    for W in resample_weights(y, groups, n_resamples, seed):
        for row in W.astype(np.int64):
            index = np.repeat(np.arange(len(y)), row)
            for name, fn in functions.items():
                try:
                    collected[name].append(float(fn(y[index], probs[index], yhat[index])))
                except Exception:  # a resample where the metric is undefined
                    collected[name].append(float("nan"))
    return {name: percentile_interval(np.asarray(values), level) for name, values in collected.items()}


def bootstrap_multiclass(y, probs, yhat, statistics: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                         level=0.95, seed=0) -> dict[str, tuple[float, float]]:
    """Intervals of one-vs-rest metrics of a K-class task: `statistics` maps a name to
    (fn(WeightedBinary) -> (b,), 'macro' or 'sum'), combined over the K binary problems."""
    collected = {name: [] for name in statistics}
    classes = range(probs.shape[1])
    for W in resample_weights(y, groups, n_resamples, seed):
        per_class = [WeightedBinary.build(W, (y == c).astype(np.int64), probs[:, c], (yhat == c).astype(np.int64))
                     for c in classes]
        for name, (fn, combine) in statistics.items():
            values = np.stack([np.asarray(fn(stats), dtype=np.float64) for stats in per_class])
            with np.errstate(invalid="ignore"):
                collected[name].append(np.nanmean(values, 0) if combine == "macro" else values.sum(0))
    return {name: percentile_interval(np.concatenate(values), level) for name, values in collected.items()}
