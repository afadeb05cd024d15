"""Choosing the decision threshold on validation by a named rule, and what a threshold implies."""

from __future__ import annotations

import math

import numpy as np

from medcls.errors import ConfigError, DataError
from medcls.stats.metrics import youden_threshold

RULES = ("youden", "target_sensitivity", "target_specificity", "confident_sensitivity", "confident_specificity",
         "fixed")
CONFIDENCE = 0.95  # of the confident_* rules: P(the population figure reaches the target)


def choose_threshold(rule: str, y: np.ndarray, p1: np.ndarray, *, target: float = 0.95, fixed: float = 0.5,
                     where: str = "validation") -> float:
    """The binary threshold (positive when P >= threshold) chosen on `where` by `rule`.

    - youden: maximises sensitivity + specificity - 1;
    - target_sensitivity: the highest threshold whose sensitivity is at least `target`
      (the screening setting: as specific as possible without missing more than allowed);
    - target_specificity: the lowest threshold whose specificity is at least `target`;
    - confident_sensitivity / confident_specificity: the highest (lowest) threshold whose validation
      sensitivity (specificity) has a one-sided 95 % Clopper-Pearson lower bound of at least `target`,
      so the figure reaches `target` in the population with 95 % confidence. The target_* rules reach
      it only about half the time (they match the target on validation, and validation is a sample:
      benchmarks/interval_coverage.py --part operating); with too few validation cases of the class
      no threshold can show it, and the error says how many would;
    - fixed: `fixed`, whatever the data.
    """

    if rule not in RULES:
        raise ConfigError(f"threshold_rule {rule!r} is unknown: use one of {', '.join(RULES)}")
    if rule == "fixed":
        return float(fixed)
    if rule != "youden" and not 0 < target <= 1:
        raise ConfigError(f"target {target} for {rule} is unreachable: give a value in (0, 1]")
    positives, negatives = np.sort(p1[y == 1])[::-1], np.sort(p1[y != 1])
    if rule == "youden":
        if not len(positives) or not len(negatives):
            raise DataError(f"Youden's threshold is not computable: the {where} split has only one class")
        return youden_threshold(y, p1)
    if rule.startswith("confident_"):
        return confident_threshold(rule.split("_")[1], positives, negatives, target, where)
    if rule == "target_sensitivity":
        if not len(positives):
            raise DataError(f"a target sensitivity is not computable: the {where} split has no positive cases")
        return float(positives[math.ceil(target * len(positives) - 1e-9) - 1])
    if not len(negatives):
        raise DataError(f"a target specificity is not computable: the {where} split has no negative cases")
    return float(np.nextafter(negatives[math.ceil(target * len(negatives) - 1e-9) - 1], np.inf))


def confident_threshold(figure: str, positives: np.ndarray, negatives: np.ndarray, target: float,
                        where: str) -> float:
    """The threshold of the confident_* rules: the fewest cases of the class that must be kept on
    their side so that the Clopper-Pearson lower bound of the kept share reaches `target`."""
    from scipy.stats import beta

    cases = positives if figure == "sensitivity" else negatives  # positives high first, negatives low first
    n = len(cases)
    if not n:
        raise DataError(f"a confident {figure} is not computable: the {where} split has no "
                        f"{'positive' if figure == 'sensitivity' else 'negative'} cases")
    kept = np.arange(1, n + 1)
    lower = np.where(kept == 0, 0.0, beta.ppf(1 - CONFIDENCE, kept, n - kept + 1))
    reached = np.flatnonzero(lower >= target)
    if not len(reached):
        needed = math.ceil(math.log(1 - CONFIDENCE) / math.log(target)) if target < 1 else math.inf
        raise DataError(f"{where} split: {n} {'positive' if figure == 'sensitivity' else 'negative'} cases cannot show "
                        f"a {figure} of {target:g} with {CONFIDENCE:.0%} confidence (even keeping all of them gives a "
                        f"lower bound of {lower[-1]:.3f}); it takes at least {needed}: lower the target or use "
                        f"target_{figure}")
    k = int(kept[reached[0]])
    if figure == "sensitivity":
        return float(cases[k - 1])
    return float(np.nextafter(cases[k - 1], np.inf))


def predictive_values(sensitivity, specificity, prevalence: float):
    """PPV and NPV at a deployment prevalence (Bayes), from sensitivity and specificity."""
    with np.errstate(divide="ignore", invalid="ignore"):
        true_pos = sensitivity * prevalence
        false_pos = (1 - specificity) * (1 - prevalence)
        true_neg = specificity * (1 - prevalence)
        false_neg = (1 - sensitivity) * prevalence
        return true_pos / (true_pos + false_pos), true_neg / (true_neg + false_neg)


def net_benefit(y: np.ndarray, p1: np.ndarray, thresholds: np.ndarray) -> dict:
    """Decision-curve analysis (Vickers & Elkin 2006): net benefit of the model, of treating all
    and of treating none, at each threshold probability."""
    n, positives = len(y), float((y == 1).sum())
    flagged = p1[None, :] >= thresholds[:, None]
    true_pos = (flagged & (y == 1)[None, :]).sum(1)
    false_pos = (flagged & (y != 1)[None, :]).sum(1)
    odds = thresholds / (1 - thresholds)
    return {
        "threshold": thresholds,
        "model": true_pos / n - false_pos / n * odds,
        "treat_all": positives / n - (n - positives) / n * odds,
        "treat_none": np.zeros_like(thresholds),
    }
