"""Intervals and paired tests that stay honest when a patient gives several images: proportions by
Wilson on the design-effect sample size, ROC AUC and the paired AUC test by Obuchowski's clustered
structural components. With one image per patient each reduces to the independent method (Wilson,
DeLong); every function says when the data cannot support an interval instead of giving a narrow one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata, t as student_t

from medcls.errors import DataError

# The fewest independent units (patients, or images when each is its own patient) of each class below
# which medcls prints no interval for a figure, from the coverage study (benchmarks/interval_coverage.py,
# docs/intervals.md): below these, no method here reached 93 % in the simulation grid.
MIN_PATIENTS_PROPORTION = 5  # a design effect estimated from fewer patients is no estimate
MIN_UNITS_AUC = 5            # ROC AUC: fewer positive or negative units than this and DeLong under-covers
MIN_UNITS_BOOTSTRAP = 20     # bootstrap figures (F1, MCC, PR AUC, Brier, fixed points, calibration slope)
# A figure read at a fixed point of the ROC curve (specificity at 95 % sensitivity) rests on the
# (1 - 0.95) share of the positives beyond that point: fewer than this many units there, no interval.
MIN_TAIL_UNITS = 5


@dataclass(frozen=True)
class Interval:
    """Bounds with the method that gave them, or `low is None` with the reason there are none."""

    low: float | None
    high: float | None
    method: str
    refused: str | None = None

    def as_dict(self, level: float) -> dict:
        out = {"low": self.low, "high": self.high, "method": self.method, "level": level}
        if self.refused:
            out["refused"] = self.refused
        return out


def refusal(reason: str, method: str = "none") -> Interval:
    return Interval(None, None, method, reason)


def cluster_codes(groups, n: int) -> np.ndarray:
    """Integer patient codes 0..I-1; every image its own patient when `groups` is None."""
    if groups is None:
        return np.arange(n)
    return np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)


def is_clustered(groups) -> bool:
    return groups is not None and len(np.unique(groups)) < len(groups)


def class_units(labels: np.ndarray, groups) -> tuple[dict, str]:
    """Independent units of each class present: patients when they have several images, else
    images; and the unit's name."""
    clustered = is_clustered(groups)
    counts = {int(c): len(np.unique(groups[labels == c])) if clustered else int((labels == c).sum())
              for c in np.unique(labels)}
    return counts, "patients" if clustered else "images"


def too_few_for_bootstrap(labels: np.ndarray, groups) -> str | None:
    """The reason bootstrap intervals are refused on this split (fewer than MIN_UNITS_BOOTSTRAP
    patients, or images, of some class), else None."""
    counts, unit = class_units(labels, groups)
    if len(counts) < 2:
        return "only one class in this split"
    if min(counts.values()) >= MIN_UNITS_BOOTSTRAP:
        return None
    fewest = min(counts, key=counts.get)
    return f"{counts[fewest]} {unit} of class {fewest}, under the {MIN_UNITS_BOOTSTRAP} a bootstrap needs to cover"


def too_few_in_the_tail(labels: np.ndarray, groups, figure: str, target: float) -> str | None:
    """The reason a fixed-point figure (`sensitivity_at_specificity` at `target`, or the reverse) gets
    no interval: fewer than MIN_TAIL_UNITS units of the conditioning class beyond the point, else None."""
    cls = 0 if figure.startswith("sensitivity") else 1  # sensitivity at a specificity: the negatives
    counts, unit = class_units(labels, groups)
    units = counts.get(cls, 0)
    if (1 - target) * units + 1e-9 >= MIN_TAIL_UNITS:
        return None
    needed = math.ceil(MIN_TAIL_UNITS / (1 - target) - 1e-9)
    kind = "negative" if cls == 0 else "positive"
    return f"{units} {kind} {unit}; a point this far out needs {needed}"


def wilson_bounds(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval (Wilson 1927) for a proportion p observed on n (possibly effective) trials."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or 1 a bound equals p exactly; rounding must not put it on the wrong side.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def proportion_interval(hits: np.ndarray, members: np.ndarray, groups=None, level: float = 0.95,
                        unit: str = "patients") -> Interval:
    """Interval for the share of `members` that are `hits` (sensitivity: hits = decided positive,
    members = truly positive). Independent images: Wilson. Several images per patient: Wilson on the
    effective sample size M / deff, the design effect from the ratio-estimator variance over patients
    (Kish 1965), with Korn & Graubard's (1998) degrees-of-freedom correction (z / t_{I-1})^2 for few
    patients. At p = 0 or 1 the ratio variance is 0, so the effective size is taken as if every
    patient's images agreed (M^2 / sum m_i^2): the widest the clustering allows."""
    hits, members = np.asarray(hits, bool), np.asarray(members, bool)
    total = int(members.sum())
    z = norm.ppf(0.5 + level / 2)
    if not is_clustered(groups):
        if total == 0:
            return refusal("no cases to count")
        k = int((hits & members).sum())
        low, high = wilson_bounds(k / total, total, z)
        return Interval(low, high, "Wilson")
    if not members.any():
        return refusal("no cases to count")
    p, deff, total, clusters = design_effect(hits, members, groups)
    if clusters < MIN_PATIENTS_PROPORTION:
        return refusal(f"{clusters} {unit} in the denominator")
    effective = total / deff * (z / student_t.ppf(0.5 + level / 2, clusters - 1)) ** 2
    low, high = wilson_bounds(p, effective, z)
    return Interval(low, high, f"Wilson, clustered (design effect over {clusters} {unit}, Korn-Graubard df)")


def design_effect(hits: np.ndarray, members: np.ndarray, groups) -> tuple[float, float, int, int]:
    """(proportion, design effect, images, patients) of `hits` among `members`: the ratio-estimator
    variance over patients (Kish 1965) against the binomial one, at least 1; at p = 0 or 1, where
    the ratio variance is 0, sum m_i^2 / M, the design effect of patients whose images all agree
    (the widest the clustering allows)."""
    codes = cluster_codes(groups, len(members))[members]
    m = np.bincount(codes).astype(np.float64)
    x = np.bincount(codes, weights=hits[members].astype(np.float64))
    m, x = m[m > 0], x[m > 0]
    total, clusters = m.sum(), len(m)
    p = x.sum() / total
    if clusters > 1 and 0 < p < 1:
        variance = clusters / (clusters - 1) * float(((x - p * m) ** 2).sum()) / total ** 2
        return p, max(1.0, variance / (p * (1 - p) / total)), int(total), clusters
    return p, float((m ** 2).sum() / total), int(total), clusters


def difference_of_proportions(hits: np.ndarray, inside: np.ndarray, outside: np.ndarray, groups=None,
                              level: float = 0.95) -> dict:
    """p_in - p_out of two groups of patients: Newcombe's hybrid interval built from each side's
    (clustered) Wilson interval (the MOVER of Zou & Donner 2004, for clustered data), and a two-sided
    z-test on the pooled proportion with each side's design effect (Donner & Klar 2000)."""
    a, b = proportion_interval(hits, inside, groups, level), proportion_interval(hits, outside, groups, level)
    p1, d1, n1, _ = design_effect(hits, inside, groups)
    p2, d2, n2, _ = design_effect(hits, outside, groups)
    d = p1 - p2
    low = d - math.sqrt((p1 - a.low) ** 2 + (b.high - p2) ** 2)
    high = d + math.sqrt((a.high - p1) ** 2 + (p2 - b.low) ** 2)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (d1 / n1 + d2 / n2))
    p_value = 1.0 if d == 0 else (float(2 * norm.sf(abs(d) / se)) if se > 0 else 0.0)
    return {"value_in": p1, "value_out": p2, "difference": d, "low": low, "high": high, "p_value": p_value}


@dataclass(frozen=True)
class ClusteredAUC:
    """ROC AUC with Obuchowski's (1997) structural components, one entry per patient."""

    auc: float
    v10: np.ndarray   # per patient: sum over its positive images of P(score above a negative)
    v01: np.ndarray   # per patient: sum over its negative images of P(score below a positive)
    m: np.ndarray     # positive images per patient
    n: np.ndarray     # negative images per patient

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray, groups=None) -> "ClusteredAUC | None":
        labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
        positive = labels == 1
        M, N = int(positive.sum()), int((~positive).sum())
        if M == 0 or N == 0:
            return None
        # Midranks give, per image, how many of the other class it outranks (ties count half).
        ranks = rankdata(scores)
        pos_ranks, neg_ranks = rankdata(scores[positive]), rankdata(scores[~positive])
        per_image = np.zeros(len(scores))
        per_image[positive] = (ranks[positive] - pos_ranks) / N
        per_image[~positive] = 1.0 - (ranks[~positive] - neg_ranks) / M
        codes = cluster_codes(groups, len(labels))
        size = codes.max() + 1
        v10 = np.bincount(codes, weights=np.where(positive, per_image, 0.0), minlength=size)
        v01 = np.bincount(codes, weights=np.where(positive, 0.0, per_image), minlength=size)
        m = np.bincount(codes, weights=positive.astype(np.float64), minlength=size)
        n = np.bincount(codes, weights=(~positive).astype(np.float64), minlength=size)
        return cls(float(v10.sum() / M), v10, v01, m, n)

    def centred(self) -> tuple[np.ndarray, np.ndarray]:
        return self.v10 - self.m * self.auc, self.v01 - self.n * self.auc

    @property
    def units(self) -> tuple[int, int]:
        """Patients with a positive image, patients with a negative image."""
        return int((self.m > 0).sum()), int((self.n > 0).sum())


def clustered_variance(d10: np.ndarray, d01: np.ndarray, m: np.ndarray, n: np.ndarray) -> float:
    """Obuchowski's variance of an AUC (or of a difference of AUCs, given the differences of the
    centred components): S10 / M + S01 / N + 2 S11 / (M N)."""
    M, N = m.sum(), n.sum()
    i10, i01, i = int((m > 0).sum()), int((n > 0).sum()), len(m)
    s10 = i10 / ((i10 - 1) * M) * float((d10 ** 2).sum()) if i10 > 1 else 0.0
    s01 = i01 / ((i01 - 1) * N) * float((d01 ** 2).sum()) if i01 > 1 else 0.0
    s11 = i / (i - 1) * float((d10 * d01).sum()) if i > 1 else 0.0
    return s10 / M + s01 / N + 2 * s11 / (M * N)


def auc_variance(labels: np.ndarray, scores: np.ndarray, groups=None) -> tuple[float, float]:
    """ROC AUC and its variance (Obuchowski's, DeLong's for one image a patient); NaN without both classes."""
    found = ClusteredAUC.of(labels, scores, groups)
    if found is None:
        return float("nan"), float("nan")
    return found.auc, clustered_variance(*found.centred(), found.m, found.n)


def auc_interval(labels: np.ndarray, scores: np.ndarray, groups=None, level: float = 0.95) -> Interval:
    """ROC AUC interval on the logit scale (stays inside [0, 1]) with Obuchowski's clustered
    variance, DeLong's when every patient has one image. An AUC of 0 or 1 has variance 0: it is
    bounded by Wilson over the patients of the smaller class instead (conservative)."""
    found = ClusteredAUC.of(labels, scores, groups)
    if found is None:
        return refusal("only one class")
    clustered = is_clustered(groups)
    unit = "patients" if clustered else "images"
    positives, negatives = found.units
    if min(positives, negatives) < MIN_UNITS_AUC:
        return refusal(f"{positives} positive and {negatives} negative {unit}", "DeLong")
    name = f"Obuchowski clustered DeLong ({len(found.m)} patients)" if clustered else "DeLong"
    # Student's t on the smaller class's units less one: DeLong's variance is itself an estimate from
    # few units, and z under-covered at ten positives (docs/intervals.md); at large n it is z again.
    z = student_t.ppf(0.5 + level / 2, min(positives, negatives) - 1)
    variance = clustered_variance(*found.centred(), found.m, found.n)
    auc = found.auc
    if auc in (0.0, 1.0) or variance <= 0:
        trials = min(positives, negatives)
        low, high = wilson_bounds(round(auc * trials) / trials, trials, z)
        return Interval(low, high, f"Wilson over {trials} {unit} of the smaller class (the scores separate "
                                   "the classes, so DeLong's variance is 0)")
    logit, half = math.log(auc / (1 - auc)), z * math.sqrt(variance) / (auc * (1 - auc))
    return Interval(float(1 / (1 + math.exp(half - logit))), float(1 / (1 + math.exp(-logit - half))), name)


def paired_auc_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, groups=None,
                    level: float = 0.95) -> dict:
    """Difference of two ROC AUCs on the same cases with its interval and two-sided p-value: the
    paired DeLong test (DeLong et al. 1988), on patients' summed components when a patient gives
    several images (Obuchowski 1997), so tripling every image leaves the p-value as it was."""
    a, b = ClusteredAUC.of(labels, scores_a, groups), ClusteredAUC.of(labels, scores_b, groups)
    if a is None or b is None:
        raise DataError("the paired AUC test is not computable: the cases hold only one class")
    (a10, a01), (b10, b01) = a.centred(), b.centred()
    variance = clustered_variance(a10 - b10, a01 - b01, a.m, a.n)
    difference = a.auc - b.auc
    if variance <= 0:
        p_value = 1.0 if difference == 0 else 0.0
        z = math.copysign(math.inf, difference) if difference else 0.0
    else:
        z = difference / math.sqrt(variance)
        p_value = float(2 * norm.sf(abs(z)))
    half = norm.ppf(0.5 + level / 2) * math.sqrt(max(variance, 0.0))
    clustered = is_clustered(groups)
    return {"auc_a": a.auc, "auc_b": b.auc, "difference": difference, "low": difference - half,
            "high": difference + half, "z": z, "p_value": p_value,
            "method": f"paired DeLong, clustered by patient (Obuchowski 1997; {len(a.m)} patients)" if clustered
            else "paired DeLong"}
