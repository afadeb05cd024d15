"""A finished run's final scoring: calibration and the operating point chosen on validation, then
every split (train, val, test) assessed the same way with intervals; multi-label runs finding by
finding; and the split figures (ROC, confusion, PR, calibration, decision curve)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcls.config import TrainConfig
from medcls.data.prepared import PreparedData
from medcls.logs import logger, stage
from medcls.reports import plots, report
from medcls.stats import multilabel
from medcls.stats.assess import assess, assess_subgroups
from medcls.stats.calibration import calibration_slope_intercept, fit_temperature
from medcls.stats.conformal import conformal_report, fit_conformal
from medcls.stats.operating_points import choose_threshold
from medcls.stats.subgroups import compare_subgroups


def score_splits(config: TrainConfig, registries, data: PreparedData, rows: dict, scores: dict, scorer) -> dict:
    """Calibrate and pick the operating point on validation (both stored on `scorer`, the run's
    Predictor), then assess every split the same way."""

    metrics = list(registries["metrics"])
    temperature = None
    if config.calibration == "temperature":
        temperature = scorer.temperature = fit_temperature(*scores["val"])
        scores = {s: (scorer.calibrate(p), y) for s, (p, y) in scores.items()}
        logger.info(f"calibration: temperature {temperature:.3f} fitted on validation")
    threshold = None
    if len(data.classes) == 2:
        probs, labels = scores["val"]
        threshold = scorer.threshold = choose_threshold(config.threshold_rule, labels, probs[:, 1],
                                                        target=config.target, fixed=config.threshold)
    options = dict(prevalence=config.prevalence, n_resamples=config.bootstrap, seed=config.seed)
    patients = {s: data.patients(r) for s, r in rows.items()}
    assessed = {}
    with stage(f"figures and {config.bootstrap}-resample intervals of {', '.join(scores)}", total=len(scores),
               unit="split") as advance:
        for s, (p, y) in scores.items():
            assessed[s] = assess(p, y, threshold, metrics, patients=patients[s], where=f"{s} split", **options)
            advance()
    results = {s: a["values"] for s, a in assessed.items()}
    results["gap"] = report.gap(results["train"], results["test"])
    patient_level = None
    if config.patient_level:
        patient_level = {s: assess(p, y, threshold, metrics, patients=patients[s], where=f"{s} split",
                                   patient_level=config.patient_level, **options) for s, (p, y) in scores.items()}
    subgroups, differences = {}, {}
    if config.by:
        column = data.column(rows["test"], config.by)
        subgroups = assess_subgroups(*scores["test"], threshold, metrics, column, config.by,
                                     patients=patients["test"], where="test ", **options)
        differences = compare_subgroups(*scores["test"], threshold, column, patients=patients["test"],
                                        n_resamples=config.bootstrap, seed=config.seed)
    calibration = {s: calibration_slope_intercept(y, p[:, 1], groups=patients[s], n_resamples=config.bootstrap,
                                                  seed=config.seed)
                   for s, (p, y) in scores.items() if p.shape[1] == 2}
    conformal, abstention = None, None
    val_probs, val_labels = scores["val"]
    if config.abstain_coverage and len(np.unique(val_labels)) == len(data.classes):
        conformal = scorer.conformal = fit_conformal(val_probs, val_labels, config.abstain_coverage)
        abstention = conformal_report(*scores["test"], conformal)
    return {"conformal": conformal, "abstention": abstention, "scores": scores, "threshold": threshold, "temperature": temperature, "assessed": assessed,
            "results": results, "intervals": {s: a["intervals"] for s, a in assessed.items()},
            "reading": report.read_gap(results["train"], results["val"], results["test"]),
            "patient_level": patient_level, "subgroups": subgroups, "subgroup_differences": differences,
            "calibration": calibration,
            "groups": patients["test"]}


def score_finding_splits(config: TrainConfig, registries, data: PreparedData, rows: dict, scores: dict,
                         scorer) -> dict:
    """Multi-label: each finding's operating point chosen on validation (stored on `scorer`), then
    every split assessed finding by finding and summarised (medcls.stats.multilabel)."""
    metrics = list(registries["metrics"])
    thresholds = scorer.threshold = multilabel.choose_thresholds(config.threshold_rule, *scores["val"],
                                                                 target=config.target, fixed=config.threshold)
    patients = {s: data.patients(r) for s, r in rows.items()}
    found = {}
    with stage(f"figures and {config.bootstrap}-resample intervals of {len(data.classes)} findings", total=len(scores),
               unit="split") as advance:
        for s, (p, y) in scores.items():
            found[s] = multilabel.assess_findings(p, y, thresholds, metrics, data.classes, patients=patients[s],
                                                  where=f"{s} split", n_resamples=config.bootstrap, seed=config.seed,
                                                  prevalence=config.prevalence)
            advance()
    results = {s: f["values"] for s, f in found.items()}
    results["gap"] = report.gap(results["train"], results["test"])
    intervals = {s: multilabel.macro_intervals(f) for s, f in found.items()}
    assessed = {s: {"operating": None, "per_class": None, "level": "image",
                    "notes": sorted({note for a in f["findings"].values() for note in a["notes"]})}
                for s, f in found.items()}
    return {"conformal": None, "abstention": None, "scores": scores, "threshold": thresholds, "temperature": None,
            "assessed": assessed, "results": results, "intervals": intervals,
            "reading": report.read_gap(results["train"], results["val"], results["test"]),
            "patient_level": None, "subgroups": {}, "subgroup_differences": {}, "calibration": {},
            "groups": patients["test"], "findings": found}


def draw_split_figures(scoring: dict, classes: list[str], out: Path) -> None:
    threshold = scoring["threshold"]
    scores = scoring["scores"]
    if "findings" in scoring:  # multi-label: one ROC curve per finding on the test split
        plots.plot_finding_rocs(*scores["test"], classes, threshold, out / "roc.png")
        return
    plots.plot_roc({s: (p, y, threshold) for s, (p, y) in scores.items()}, classes, out / "roc.png",
                   groups=scoring["groups"])
    plots.plot_confusion(*scores["test"], threshold, classes, out / "confusion_matrix.png")
    if len(classes) == 2:
        plots.plot_pr(*scores["test"], out / "pr.png")
        plots.plot_calibration(*scores["test"], out / "calibration.png")
        plots.plot_decision_curve(*scores["test"], out / "decision_curve.png")
