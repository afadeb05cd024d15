"""`medcls evaluate`: score a finished run at its stored operating point on its own or new data."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcls.config import TrainConfig, make_config, read_config_file
from medcls.core.inference import Predictor, run_predictor
from medcls.core.runs import RunInfo, load_model, write_finding_predictions, write_predictions
from medcls.data.prepared import PreparedData, prepare_data
from medcls.errors import ConfigError, DataError
from medcls.folders import claim_folder, removed_if_left_empty, reserve_folder
from medcls.logs import stage
from medcls.reports import plots
from medcls.reports.documents import add_findings, add_subgroups, add_tasks, case_flow, shown_source, slope_interval
from medcls.reports.report import (
    GAP_HEADER,
    Document,
    add_assessment,
    format_value,
    gap_rows,
    write_metrics_json,
)
from medcls.stats import multilabel
from medcls.stats.assess import assess, assess_subgroups
from medcls.stats.multitask import assess_tasks
from medcls.stats.subgroups import compare_subgroups
from medcls.stats.calibration import calibration_slope_intercept
from medcls.stats.intervals import paired_delong

logger = logging.getLogger("medcls")


def stored_splits(run: Path) -> dict[str, tuple[str, str]]:
    """key -> (split, SHA-256 of the file when the run was trained), from the run's splits.csv."""
    path = run / "splits.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["key"]: (row["split"], row.get("sha256", "")) for row in csv.DictReader(fh)}


def check_unchanged(prepared: PreparedData, membership: dict, rows, run: Path, allow_changed: bool) -> None:
    """The cases scored must be the files the run split: a file replaced since (even by a training
    image) would be scored as if it were the held-out one."""
    changed = [prepared.cases[i].key for i in prepared.cache.kept[rows]
               if membership[prepared.cases[i].key][1] not in ("", prepared.hashes[i])]
    if not changed:
        return
    message = (f"{len(changed)} file(s) changed since run '{run}' was trained (SHA-256 differs from its "
               f"splits.csv), first '{changed[0]}'")
    if not allow_changed:
        raise DataError(f"{message}: restore them, or evaluate anyway with --allow-changed")
    logger.warning(f"{message}; evaluated anyway (--allow-changed)")


@dataclass
class ScoredCases:
    """A run's model applied to cases: the prepared data, the cache rows scored, calibrated
    probabilities (averaged over TTA views when asked), labels, and the run's model.json."""

    data: PreparedData
    rows: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    info: RunInfo
    split: str
    config: TrainConfig
    predictor: Predictor
    single_view: np.ndarray | None = None  # without test-time augmentation (None when tta is none)

    @property
    def keys(self) -> list[str]:
        return [self.data.cases[i].key for i in self.data.cache.kept[self.rows]]


def run_predictions(run, registries, *, data: str | None = None, split: str | None = None, tta: str = "none",
                    device: str = "auto", allow_changed: bool = False) -> ScoredCases:
    """The run's model applied to `data` (default: its own), restricted to `split` when the data
    is the run's own, through the one inference path (medcls.core.inference)."""
    run = Path(run)
    model, info = load_model(run, registries)
    config = make_config(read_config_file(run / "config.yaml"), where=f"run config '{run / 'config.yaml'}'")
    own_data = data is None or data == config.data
    # The run's preprocessing on the chosen data; replace() checks the config again.
    config = dataclasses.replace(config, data=config.data if data is None else data, image_size=info.image_size,
                                 channels=str(info.in_chans), positive_class=info.positive_class)
    split = split or ("test" if own_data else "all")
    prepared = prepare_data(config, registries, split=False, known_classes=info.classes)
    if bool(info.multi_label) != prepared.multi_label:
        raise DataError(f"run '{run}' was trained on {'multi-label' if info.multi_label else 'single-label'} "
                        f"data and '{config.data}' is {'multi-label' if prepared.multi_label else 'single-label'}: "
                        "evaluate it on data of its own kind")
    if prepared.multi_label:  # the run's findings, in the run's order
        missing = [name for name in info.classes if name not in prepared.classes]
        if missing:
            raise DataError(f"data '{config.data}' lacks finding(s) {', '.join(missing)} that run '{run}' predicts")
        prepared.labels = prepared.labels[:, [prepared.classes.index(name) for name in info.classes]]
    prepared.classes = info.classes
    rows = prepared.rows()
    if split != "all":
        membership = stored_splits(run)
        missing = [c.key for c in prepared.cases if c.key not in membership]
        if missing:
            raise DataError(f"'{missing[0]}' is not in run '{run}' splits.csv: evaluate new data with --split all")
        prepared.splits = np.array([membership[c.key][0] for c in prepared.cases])
        rows = prepared.rows(split)
        check_unchanged(prepared, membership, rows, run, allow_changed)
    if not len(rows):
        raise DataError(f"no readable images in split {split!r} of '{config.data}'")
    for warning in prepared.warnings:
        logger.warning(warning)
    # Scored as in training: the run's precision and memory format on this machine's device.
    predictor = run_predictor(model, info, device=device, precision=config.precision,
                              channels_last=config.channels_last)
    mirrors = not config.laterality_sensitive or config.allow_lr_flip
    with stage(f"scoring {len(rows)} {split} images" + ("" if tta == "none" else f" with {tta} views")):
        probs, single = predictor.probabilities_and_single_view(prepared.batches(rows), tta=tta, mirrors=mirrors)
    return ScoredCases(prepared, rows, probs, prepared.cache_labels(rows), info, split, config, predictor,
                       None if tta == "none" else single)


def add_tta_comparison(doc, tta, labels, plain, probs, without, with_tta) -> None:
    """The same cases scored without and with test-time augmentation, and whether AUC differs."""

    doc.heading("Test-time augmentation: without and with")
    names = ("roc_auc", "sensitivity", "specificity", "accuracy")

    def cell(assessed, name):
        value = assessed["values"].get(name)
        return "-" if value is None else format_value(value, assessed["intervals"].get(name))

    doc.table(["scoring", *names], [["single view", *(cell(without, n) for n in names)],
                                    [f"{tta} views averaged", *(cell(with_tta, n) for n in names)]])
    if probs.shape[1] == 2 and len(np.unique(labels)) == 2:
        test = paired_delong(labels, probs[:, 1], plain[:, 1])  # with minus without
        doc.paragraph(f"ROC AUC with minus without test-time augmentation: {test['difference']:+.3f} "
                      f"({test['low']:+.3f} to {test['high']:+.3f}), paired DeLong p = {test['p_value']:.3f}.")


def evaluation_folder(run: Path, out) -> Path:
    """`out`, or else RUN/evaluation, RUN/evaluation-2, ...: a second evaluation (another site's
    data, another split) never replaces the report of the first."""
    return reserve_folder(run / "evaluation") if out is None else Path(out)


def evaluate_run(run, registries, *, out=None, **options) -> dict:
    """Score a finished run at its stored operating point; writes metrics.json, predictions.csv,
    report.md and report.html into `out` (a new or empty folder, claimed before any work; default
    RUN/evaluation, then RUN/evaluation-2, ...)."""
    claimed = claim_folder(out, by="medcls evaluate") if out is not None else None
    with removed_if_left_empty(claimed):
        return evaluate_into(Path(run), registries, out=claimed, **options)


def evaluate_into(run: Path, registries, *, data=None, split=None, out=None, by=None, patient_level=None,
                  prevalence=None, n_resamples=2000, tta="none", device="auto", allow_changed=False) -> dict:
    scored = run_predictions(run, registries, data=data, split=split, tta=tta, device=device,
                             allow_changed=allow_changed)
    if scored.data.multi_label:
        if by or patient_level:
            raise ConfigError("--by and --patient-level are not available for multi-label runs yet: leave them out")
        return evaluate_findings(run, scored, registries, out=out, prevalence=prevalence, n_resamples=n_resamples,
                                 tta=tta)
    prepared, rows, probs, labels, info, split, config, plain = (
        scored.data, scored.rows, scored.probs, scored.labels, scored.info, scored.split, scored.config,
        scored.single_view)
    metrics = list(registries["metrics"])
    threshold = info.threshold
    patients = prepared.patients(rows)
    options = dict(prevalence=prevalence, n_resamples=n_resamples, seed=config.seed)
    with stage(f"figures and {n_resamples}-resample intervals of {len(labels)} {split} cases"):
        assessed = assess(probs, labels, threshold, metrics, patients=patients, where=f"{split} cases", **options)
    per_patient = (assess(probs, labels, threshold, metrics, patients=patients, patient_level=patient_level,
                          where=f"{split} cases", **options) if patient_level else None)
    subgroups, differences = {}, {}
    if by:
        differences = compare_subgroups(probs, labels, threshold, prepared.column(rows, by), patients=patients,
                                        n_resamples=n_resamples, seed=config.seed)
        subgroups = assess_subgroups(probs, labels, threshold, metrics, prepared.column(rows, by), by,
                                     patients=patients, **options)
    calibration = (calibration_slope_intercept(labels, probs[:, 1], groups=patients, n_resamples=n_resamples,
                                               seed=config.seed) if probs.shape[1] == 2 else None)  # as training
    without_tta = None if plain is None else assess(plain, labels, threshold, metrics, patients=patients,
                                                    where=f"{split} cases", **options)

    out = evaluation_folder(run, out)
    classes = info.classes
    plots.plot_roc({split: (probs, labels, threshold)}, classes, out / "roc.png", groups=patients, highlight=split)
    plots.plot_confusion(probs, labels, threshold, classes, out / "confusion_matrix.png")
    if len(classes) == 2:
        plots.plot_pr(probs, labels, out / "pr.png", split)
        plots.plot_calibration(probs, labels, out / "calibration.png", split)
        plots.plot_decision_curve(probs, labels, out / "decision_curve.png")
    write_predictions(out / "predictions.csv", classes, {split: (scored.keys, labels, probs)}, scored.predictor.decide)
    tasks = evaluate_tasks(scored, metrics, n_resamples) if scored.predictor.tasks else None
    write_metrics_json(out / "metrics.json", {
        split: assessed["values"], "intervals": {split: assessed["intervals"]},
        "operating": {split: assessed["operating"]}, "level": {split: assessed["level"]},
        "per_class": {split: assessed["per_class"]},
        "threshold": threshold, "data": config.data, "calibration": {split: calibration},
        "patient_level": None if per_patient is None else {split: per_patient}, "subgroups": subgroups,
        "subgroup_differences": differences,
        "notes": {split: assessed["notes"]}, "tta": tta, **({"tasks": tasks} if tasks else {}),
        "without_tta": None if without_tta is None else {split: without_tta["values"],
                                                         "intervals": without_tta["intervals"]},
    })

    doc = Document(f"Evaluation of {shown_source(run)} on {shown_source(config.data)} ({split})")
    doc.heading("Case flow")
    lines, flow_rows = case_flow(prepared, {split: rows})
    doc.bullets(lines)
    doc.table(["cases", "images", "patients", "per class"], flow_rows)
    doc.heading("Results" + ("" if tta == "none" else f" with test-time augmentation ({tta})"))
    add_assessment(doc, assessed, classes, f"{split} cases")
    if without_tta is not None:
        add_tta_comparison(doc, tta, labels, plain, probs, without_tta, assessed)
    if calibration and calibration.get("not_computable"):
        doc.paragraph(f"Calibration slope and intercept: not computable, because {calibration['not_computable']}.")
    elif calibration:
        doc.paragraph(f"Calibration slope {format_value(calibration['slope'], slope_interval(calibration), reason=True)} "
                      f"(ideal 1; {calibration.get('method', 'no interval')}), intercept "
                      f"{calibration['intercept']:.3f} (ideal 0).")
    for name, caption in (("roc.png", "ROC with 95% band"), ("pr.png", "Precision-recall"),
                          ("calibration.png", "Calibration"), ("decision_curve.png", "Decision curve"),
                          ("confusion_matrix.png", "Confusion matrix")):
        doc.image(out / name, caption)
    if tasks:
        add_tasks(doc, tasks, scored.info.task_weighting, None)
    if per_patient:
        doc.heading(f"Patient level ({patient_level} of image scores)")
        add_assessment(doc, per_patient, classes, f"{split} cases")
    if subgroups:
        add_subgroups(doc, by, subgroups, differences, out, f"{split} cases")
    trained = run / "metrics.json"
    if trained.is_file():
        saved = json.loads(trained.read_text())
        if all(k in saved for k in ("train", "val", "test", "gap")):
            doc.heading("The run's train/validation/test gap (from training)")
            doc.table(GAP_HEADER, gap_rows(saved, saved.get("intervals", {})))
    doc.write(out)
    return {"split": split, "n": int(len(labels)), "metrics": assessed["values"], "intervals": assessed["intervals"],
            "out": str(out)}


def evaluate_findings(run: Path, scored: ScoredCases, registries, *, out=None, prevalence=None, n_resamples=2000,
                      tta="none") -> dict:
    """`evaluate_run` for multi-label runs: every finding at its stored operating point, assessed
    as training assessed it (medcls.stats.multilabel), with and without test-time augmentation."""
    metrics = list(registries["metrics"])
    thresholds, split, classes = scored.info.threshold, scored.split, scored.info.classes
    patients = scored.data.patients(scored.rows)

    def assessed_for(probs):
        return multilabel.assess_findings(probs, scored.labels, thresholds, metrics, classes, patients=patients,
                                          where=f"{split} cases", n_resamples=n_resamples, seed=scored.config.seed,
                                          prevalence=prevalence)

    with stage(f"figures and {n_resamples}-resample intervals of {len(scored.labels)} {split} cases, per finding"):
        found = assessed_for(scored.probs)
    without = None if scored.single_view is None else assessed_for(scored.single_view)
    out = evaluation_folder(run, out)
    plots.plot_finding_rocs(scored.probs, scored.labels, classes, thresholds, out / "roc.png")
    write_finding_predictions(out / "predictions.csv", classes, {split: (scored.keys, scored.labels, scored.probs)},
                              scored.predictor.decide)
    intervals = multilabel.macro_intervals(found)
    write_metrics_json(out / "metrics.json", {
        split: found["values"], "intervals": {split: intervals}, "findings": {split: found},
        "threshold": thresholds, "data": scored.config.data, "tta": tta,
        "without_tta": None if without is None else {split: without["values"], "findings": without},
    })
    doc = Document(f"Evaluation of {shown_source(run)} on {shown_source(scored.config.data)} ({split})")
    doc.heading("Case flow")
    lines, flow_rows = case_flow(scored.data, {split: scored.rows})
    doc.bullets(lines)
    doc.table(["cases", "images", "patients", "positives per finding"], flow_rows)
    doc.heading("Results" + ("" if tta == "none" else f" with test-time augmentation ({tta})"))
    add_findings(doc, found, f"{split} cases")
    if without is not None:
        doc.heading("Test-time augmentation: without and with")
        doc.table(["scoring", "macro ROC AUC", "micro ROC AUC"],
                  [[label, *(format_value(a["summary"][k], a["summary_intervals"].get(k))
                             for k in ("macro_roc_auc", "micro_roc_auc"))]
                   for label, a in (("single view", without), (f"{tta} views averaged", found))])
    doc.image(out / "roc.png", "ROC per finding")
    doc.write(out)
    return {"split": split, "n": int(len(scored.labels)), "metrics": found["values"], "intervals": intervals,
            "out": str(out)}


def evaluate_tasks(scored: ScoredCases, metrics, n_resamples: int) -> dict:
    """Multi-task runs: every auxiliary head on the scored cases at its stored operating point,
    the data's columns matched to the run's heads by name (and its classes by name)."""
    tasks, data = scored.predictor.tasks, scored.data
    found = {task.name: j for j, task in enumerate(data.tasks)}
    targets = np.full((len(scored.rows), len(tasks)), np.nan)
    for j, task in enumerate(tasks):
        if task.name not in found:
            raise DataError(f"data '{scored.config.data}' has no column {task.name!r} for the run's {task.kind} head")
        column = data.cache_task_targets(scored.rows)[:, found[task.name]]
        if task.kind != "regression":  # the data's class order to the run's
            names = data.tasks[found[task.name]].classes
            unknown = sorted(set(names) - set(task.classes))
            if unknown:
                raise DataError(f"data '{scored.config.data}' column {task.name!r} has values {unknown} the run's head "
                                f"was not trained on ({list(task.classes)})")
            column = np.array([np.nan if np.isnan(v) else task.classes.index(names[int(v)]) for v in column])
        targets[:, j] = column
    split = scored.split
    return assess_tasks(tasks, {split: scored.predictor.task_outputs(data.batches(scored.rows))}, {split: targets},
                        metrics, patients={split: data.patients(scored.rows)}, n_resamples=n_resamples,
                        seed=scored.config.seed, thresholds=scored.predictor.task_thresholds)
