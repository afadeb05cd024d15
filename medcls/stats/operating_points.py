"""Choosing the decision threshold on validation by a named rule, and what a threshold implies."""

from __future__ import annotations

import math

import numpy as np

from medcls.errors import ConfigError, DataError
from medcls.stats.metrics import youden_threshold

RULES = ("youden", "target_sensitivity", "target_specificity", "fixed")


def choose_threshold(rule: str, y: np.ndarray, p1: np.ndarray, *, target: float = 0.95, fixed: float = 0.5,
                     where: str = "validation") -> float:
    """The binary threshold (positive when P >= threshold) chosen on `where` by `rule`.

    - youden: maximises sensitivity + specificity - 1;
    - target_sensitivity: the highest threshold whose sensitivity is at least `target`
      (the screening setting: as specific as possible without missing more than allowed);
    - target_specificity: the lowest threshold whose specificity is at least `target`;
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
    if rule == "target_sensitivity":
        if not len(positives):
            raise DataError(f"a target sensitivity is not computable: the {where} split has no positive cases")
        return float(positives[math.ceil(target * len(positives) - 1e-9) - 1])
    if not len(negatives):
        raise DataError(f"a target specificity is not computable: the {where} split has no negative cases")
    return float(np.nextafter(negatives[math.ceil(target * len(negatives) - 1e-9) - 1], np.inf))


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
