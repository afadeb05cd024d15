"""Stratified bootstrap, resampling images or whole patients, vectorised over resamples.

A resample is a row of case weights (how often each case was drawn), so every built-in metric,
binary or multi-class, is a few matrix products over a (resamples x cases) weight matrix instead of
2,000 calls into scikit-learn. Metrics without a vectorised form fall back to a loop over resamples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from scipy.special import expit

from medcls.stats.metrics import ECE_BINS, logit

DEFAULT_RESAMPLES = 2000
CHUNK = 250  # resamples per weight matrix: 250 x 10,000 float32 is 10 MB


def unit_indices(n: int, groups: np.ndarray | None) -> np.ndarray:
    """The resampling unit of each case: itself, or its patient."""
    if groups is None:
        return np.arange(n)
    _, units = np.unique(groups, return_inverse=True)
    return units


def resample_weights(labels: np.ndarray, groups: np.ndarray | None, n_resamples: int, seed: int,
                     stratified: bool = True):
    """Yield (b, n) float32 weight matrices, drawing whole patients when `groups` is given.
    Stratified by class (a patient's class is its highest label), the class sizes stay fixed: right
    for figures conditional on the class (sensitivity, specificity, ROC AUC). Unstratified, the
    prevalence varies as it does between samples: needed for PPV, NPV, accuracy, F1, MCC, PR AUC,
    Brier, ECE and calibration, which depend on it."""
    rng = np.random.default_rng(seed)
    units = unit_indices(len(labels), groups)
    n_units = units.max() + 1
    unit_label = np.zeros(n_units, dtype=np.int64)
    np.maximum.at(unit_label, units, labels)
    strata = [np.flatnonzero(unit_label == c) for c in np.unique(unit_label)] if stratified else \
        [np.arange(n_units)]
    done = 0
    while done < n_resamples:
        b = min(CHUNK, n_resamples - done)
        unit_counts = np.zeros((b, n_units), dtype=np.float32)
        for members in strata:
            k = len(members)
            # int32 draws are the same numbers as int64 ones (NumPy draws both 32 bits at a time), in
            # half the memory; the offsets make one bincount count every resample's draws at once
            kind = np.int32 if b * k < 2 ** 31 else np.int64
            draws = rng.integers(0, k, size=(b, k), dtype=kind)
            draws += (np.arange(b, dtype=kind) * k)[:, None]
            unit_counts[:, members] = np.bincount(draws.ravel(), minlength=b * k).reshape(b, k)
        yield unit_counts if groups is None else unit_counts[:, units]
        done += b


@dataclass
class ScoredCases:
    """What the weighted figures of a binary task need from its cases, computed once and applied to
    every block of resample weights (`weigh`): a sparse map from each case's weight to the positive
    or negative weight of its score level (distinct scores, highest first), and each case's 2x2
    cell, Brier term and calibration bin. With `case_of` (an index per entry into `n_cases` cases),
    the entries are findings of cases that weights resample whole (multi-label figures): a case's
    weight counts once for each of its entries, and no (b, entries) matrix is ever gathered."""

    y: np.ndarray
    p1: np.ndarray
    to_level: sparse.csc_matrix  # (cases, 2 x levels): positives' levels first, then negatives'
    per_case: np.ndarray  # (cases, 6 + ECE_BINS): tp, fp, tn, fn, Brier term, entries, bins
    n_levels: int
    mapped: bool = False  # entries mapped onto cases (`case_of`): the weights are the cases', not the entries'

    @classmethod
    def of(cls, y: np.ndarray, p1: np.ndarray, yhat: np.ndarray, case_of: np.ndarray | None = None,
           n_cases: int | None = None) -> "ScoredCases":
        pos, flagged = (y == 1), (yhat == 1)
        n = len(y)
        case = np.arange(n) if case_of is None else case_of
        n_cases = n if case_of is None else n_cases
        order = np.argsort(-p1, kind="stable")
        sorted_scores = p1[order]
        level = np.empty(n, dtype=np.int64)  # each entry's distinct score, 0 = the highest
        level[order] = np.cumsum(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]) - 1
        n_levels = int(level.max()) + 1 if n else 0
        # One sparse product then gives every resample's weight per level, many times faster on
        # large sets than gathering W's columns in score order and summing runs of ties (and exact:
        # the weights are counts). CSC: dense @ CSC is 3x dense @ CSR in SciPy.
        to_level = sparse.csc_matrix((np.ones(n, dtype=np.float32), (case, np.where(pos, level, n_levels + level))),
                                     shape=(n_cases, 2 * n_levels))
        bins = np.minimum((p1 * ECE_BINS).astype(int), ECE_BINS - 1)
        per_entry = np.zeros((n, 6 + ECE_BINS), dtype=np.float32)
        per_entry[:, 0], per_entry[:, 1] = pos & flagged, ~pos & flagged
        per_entry[:, 2], per_entry[:, 3] = ~pos & ~flagged, pos & ~flagged
        per_entry[:, 4], per_entry[:, 5] = (p1 - pos) ** 2, 1
        per_entry[np.arange(n), 6 + bins] = pos - p1
        per_case = per_entry if case_of is None else np.asarray(
            sparse.csr_matrix((np.ones(n, dtype=np.float32), (case, np.arange(n))), shape=(n_cases, n)) @ per_entry)
        return cls(y, p1, to_level, per_case, n_levels, mapped=case_of is not None)

    def weigh(self, W: np.ndarray) -> "WeightedBinary":
        levels = np.asarray(W @ self.to_level)
        sums = W @ self.per_case  # the 2x2 cells, Brier terms, entry counts and calibration bins at once
        return WeightedBinary(tp=sums[:, 0], fp=sums[:, 1], tn=sums[:, 2], fn=sums[:, 3],
                              pos_level=levels[:, :self.n_levels], neg_level=levels[:, self.n_levels:],
                              total=sums[:, 5], brier_sum=sums[:, 4], ece_sum=np.abs(sums[:, 6:]).sum(1),
                              W=None if self.mapped else W, y=self.y, p1=self.p1)


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
    W: np.ndarray | None = None  # the weights, for statistics that need the cases (calibration slope);
    # None where the weights are cases' and the figures entries' (ScoredCases.mapped)
    y: np.ndarray | None = None
    p1: np.ndarray | None = None

    @classmethod
    def build(cls, W: np.ndarray, y: np.ndarray, p1: np.ndarray, yhat: np.ndarray) -> "WeightedBinary":
        """The figures of one block of weights (for many blocks, `ScoredCases.of` once, then `weigh`)."""
        return ScoredCases.of(y, p1, yhat).weigh(W)

    @cached_property
    def positives_above(self) -> np.ndarray:
        """Positive weight at or above each distinct score (computed once: the ROC and the
        fixed-point figures all read it)."""
        return np.cumsum(self.pos_level, 1)

    @cached_property
    def negatives_above(self) -> np.ndarray:
        return np.cumsum(self.neg_level, 1)

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

    def calibration_slope(self):
        """The logistic recalibration slope (Van Calster et al. 2019) of every resample at once:
        Newton steps on the weighted log-likelihood of y ~ a + b logit(p), a 2x2 system each."""
        z, y = logit(self.p1.astype(np.float64)), self.y.astype(np.float64)
        W = self.W.astype(np.float64)
        # Every resample starts from the fit to the mean weights, close to its own, so fewer steps
        # converge than from 0 (1.4x faster on 78,000 cases: benchmarks/bootstrap_speed.py).
        # Newton's method can overshoot from a start where the curvature is small (a small resample
        # far from the mean); a resample still moving after the last step starts again from 0, the
        # standard start, as all did before.
        start, _ = newton_logistic(W.mean(0, keepdims=True), z, y, np.zeros((1, 2)))
        beta, moving = newton_logistic(W, z, y, np.repeat(np.nan_to_num(start), len(W), axis=0))
        if moving.any():
            beta[moving], still = newton_logistic(W[moving], z, y, np.zeros((int(moving.sum()), 2)))
            moving[moving] = still
        # Perfect separation in a resample, or Newton still moving from the standard start too: no
        # slope (an unconverged iterate is no estimate; the interval counts it as undefined).
        separated = (W @ (y == 1)) * (W @ (y == 0)) == 0
        return np.where(separated | moving | (np.abs(beta[:, 1]) > 50), np.nan, beta[:, 1])

    @cached_property
    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """TPR and FPR at each distinct threshold, highest first."""
        true_pos, false_pos = self.positives_above, self.negatives_above
        return self.divide(true_pos, true_pos[:, -1:]), self.divide(false_pos, false_pos[:, -1:])

    def roc_auc(self):
        """Mann-Whitney: the share of (positive, negative) pairs the positive outranks, ties counting
        half: all pairs, less those whose negative scores at or above the positive, plus half the
        tied ones. Row sums in float64 (exact for counts), without a (b, L) temporary."""
        positives = self.pos_level.sum(1, dtype=np.float64)
        pairs = positives * self.neg_level.sum(1, dtype=np.float64)
        outranked = np.einsum("ij,ij->i", self.pos_level, self.negatives_above, dtype=np.float64)
        tied = np.einsum("ij,ij->i", self.pos_level, self.neg_level, dtype=np.float64)
        return self.divide(pairs - outranked + 0.5 * tied, pairs)

    def pr_auc(self):
        """Average precision: the precision at each positive's score, weighted by the positives there
        (where nothing is flagged there are no true positives either, so no 0/0 enters the sum)."""
        true_pos, false_pos = self.positives_above, self.negatives_above
        precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float32).tiny)
        return self.divide((self.pos_level * precision).sum(1), self.pos_level.sum(1))

    def sensitivity_at_specificity(self, target: float):
        return self.sensitivity_where_fpr_at_most([1 - target + 1e-12])[:, 0]

    def specificity_at_sensitivity(self, target: float):
        """1 - the lowest FPR among thresholds whose sensitivity reaches `target` (0 where none does)."""
        tpr, fpr = self.roc
        first = count_per_row(tpr, [target - 1e-12], side="left")  # the first point reaching the target
        reached = first < tpr.shape[1]
        return 1 - np.where(reached, np.take_along_axis(fpr, np.minimum(first, tpr.shape[1] - 1), 1), 1.0)[:, 0]

    def sensitivity_where_fpr_at_most(self, limits) -> np.ndarray:
        """(b, len(limits)): the highest sensitivity among thresholds whose false-positive rate is at
        most each limit (0 where none is): the ROC curve read at fixed specificities."""
        tpr, fpr = self.roc
        within = count_per_row(fpr, limits, side="right")
        return np.where(within > 0, np.take_along_axis(tpr, np.maximum(within - 1, 0), 1), 0.0)


def newton_logistic(W: np.ndarray, z: np.ndarray, y: np.ndarray, beta: np.ndarray, steps: int = 25):
    """(b, 2) intercept and slope of y ~ a + b z under each row of case weights `W`, by Newton steps
    from `beta` (clipped to 5 per step; a singular system, as under separation, steps 0), and which
    rows had not converged (a last step of 1e-8 or more) when the steps ran out."""
    beta = beta.copy()
    step = np.full_like(beta, np.inf)
    design = np.stack([np.ones_like(z), z, z * z], 1)  # sums of v, v z, v z^2 in one product
    p, v = np.empty_like(W), np.empty_like(W)
    for _ in range(steps):
        np.multiply(beta[:, 1:], z[None], out=p)
        p += beta[:, :1]
        expit(p, out=p)
        np.subtract(1.0, p, out=v)
        v *= p
        v *= W  # the weighted variances p (1 - p)
        np.subtract(y[None], p, out=p)
        p *= W  # the weighted residuals y - p
        g = p @ design[:, :2]
        h00, h01, h11 = (v @ design).T
        h00, h11 = h00 + 1e-9, h11 + 1e-9
        det = h00 * h11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.stack([(h11 * g[:, 0] - h01 * g[:, 1]) / det, (h00 * g[:, 1] - h01 * g[:, 0]) / det], 1)
        step = np.nan_to_num(np.clip(step, -5, 5))
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return beta, np.abs(step).max(1) >= 1e-8


def count_per_row(rates: np.ndarray, limits, side: str) -> np.ndarray:
    """(b, len(limits)): how many entries of each row of `rates` lie below (side="left") or at most
    (side="right") each limit. A row of ROC rates never decreases, so a binary search per row answers
    this instead of a pass over the whole (b, L) matrix per limit. Limits are compared in the rates'
    float32, so a rate of exactly 0.05 is at most a limit of 0.05. A row with undefined rates (a
    resample without positives or negatives) never meets a limit, as NaN compares: none of its
    entries is at most the limit, and all of them count as below it."""
    limits = np.asarray(limits, dtype=rates.dtype)
    b, width = rates.shape
    counts = np.zeros((b, len(limits)), dtype=np.int64)
    if not width:
        return counts
    undefined = np.isnan(rates[:, -1])
    for r in np.flatnonzero(~undefined):
        counts[r] = np.searchsorted(rates[r], limits, side=side)
    counts[undefined] = 0 if side == "right" else width
    return counts


def mean_where_defined(values, axis: int) -> np.ndarray:
    """The mean over `axis` of the defined (non-NaN) values; NaN, without a warning, where none is
    (a resample in which a figure is undefined for every class or finding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis)


@dataclass
class WeightedMulticlass:
    """Per-resample figures of a K-class task under weights `W`: each class's one-vs-rest
    `WeightedBinary`, and the K x K table (true class x decision) for the figures of the whole
    table (accuracy, balanced accuracy, MCC) and the top-class calibration error."""

    classes: list  # WeightedBinary of class k against the rest, k = 0..K-1
    table: np.ndarray  # (b, K, K) weighted counts, true class x decided class
    total: np.ndarray
    ece_sum: np.ndarray

    @classmethod
    def build(cls, W: np.ndarray, y: np.ndarray, probs: np.ndarray, yhat: np.ndarray) -> "WeightedMulticlass":
        return MulticlassCases.of(y, probs, yhat).weigh(W)

    def one_vs_rest(self, fn, combine: str):
        """A binary figure of each class against the rest, macro-averaged (over the classes where
        it is defined) or summed."""
        values = np.stack([np.asarray(fn(stats), dtype=np.float64) for stats in self.classes])
        return mean_where_defined(values, 0) if combine == "macro" else values.sum(0)

    def accuracy(self):
        return WeightedBinary.divide(np.trace(self.table, axis1=1, axis2=2), self.total)

    def balanced_accuracy(self):
        recall = WeightedBinary.divide(np.diagonal(self.table, axis1=1, axis2=2), self.table.sum(2))
        return mean_where_defined(recall, 1)

    def mcc(self):
        """Gorodkin's K-class MCC (as scikit-learn computes it: 0 where it is 0/0), NaN where the
        resample's truth and decisions each hold a single class (metrics.mcc)."""
        table = self.table.astype(np.float64)
        true, decided = table.sum(2), table.sum(1)
        n, correct = true.sum(1), np.trace(table, axis1=1, axis2=2)
        covariance = correct * n - (true * decided).sum(1)
        spread = (n ** 2 - (decided ** 2).sum(1)) * (n ** 2 - (true ** 2).sum(1))
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(spread > 0, covariance / np.sqrt(np.where(spread > 0, spread, 1)), 0.0)
        single = ((true > 0).sum(1) < 2) & ((decided > 0).sum(1) < 2)
        return np.where(single, np.nan, value)

    def ece(self):
        return WeightedBinary.divide(self.ece_sum, self.total)


@dataclass
class MulticlassCases:
    """`ScoredCases` of each class against the rest, and each case's cell of the K x K table and
    top-class calibration bin, computed once for every block of resample weights."""

    classes: list
    cells: np.ndarray  # (cases, K x K), true class x decided class
    calibration: np.ndarray  # (cases, ECE_BINS)
    k: int

    @classmethod
    def of(cls, y: np.ndarray, probs: np.ndarray, yhat: np.ndarray) -> "MulticlassCases":
        k = probs.shape[1]
        cells = np.zeros((len(y), k * k), dtype=np.float32)
        cells[np.arange(len(y)), y * k + yhat] = 1
        confidence = probs.max(1)  # top-class calibration, as metrics.ece (Guo et al. 2017)
        bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
        calibration = np.zeros((len(y), ECE_BINS), dtype=np.float32)
        calibration[np.arange(len(y)), bins] = (probs.argmax(1) == y) - confidence
        return cls([ScoredCases.of((y == c).astype(np.int64), probs[:, c], (yhat == c).astype(np.int64))
                    for c in range(k)], cells, calibration, k)

    def weigh(self, W: np.ndarray) -> WeightedMulticlass:
        return WeightedMulticlass([cases.weigh(W) for cases in self.classes],
                                  (W @ self.cells).reshape(len(W), self.k, self.k), W.sum(1),
                                  np.abs(W @ self.calibration).sum(1))


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return float("nan"), float("nan")
    low, high = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def basic_interval(samples: np.ndarray, estimate: float, level: float) -> tuple[float, float]:
    """The basic (reverse-percentile) bootstrap interval [2e - q_high, 2e - q_low]: it corrects for a
    statistic the bootstrap moves away from the truth in the same direction as the estimate (the
    plug-in ECE, biased upwards), which percentile intervals do not."""
    low, high = percentile_interval(samples, level)
    return 2 * estimate - high, 2 * estimate - low


def bca_interval(samples: np.ndarray, estimate: float, jackknife: np.ndarray, level: float) -> tuple[float, float]:
    """Efron's bias-corrected and accelerated interval: percentiles shifted by the bootstrap's
    median bias (z0) and scaled by the jackknife's skewness (acceleration)."""
    from scipy.stats import norm

    samples, jackknife = samples[np.isfinite(samples)], jackknife[np.isfinite(jackknife)]
    if len(samples) < 10 or len(jackknife) < 3:
        return percentile_interval(samples, level)
    below = (np.sum(samples < estimate) + 0.5 * np.sum(samples == estimate)) / len(samples)
    z0 = norm.ppf(np.clip(below, 1 / len(samples), 1 - 1 / len(samples)))
    d = jackknife.mean() - jackknife
    denominator = 6 * (d @ d) ** 1.5
    a = float((d ** 3).sum() / denominator) if denominator > 0 else 0.0
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    adjusted = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    low, high = np.percentile(samples, 100 * np.clip(adjusted, 0, 1))
    return float(low), float(high)


JACKKNIFE_GROUPS = 200


def jackknife_weights(n: int, groups: np.ndarray | None) -> np.ndarray:
    """Weights leaving out one unit (image or patient) per row; with more units than
    JACKKNIFE_GROUPS, a grouped (delete-d) jackknife over that many random groups of units, which
    estimates BCa's acceleration as well at a fraction of the cost."""
    units = unit_indices(n, groups)
    count = units.max() + 1
    if count > JACKKNIFE_GROUPS:
        units = (np.random.default_rng(0).permutation(count) % JACKKNIFE_GROUPS)[units]
        count = JACKKNIFE_GROUPS
    return (units[None, :] != np.arange(count)[:, None]).astype(np.float32)


def bootstrap_binary(y, p1, yhat, statistics: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                     level=0.95, seed=0, stratified: bool = True, basic: tuple = (),
                     bca: tuple = ()) -> dict[str, tuple[float, float]]:
    """Percentile intervals of `statistics` (name -> fn(WeightedBinary) -> (b,) array); for the
    names in `basic`, basic bootstrap intervals (never below 0); for those in `bca`, BCa ones."""
    return bootstrap_statistics(ScoredCases.of(y, p1, yhat).weigh, y, statistics, groups=groups,
                                n_resamples=n_resamples, level=level, seed=seed, stratified=stratified, basic=basic,
                                bca=bca)


def bootstrap_multiclass(y, probs, yhat, statistics: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                         level=0.95, seed=0, stratified: bool = True, basic: tuple = (),
                         bca: tuple = ()) -> dict[str, tuple[float, float]]:
    """The same for a K-class task: `statistics` maps a name to fn(WeightedMulticlass) -> (b,)
    (a one-vs-rest combination, `WeightedMulticlass.one_vs_rest`, or a figure of the K x K table)."""
    return bootstrap_statistics(MulticlassCases.of(y, probs, yhat).weigh, y, statistics, groups=groups,
                                n_resamples=n_resamples, level=level, seed=seed, stratified=stratified, basic=basic,
                                bca=bca)


def bootstrap_statistics(build, labels, statistics: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                         level=0.95, seed=0, stratified: bool = True, basic: tuple = (),
                         bca: tuple = ()) -> dict[str, tuple[float, float]]:
    """Intervals of every statistic computed on `build(W)` for blocks of resample weights W (the
    point estimate from unit weights, BCa's acceleration from jackknife weights)."""
    collected = {name: [] for name in statistics}
    for W in resample_weights(labels, groups, n_resamples, seed, stratified):
        stats = build(W)
        for name, fn in statistics.items():
            collected[name].append(np.asarray(fn(stats), dtype=np.float64))
    out = {}
    point = build(np.ones((1, len(labels)), np.float32)) if basic or bca else None
    jackknife = build(jackknife_weights(len(labels), groups)) if bca else None
    for name, values in collected.items():
        samples = np.concatenate(values)
        if name in bca:
            estimate = float(np.asarray(statistics[name](point))[0])
            out[name] = bca_interval(samples, estimate, np.asarray(statistics[name](jackknife), np.float64), level)
        elif name in basic:
            estimate = float(np.asarray(statistics[name](point))[0])
            low, high = basic_interval(samples, estimate, level)
            out[name] = (max(low, 0.0), high)  # ECE and Brier are never negative
        else:
            out[name] = percentile_interval(samples, level)
    return out


def bootstrap_figures(figures, n: int, *, groups=None, n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict[str, dict]:
    """Percentile intervals of every figure `figures(rows)` returns (a dict of floats) over
    unstratified resamples of whole patients (or cases): for summaries no single metric function
    computes (multi-label macro/micro figures, regression heads). A figure undefined in more than
    a tenth of the resamples gets no interval."""
    def per_resample(W):  # figures of each resample's repeated cases, one call each
        found = [figures(np.repeat(np.arange(n), row)) for row in W.astype(np.int64)]
        return {name: [values[name] for values in found] for name in found[0]}

    return bootstrap_weighted_figures(per_resample, n, groups=groups, n_resamples=n_resamples, seed=seed, level=level)


def bootstrap_weighted_figures(figures, n: int, *, groups=None, n_resamples: int = 1000, seed: int = 0,
                               level: float = 0.95) -> dict[str, dict]:
    """`bootstrap_figures` for summaries computed on a whole (b, n) matrix of case weights at once
    (`figures(W)` returns a dict of (b,) arrays): the same resamples and intervals, without a Python
    call per resample."""
    draws: dict[str, list] = {}
    if n < 2 or n_resamples < 1:
        return {}
    for W in resample_weights(np.zeros(n, dtype=np.int64), groups, n_resamples, seed, stratified=False):
        for name, values in figures(W).items():
            draws.setdefault(name, []).extend(np.asarray(values, dtype=np.float64).tolist())
    unit = "patients" if groups is not None else "cases"
    intervals = {}
    for name, values in draws.items():
        values = np.asarray(values, dtype=np.float64)
        if np.isfinite(values).sum() >= 0.9 * n_resamples:
            low, high = percentile_interval(values, level)
            intervals[name] = {"low": low, "high": high, "level": level,
                               "method": f"percentile bootstrap over {unit} ({n_resamples} resamples)"}
    return intervals


def bootstrap_loop(y, probs, yhat, functions: dict, *, groups=None, n_resamples=DEFAULT_RESAMPLES,
                   level=0.95, seed=0, stratified: bool = False) -> dict[str, tuple[float, float]]:
    """The same intervals for metrics without a vectorised form: one call per resample. Not
    stratified by default: a plugin's metric may depend on prevalence."""
    collected = {name: [] for name in functions}
    for W in resample_weights(y, groups, n_resamples, seed, stratified):
        for row in W.astype(np.int64):
            index = np.repeat(np.arange(len(y)), row)
            for name, fn in functions.items():
                try:
                    collected[name].append(float(fn(y[index], probs[index], yhat[index])))
                except Exception:  # a resample where the metric is undefined
                    collected[name].append(float("nan"))
    return {name: percentile_interval(np.asarray(values), level) for name, values in collected.items()}
