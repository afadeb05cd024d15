"""Subgroups compared, not just listed: for each value of a column (site, sex, scanner), the
difference between its cases and the rest in sensitivity, specificity and ROC AUC, with an
interval and a two-sided test, flagged when the interval excludes zero, and Holm-adjusted p-values
over every comparison made (several subgroups and figures invite a false alarm).

Independent cases: Newcombe's hybrid score interval for the difference of two proportions
(method 10, Newcombe 1998) with Fisher's exact test, and DeLong variances for the two independent
AUCs. Several images per patient: the same intervals from clustered Wilson bounds (Zou & Donner
2004) with a design-effect z-test, and Obuchowski's clustered AUC variances. A difference is
flagged when its Holm-adjusted p-value is below 0.05 (family-wise over every comparison made).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import fisher_exact, norm
from scipy.stats import t as student_t

from medcls.stats.clustered import ClusteredAUC, clustered_variance, difference_of_proportions, wilson_bounds
from medcls.stats.intervals import wilson
from medcls.stats.metrics import decisions

FIGURES = ("sensitivity", "specificity", "roc_auc")
MIN_PER_CLASS = 5  # fewer cases (or patients) of a class in a subgroup or in the rest: not compared (as an AUC interval)


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
        return auc_difference(labels, p1, member, None, level)
    cls = 1 if name == "sensitivity" else 0
    hit = y_pred == cls
    k1, n1 = int((hit & inside & (labels == cls)).sum()), int((inside & (labels == cls)).sum())
    k2, n2 = int((hit & outside & (labels == cls)).sum()), int((outside & (labels == cls)).sum())
    low, high = newcombe(k1, n1, k2, n2, level)
    p = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])[1]
    return {"value_in": k1 / n1, "value_out": k2 / n2, "difference": k1 / n1 - k2 / n2, "low": low, "high": high,
            "p_value": float(p), "method": "Newcombe hybrid score, Fisher exact"}


def clustered_differences(labels, p1, y_pred, member, groups, level) -> dict:
    """Differences of every figure when patients give several images: proportions by Newcombe's
    interval from clustered Wilson bounds and a design-effect z-test, ROC AUC by Obuchowski's
    clustered variance on each side (medcls.stats.clustered)."""
    out = {}
    for name, cls in (("sensitivity", 1), ("specificity", 0)):
        found = difference_of_proportions(y_pred == cls, member & (labels == cls), ~member & (labels == cls),
                                          groups, level)
        out[name] = {**found, "method": "Newcombe from clustered Wilson bounds, design-effect z-test (patients)"}
    out["roc_auc"] = auc_difference(labels, p1, member, groups, level)
    return out


def auc_difference(labels, p1, member, groups, level) -> dict:
    """AUC inside minus outside, two independent groups: DeLong's (Obuchowski's, over patients)
    variance on each side, Student's t on the fewest units of a class less one, as the AUC interval
    does; a side whose AUC is 0 or 1 (variance 0) counts with the variance its Wilson bound implies,
    so a small perfectly separated subgroup is not taken for a certain one."""
    sides = []
    for side in (member, ~member):
        found = ClusteredAUC.of(labels[side], p1[side], None if groups is None else groups[side])
        variance = clustered_variance(*found.centred(), found.m, found.n)
        if found.auc in (0.0, 1.0) or variance <= 0:
            trials = min(found.units)
            low, high = wilson_bounds(found.auc, trials, norm.ppf(0.5 + level / 2))
            variance = (max(found.auc - low, high - found.auc) / norm.ppf(0.5 + level / 2)) ** 2
        sides.append((found.auc, variance, min(found.units)))
    (a_in, v_in, n_in), (a_out, v_out, n_out) = sides
    d, se = a_in - a_out, math.sqrt(v_in + v_out)
    quantile = student_t.ppf(0.5 + level / 2, min(n_in, n_out) - 1)
    clustered = groups is not None
    return {"value_in": a_in, "value_out": a_out, "difference": d, "low": d - quantile * se, "high": d + quantile * se,
            "p_value": 1.0 if d == 0 else float(2 * student_t.sf(abs(d) / se, min(n_in, n_out) - 1)),
            "method": "Obuchowski clustered DeLong (independent groups of patients)" if clustered
            else "DeLong (independent groups)"}


def compare_subgroups(probs: np.ndarray, labels: np.ndarray, threshold: float | None, column: np.ndarray, *,
                      patients=None, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict:
    """{value: {figure: {value_in, value_out, difference, low, high, p_value, p_holm, flagged, method}}}
    for each value of `column` against the rest (binary tasks); values too small to compare say why."""
    if probs.shape[1] != 2 or threshold is None:
        return {}
    p1 = probs[:, 1]
    y_pred = decisions(probs, threshold)
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
            figures = clustered_differences(labels, p1, y_pred, member, patients, level)
        else:
            figures = {name: independent_difference(name, labels, p1, y_pred, member, level) for name in FIGURES}
        result[value] = figures
        tests += [(value, name) for name in FIGURES]
    adjusted = holm([result[v][n]["p_value"] for v, n in tests])
    for (value, name), p in zip(tests, adjusted):
        row = result[value][name]
        row["p_holm"] = p
        # Flagged only when the difference survives Holm's adjustment: the unadjusted interval alone
        # would mark one in several null data sets when four sites and three figures are compared.
        row["flagged"] = bool(p < 1 - level)
    return result
