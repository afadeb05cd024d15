"""Calibration: reliability curve, calibration slope and intercept, temperature scaling, and the
correction of a class-balanced model's probabilities back to the training prior."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from medcls.stats.metrics import logit  # noqa: F401  (imported from here by callers)


def fit_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None, slope: bool = True):
    """Maximum-likelihood (intercept, slope) of y ~ intercept + slope * x (+ offset), by Newton."""
    offset = np.zeros_like(x) if offset is None else offset
    design = np.column_stack([np.ones_like(x), x]) if slope else np.ones((len(x), 1))
    beta = np.zeros(design.shape[1])
    for _ in range(50):
        p = expit(design @ beta + offset)
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-9 * np.eye(len(beta))
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def calibration_slope_intercept(y: np.ndarray, p1: np.ndarray, *, groups=None, n_resamples: int = 0,
                                level: float = 0.95, seed: int = 0) -> dict:
    """Slope (1 is ideal; < 1 means over-confident) and calibration-in-the-large intercept
    (0 is ideal), as recommended by Van Calster et al. (2019) for clinical prediction models.
    With `n_resamples`, the slope's interval from an unstratified (patient-level with `groups`)
    percentile bootstrap: calibration depends on prevalence, so the class sizes must vary."""
    if len(np.unique(y)) < 2:
        return {"slope": float("nan"), "intercept": float("nan"), "not_computable": "only one class"}
    positive, negative = p1[y == 1], p1[y != 1]
    if positive.min() >= negative.max() or positive.max() <= negative.min():
        # Complete or quasi-complete separation, either way round (a test split whose scores are
        # inverted, or constant): the logistic slope has no finite maximum-likelihood estimate.
        return {"slope": float("nan"), "intercept": float("nan"),
                "not_computable": "the scores separate the classes (or do not vary), so the slope is unbounded"}
    z = logit(p1)
    (_, slope) = fit_logistic(z, y.astype(np.float64))
    (intercept,) = fit_logistic(np.zeros_like(z), y.astype(np.float64), offset=z, slope=False)
    out = {"slope": float(slope), "intercept": float(intercept)}
    if n_resamples:
        from medcls.stats.clustered import too_few_for_bootstrap
        from medcls.stats.bootstrap import WeightedBinary, bootstrap_binary

        clustered = groups is not None and len(np.unique(groups)) < len(groups)
        too_few = too_few_for_bootstrap(y, groups)
        if too_few:
            out.update(slope_low=None, slope_high=None, level=level, method="bootstrap", refused=too_few)
            return out
        (low, high), = bootstrap_binary(y, p1, (p1 >= 0.5).astype(np.int64),
                                        {"slope": WeightedBinary.calibration_slope}, groups=groups if clustered else None,
                                        n_resamples=n_resamples, level=level, seed=seed, stratified=False,
                                        bca=("slope",)).values()
        out.update(slope_low=low, slope_high=high, level=level,
                   method="cluster bootstrap (patients, unstratified, BCa)" if clustered else
                   "bootstrap (unstratified, BCa)")
    return out


def reliability_curve(y: np.ndarray, p1: np.ndarray, bins: int = 10) -> dict:
    """Mean predicted probability and observed frequency per equal-width bin (empty bins dropped)."""
    index = np.minimum((p1 * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    keep = counts > 0
    predicted = np.bincount(index, weights=p1, minlength=bins)[keep] / counts[keep]
    observed = np.bincount(index, weights=(y == 1).astype(float), minlength=bins)[keep] / counts[keep]
    return {"predicted": predicted, "observed": observed, "count": counts[keep]}


MIN_CASES_PER_BIN = 10  # a calibration bin is never drawn from fewer cases


def calibration_bins(y: np.ndarray, p1: np.ndarray, bins: int = 10, min_cases: int = MIN_CASES_PER_BIN) -> dict:
    """Equal-width bins of P(positive), each merged with its neighbour until it holds at least
    `min_cases` cases (a split with fewer cases in all is one bin): per bin its edges, the mean
    predicted probability, the observed frequency with its Wilson 95 % interval, and the count."""
    from medcls.stats.intervals import wilson

    index = np.minimum((p1 * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    groups, current = [], []
    for b in range(bins):
        current.append(b)
        if counts[current].sum() >= min_cases:
            groups.append(current)
            current = []
    if current:  # a short last run joins the bin before it
        if groups:
            groups[-1] += current
        elif counts[current].sum():
            groups.append(current)
    rows = {"low": [], "high": [], "predicted": [], "observed": [], "observed_low": [], "observed_high": [], "count": []}
    for group in groups:
        members = np.isin(index, group)
        n, positives = int(members.sum()), int((y[members] == 1).sum())
        if not n:
            continue
        low, high = wilson(positives, n)
        for key, value in (("low", group[0] / bins), ("high", (group[-1] + 1) / bins),
                           ("predicted", float(p1[members].mean())), ("observed", positives / n),
                           ("observed_low", low), ("observed_high", high), ("count", n)):
            rows[key].append(value)
    return {key: np.array(values) for key, values in rows.items()}


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Soften (T > 1) or sharpen (T < 1) probabilities: softmax(log p / T)."""
    scaled = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    scaled -= scaled.max(1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(1, keepdims=True)


def balanced_offsets(weights: np.ndarray) -> np.ndarray:
    """The logit offsets that undo class-balanced training: log of each class's loss weight (or
    sampling weight, relative to its share), 0 for a class that had none. A model trained with
    weight w_c learns q(c|x) proportional to w_c p(c|x); subtracting log w_c from its logit gives back
    p(c|x) under the training prior (Saerens et al. 2002; Menon et al. 2021's post-hoc logit
    adjustment). For a sigmoid with `pos_weight` w the same holds: logit q = logit p + log w."""
    weights = np.asarray(weights, dtype=np.float64)
    return np.where(weights > 0, np.log(np.where(weights > 0, weights, 1.0)), 0.0)


def remove_offsets(probs: np.ndarray, offsets: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Probabilities with `offsets` subtracted from their logits: softmax over the classes of each
    row, or each finding's sigmoid on its own (`multi_label`). What the model outputs once
    `Classifier.shift_logits(offsets)` has moved the same offsets into its head."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    if multi_label:
        z = np.log(probs) - np.log(np.clip(1.0 - probs, 1e-12, 1.0)) - offsets[None, :]
        return 1.0 / (1.0 + np.exp(-z))
    z = np.log(probs) - offsets[None, :]
    z -= z.max(1, keepdims=True)
    exp = np.exp(z)
    return exp / exp.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation negative log-likelihood (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        p = apply_temperature(probs, float(np.exp(log_t)))
        return -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1)).mean()

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))
