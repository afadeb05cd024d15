"""Multi-label scoring: each finding is scored as its own binary task on the cases where it is known,
by exactly the single-label code (every figure, interval and 2x2 table), and the findings are
summarised by macro averages (each finding weighs the same) and micro averages (every known
case-finding pair pooled), each with a bootstrap interval over patients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcls.stats.assess import LEVEL, assess, split_results
from medcls.stats.bootstrap import ScoredCases, bootstrap_weighted_figures, mean_where_defined
from medcls.stats.metrics import decisions as metrics_decisions
from medcls.stats.operating_points import choose_threshold

SUMMARISED = ("roc_auc", "sensitivity", "specificity")  # the figures that get macro and micro intervals
SUMMARY_FIGURES = tuple(f"{kind}_{name}" for kind in ("macro", "micro") for name in SUMMARISED)


def finding(probs: np.ndarray, targets: np.ndarray, j: int):
    """Finding `j` as a binary task: (n, 2) probabilities, integer labels and the known-case mask."""
    known = ~np.isnan(targets[:, j])
    p = probs[known, j]
    return np.stack([1 - p, p], 1), targets[known, j].astype(np.int64), known


def binary_cross_entropy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean BCE over known entries, as the training loss computes it (without positive weights)."""
    known = ~np.isnan(targets)
    p = np.clip(probs[known], 1e-12, 1 - 1e-12)
    y = targets[known]
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if known.any() else float("nan")


def per_finding_metrics(metrics) -> list:
    """The metrics computed finding by finding (all, unless a plugin registered per_label=False)."""
    return [entry for entry in metrics if entry.metadata.get("per_label", True)]


def choose_thresholds(rule: str, probs: np.ndarray, targets: np.ndarray, *, target: float, fixed: float) -> list[float]:
    """Each finding's operating point, chosen on validation by `rule` from its known cases."""
    thresholds = []
    for j in range(targets.shape[1]):
        p, y, _ = finding(probs, targets, j)
        thresholds.append(float(choose_threshold(rule, y, p[:, 1], target=target, fixed=fixed)))
    return thresholds


def decisions(probs: np.ndarray, thresholds) -> np.ndarray:
    """(N, L) 0/1: a finding is called present when its probability reaches its threshold."""
    return metrics_decisions(probs, thresholds, multi_label=True)


def results(probs: np.ndarray, targets: np.ndarray, thresholds, metrics) -> dict:
    """The macro average over findings of every metric, plus loss and n: what training monitors."""
    thresholds = [0.5] * targets.shape[1] if thresholds is None else thresholds
    per = [split_results(*finding(probs, targets, j)[:2], thresholds[j], per_finding_metrics(metrics))
           for j in range(targets.shape[1])]
    values = {"n": int(len(targets)), "loss": binary_cross_entropy(probs, targets)}
    for name in per[0] if per else ():
        if name not in ("n", "loss", "metric_errors"):
            found = [row[name] for row in per if not np.isnan(row[name])]
            values[name] = float(np.mean(found)) if found else float("nan")
    return values


def summary_figures(probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray) -> dict:
    """Macro and micro ROC AUC, sensitivity and specificity over the known entries."""
    from medcls.stats.metrics import macro_finding_auc

    known = ~np.isnan(targets)
    y = np.where(known, targets, 0).astype(bool)
    tp, fn = ((predicted == 1) & y & known).sum(0), ((predicted == 0) & y & known).sum(0)
    tn, fp = ((predicted == 0) & ~y & known).sum(0), ((predicted == 1) & ~y & known).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = tp / (tp + fn), tn / (tn + fp)
    figures = {"macro_roc_auc": macro_finding_auc(targets, probs),
               "macro_sensitivity": float(np.nanmean(sens)) if np.isfinite(sens).any() else float("nan"),
               "macro_specificity": float(np.nanmean(spec)) if np.isfinite(spec).any() else float("nan"),
               "micro_roc_auc": pooled_auc(targets[known], probs[known]),
               "micro_sensitivity": float(tp.sum() / max(tp.sum() + fn.sum(), 1)),
               "micro_specificity": float(tn.sum() / max(tn.sum() + fp.sum(), 1))}
    return figures


def pooled_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


POOLED_WEIGHTS = 20_000_000  # level weights per micro-AUC block: 80 MB of float32, whatever the set's size


@dataclass
class SummaryCases:
    """What the summary figures need from the cases, computed once for every block of resample
    weights: each finding's `ScoredCases` over its known cases, and all known (case, finding)
    entries pooled for the micro ROC AUC, each carrying its case's weight."""

    findings: list  # ScoredCases of each finding known in some case
    pooled: ScoredCases
    entries: int

    @classmethod
    def of(cls, probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray) -> "SummaryCases":
        known = ~np.isnan(targets)
        n = len(targets)
        findings = []
        for j in np.flatnonzero(known.any(0)):  # a finding known in no case has no figures (NaN, left out)
            rows = np.flatnonzero(known[:, j])
            findings.append(ScoredCases.of(targets[rows, j].astype(np.int64), probs[rows, j], predicted[rows, j],
                                           case_of=rows, n_cases=n))
        case_of = np.nonzero(known)[0]  # the case of each known entry, in the order of targets[known]
        pooled = ScoredCases.of(targets[known].astype(np.int64), probs[known], predicted[known], case_of=case_of,
                                n_cases=n)
        return cls(findings, pooled, int(known.sum()))


def weighted_summary_figures(W: np.ndarray, cases: SummaryCases) -> dict:
    """`summary_figures` of every resample at once, a resample being a row of case weights in the
    (b, N) matrix `W`: each finding's weighted 2x2 table and ROC AUC (medcls.stats.bootstrap), so
    a bootstrap costs a few matrix products per finding instead of a scikit-learn call per finding
    and resample (1,000 resamples of 14 findings: minutes that way)."""
    if not cases.entries:
        return {name: np.full(len(W), np.nan) for name in SUMMARY_FIGURES}
    per = [finding.weigh(W) for finding in cases.findings]
    tp, fn = sum(f.tp for f in per), sum(f.fn for f in per)
    tn, fp = sum(f.tn for f in per), sum(f.fp for f in per)
    step = max(1, POOLED_WEIGHTS // max(2 * cases.pooled.n_levels, 1))
    micro_auc = np.concatenate([cases.pooled.weigh(W[start:start + step]).roc_auc()
                                for start in range(0, len(W), step)])
    return {"macro_roc_auc": mean_where_defined([f.roc_auc() for f in per], 0),
            "macro_sensitivity": mean_where_defined([f.sensitivity() for f in per], 0),
            "macro_specificity": mean_where_defined([f.specificity() for f in per], 0),
            "micro_roc_auc": micro_auc,
            "micro_sensitivity": tp / np.maximum(tp + fn, 1), "micro_specificity": tn / np.maximum(tn + fp, 1)}


def summary_intervals(probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray, *, groups=None,
                      n_resamples: int = 1000, seed: int = 0, level: float = LEVEL) -> dict:
    """Percentile bootstrap intervals of the summary figures, resampling patients (or cases)."""
    cases = SummaryCases.of(probs, targets, predicted)
    return bootstrap_weighted_figures(lambda W: weighted_summary_figures(W, cases), len(targets),
                                      groups=groups, n_resamples=n_resamples, seed=seed, level=level)


def macro_intervals(found: dict) -> dict:
    """The macro summaries' intervals under the names of the single-label figures (roc_auc, ...),
    for the train/validation/test table."""
    return {name: found["summary_intervals"][f"macro_{name}"] for name in SUMMARISED
            if f"macro_{name}" in found["summary_intervals"]}


def assess_findings(probs: np.ndarray, targets: np.ndarray, thresholds, metrics, names: list[str], *, patients=None,
                    where: str = "", n_resamples: int = 2000, seed: int = 0, prevalence=None,
                    predicted: np.ndarray | None = None) -> dict:
    """Every finding assessed by the single-label `assess` on its known cases (its own interval
    methods and notes), and the macro/micro summary with bootstrap intervals. `predicted` (N, L)
    overrides the decisions at `thresholds` (cross-validation: each fold's own operating points)."""
    per = {}
    for j, name in enumerate(names):
        p, y, known = finding(probs, targets, j)
        per[name] = assess(p, y, thresholds[j], per_finding_metrics(metrics),
                           patients=None if patients is None else patients[known], where=f"{where} finding {name}",
                           n_resamples=n_resamples, seed=seed, prevalence=prevalence,
                           y_pred=None if predicted is None else predicted[known, j])
        per[name]["known"] = int(known.sum())
        per[name]["uncertain_ignored"] = int((~known).sum())
    overridden = predicted is not None
    predicted = decisions(probs, thresholds) if predicted is None else predicted
    summary = summary_figures(probs, targets, predicted)
    intervals = summary_intervals(probs, targets, predicted, groups=patients, n_resamples=min(n_resamples, 1000),
                                  seed=seed)
    return {"findings": per, "summary": summary, "summary_intervals": intervals, "given_decisions": overridden,
            "values": results(probs, targets, thresholds, metrics)}


def compare_findings(targets: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, thresholds_a, thresholds_b,
                     names: list[str], groups=None) -> dict:
    """Two multi-label models on the same cases, finding by finding with the binary tests (paired
    DeLong for ROC AUC, McNemar at each model's operating points), the AUC p-values also
    Holm-adjusted over the findings."""
    from medcls.stats.intervals import compare_predictions
    from medcls.stats.subgroups import holm

    per = {}
    for j, name in enumerate(names):
        p_a, y, known = finding(probs_a, targets, j)
        p_b = finding(probs_b, targets, j)[0]
        per[name] = compare_predictions(y, p_a, p_b, thresholds_a[j], thresholds_b[j],
                                        groups=None if groups is None else groups[known])
    for name, adjusted in zip(per, holm([r["auc"]["p_value"] for r in per.values()])):
        per[name]["auc"]["p_holm"] = adjusted
    return {"n": int(len(targets)), "findings": per}
