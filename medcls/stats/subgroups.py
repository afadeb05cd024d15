"""Subgroups compared, not just listed: for each value of a column (site, sex, scanner), the
difference between its cases and the rest in sensitivity, specificity and ROC AUC, with an
interval and a two-sided test, flagged when the interval excludes zero, and Holm-adjusted p-values
over every comparison made (several subgroups and figures invite a false alarm).

Independent cases: Newcombe's hybrid score interval for the difference of two proportions
(method 10, Newcombe 1998) with Fisher's exact test, and DeLong variances for the two independent
AUCs. Several images per patient: a bootstrap over patients, drawn separately inside and outside
the subgroup and within each class, with the percentile interval and the bootstrap p-value.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import fisher_exact, norm

from medcls.stats.bootstrap import ScoredCases, resample_weights
from medcls.stats.intervals import delong_auc_variance, wilson

FIGURES = ("sensitivity", "specificity", "roc_auc")
MIN_PER_CLASS = 2  # fewer cases (or patients) of a class in a subgroup or in the rest: not compared


def newcombe(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for p1 - p2 of two independent proportions from their Wilson intervals."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, level)
    l2, u2 = wilson(k2, n2, level)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error) of a list of p-values; NaN stays NaN."""
    finite = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (len(finite) - rank) * p))
        adjusted[i] = running
    return adjusted


def independent_difference(name, labels, p1, y_pred, member, level) -> dict:
    inside, outside = member, ~member
    if name == "roc_auc":
        a_in, v_in = delong_auc_variance(labels[inside], p1[inside])
        a_out, v_out = delong_auc_variance(labels[outside], p1[outside])
        d, se = a_in - a_out, math.sqrt(v_in + v_out)
        if se == 0:
            return {"value_in": a_in, "value_out": a_out, "difference": d, "low": d, "high": d,
                    "p_value": 1.0 if d == 0 else 0.0, "method": "DeLong (independent groups)"}
        z = norm.ppf(0.5 + level / 2)
        return {"value_in": a_in, "value_out": a_out, "difference": d, "low": d - z * se, "high": d + z * se,
                "p_value": float(2 * norm.sf(abs(d) / se)), "method": "DeLong (independent groups)"}
    cls = 1 if name == "sensitivity" else 0
    hit = y_pred == cls
    k1, n1 = int((hit & inside & (labels == cls)).sum()), int((inside & (labels == cls)).sum())
    k2, n2 = int((hit & outside & (labels == cls)).sum()), int((outside & (labels == cls)).sum())
    low, high = newcombe(k1, n1, k2, n2, level)
    p = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1]
    return {"value_in": k1 / n1, "value_out": k2 / n2, "difference": k1 / n1 - k2 / n2, "low": low, "high": high,
            "p_value": float(p), "method": "Newcombe hybrid score, Fisher exact"}


def clustered_differences(labels, p1, y_pred, member, groups, level, n_resamples, seed) -> dict:
    """Differences of every figure under one patient bootstrap, drawn within (subgroup x class)."""
    strata = labels + 2 * member.astype(np.int64)  # resampling stratified by class and membership
    samples = {name: [] for name in FIGURES}
    cases = ScoredCases.of(labels, p1, y_pred)
    for W in resample_weights(strata, groups, n_resamples, seed):
        inside, outside = cases.weigh(W * member), cases.weigh(W * ~member)
        for name in FIGURES:
            samples[name].append(getattr(inside, name)() - getattr(outside, name)())
    ones = np.ones((1, len(labels)), np.float32)
    point_in, point_out = cases.weigh(ones * member), cases.weigh(ones * ~member)
    out = {}
    for name in FIGURES:
        values = np.concatenate(samples[name])
        values = values[np.isfinite(values)]
        a, b = float(getattr(point_in, name)()[0]), float(getattr(point_out, name)()[0])
        low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
        p = min(1.0, 2 * min((values <= 0).mean(), (values >= 0).mean()))
        out[name] = {"value_in": a, "value_out": b, "difference": a - b, "low": float(low), "high": float(high),
                     "p_value": float(max(p, 1 / len(values))), "method": "cluster bootstrap (patients)"}
    return out


def compare_subgroups(probs: np.ndarray, labels: np.ndarray, threshold: float | None, column: np.ndarray, *,
                      patients=None, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict:
    """{value: {figure: {value_in, value_out, difference, low, high, p_value, p_holm, flagged, method}}}
    for each value of `column` against the rest (binary tasks); values too small to compare say why."""
    if probs.shape[1] != 2 or threshold is None:
        return {}
    p1 = probs[:, 1]
    y_pred = (p1 >= threshold).astype(np.int64)
    clustered = patients is not None and len(np.unique(patients)) < len(patients)
    column = np.asarray(column).astype(str)
    result, tests = {}, []
    units = (lambda mask: len(np.unique(patients[mask]))) if clustered else (lambda mask: int(mask.sum()))  # noqa: E731
    for value in sorted(set(column)):
        member = column == value
        counts = [units(side & (labels == c)) for side in (member, ~member) for c in (0, 1)]
        if min(counts) < MIN_PER_CLASS:
            result[value] = {"not_compared": f"fewer than {MIN_PER_CLASS} {'patients' if clustered else 'cases'} of a "
                                             "class inside or outside the subgroup"}
            continue
        if clustered:
            figures = clustered_differences(labels, p1, y_pred, member, patients, level, n_resamples, seed)
        else:
            figures = {name: independent_difference(name, labels, p1, y_pred, member, level) for name in FIGURES}
        result[value] = figures
        tests += [(value, name) for name in FIGURES]
    adjusted = holm([result[v][n]["p_value"] for v, n in tests])
    for (value, name), p in zip(tests, adjusted):
        row = result[value][name]
        row["p_holm"] = p
        row["flagged"] = bool(row["low"] > 0 or row["high"] < 0)
    return result
