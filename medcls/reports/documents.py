"""The run and evaluation reports as documents: case flow, model, gap table, split assessments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medcls.reports import plots
from medcls.reports.report import (
    GAP_HEADER,
    Document,
    add_assessment,
    format_value,
    gap_rows,
)

from medcls.stats.subgroups import FIGURES

if TYPE_CHECKING:
    from medcls.config import TrainConfig
    from medcls.data.prepared import PreparedData



def shown_source(source) -> str:
    """A data source or run folder as a shared report names it: the folder's or file's own name,
    never the absolute path of the machine it ran on (built-in sets keep their name)."""
    text = str(source)
    return Path(text).name if ("/" in text or "\\" in text) else text

def case_flow(data: PreparedData, rows_by_split: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """Images and patients found, used and excluded (with reasons), and per split and class."""
    patients = {c.patient_id for c in data.cases if c.patient_id is not None}
    lines = [
        f"Layout `{data.format_name}`: {len(data.cases)} images found, {len(data.cache.kept)} used, "
        f"{len(data.cache.failures)} excluded as unreadable.",
        f"{len(patients) or 'No'} patient ids (used for grouping only, never shown).",
        f"{len(data.duplicates)} set(s) of byte-identical images "
        f"({sum(len(d) - 1 for d in data.duplicates)} surplus copies); every copy is kept on one side of the split.",
    ]
    lines += [f"Excluded `{key}`: {reason}" for key, reason in data.cache.failures]
    rows = []
    for split, split_rows in (rows_by_split or {s: data.rows(s) for s in ("train", "val", "test")}).items():
        labels = data.cache_labels(split_rows)
        split_patients = data.patients(split_rows)
        counts = (", ".join(f"{name} {int((labels[:, j] == 1).sum())}" for j, name in enumerate(data.classes))
                  if data.multi_label else
                  ", ".join(f"{name} {int((labels == i).sum())}" for i, name in enumerate(data.classes)))
        rows.append([split, str(len(labels)), "-" if split_patients is None else str(len(set(split_patients))), counts])
    return lines, rows


def subgroup_rows(subgroups: dict) -> list[list[str]]:
    rows = []
    for value, assessed in subgroups.items():
        values, intervals = assessed["values"], assessed["intervals"]
        rows.append([value, str(values["n"]), *[format_value(values.get(m), intervals.get(m))
                                                  for m in ("roc_auc", "sensitivity", "specificity")]])
    return rows


def difference_rows(differences: dict) -> list[list[str]]:
    rows = []
    for value, figures in differences.items():
        if "not_compared" in figures:
            rows.append([value, "-", "-", f"not compared: {figures['not_compared']}", "-"])
            continue
        for name in FIGURES:
            r = figures[name]
            rows.append([value, name, f"{r['value_in']:.3f} vs {r['value_out']:.3f}",
                         f"{r['difference']:+.3f} ({r['low']:+.3f} to {r['high']:+.3f})"
                         + (" **differs (Holm p < 0.05)**" if r["flagged"] else ""),
                         f"{r['p_value']:.3g} / {r['p_holm']:.3g}"])
    return rows


def add_subgroups(doc: Document, column: str, subgroups: dict, differences: dict, out: Path, where: str) -> None:
    """The subgroup table, each subgroup's difference from the rest with its test, and a forest plot."""
    doc.heading(f"Subgroups of the {where} by `{column}`")
    doc.table([column, "n", "roc_auc", "sensitivity", "specificity"], subgroup_rows(subgroups))
    if not differences:
        return
    methods = sorted({f[n]["method"] for f in differences.values() if "not_compared" not in f for n in f})
    compared = sum(1 for f in differences.values() if "not_compared" not in f)
    doc.paragraph(f"Each subgroup against the rest of the {where} ({'; '.join(methods)}); p-values raw and "
                  f"Holm-adjusted over all {3 * compared} comparisons. A difference is marked only when its "
                  "Holm-adjusted p-value is below 0.05 (an unadjusted interval that excludes 0 is expected "
                  "in one comparison of twenty when nothing differs).")
    doc.table([column, "figure", "subgroup vs rest", "difference (95% interval)", "p (raw / Holm)"],
              difference_rows(differences))
    if plots.plot_forest(differences, column, out / "subgroups_forest.png"):
        doc.image(out / "subgroups_forest.png", "Subgroup differences from the rest")


def add_cases_to_review(doc: Document, cases: list[dict], scored_by: str) -> None:
    """The cases given the lowest probability for their own label, with (binary) the ROC AUC of all
    the others; a fold column where the cases came from cross-validation."""
    if not cases:
        return
    binary = cases[0]["auc_without"] is not None
    folds = any(c.get("fold") is not None for c in cases)
    doc.heading("Cases to look at again")
    doc.paragraph(f"The cases given the lowest probability for their own label by {scored_by}: a wrong label, a "
                  "look-alike of the other class, or an image the model cannot read yet. Relabelling or removing "
                  "cases after seeing these figures biases every figure above; review them blind to the prediction."
                  + (" The last column is the ROC AUC of all the other cases." if binary else ""))
    doc.table(["case", "label", *(["fold"] if folds else []), "P(label)", *(["ROC AUC without it"] if binary else [])],
              [[f"`{c['case']}`", c["label"], *(["-" if c.get("fold") is None else str(c["fold"])] if folds else []), f"{c['p_label']:.3f}",
                *([f"{c['auc_without']:.3f}"] if binary else [])] for c in cases])


def add_abstention(doc: Document, report: dict, classes: list[str]) -> None:
    """Split-conformal referral on the test split: coverage achieved, referral rate, and the
    figures on the cases kept."""
    doc.heading("Abstention: cases referred to a reader")
    low, high = report["coverage_interval"]
    per_class = ", ".join(f"{c} {format_value(v)}" for c, v in zip(classes, report["per_class_coverage"]))
    lines = [f"Prediction sets ({report['method']}) fitted on validation to hold the true class with probability "
             f"{report['coverage_target']:.0%} for each class; a case whose set is not one class is referred.",
             f"Test: the set held the true class for {report['coverage']:.3f} ({low:.3f}-{high:.3f}) of "
             f"{report['n']} cases (per class: {per_class}); {report['referred']} referred "
             f"({report['referral_rate']:.1%}: {report['ambiguous']} ambiguous, {report['empty']} unlike any "
             "validation case)."]
    kept = report.get("kept")
    if kept:
        lines.append(f"On the {kept['n']} cases kept: sensitivity "
                     f"{format_value(kept['sensitivity'], dict(zip(('low', 'high'), kept['sensitivity_interval'])))}, "
                     f"specificity "
                     f"{format_value(kept['specificity'], dict(zip(('low', 'high'), kept['specificity_interval'])))} "
                     "(Wilson), each decided by its single class.")
    doc.bullets(lines)


# Topics of the TRIPOD+AI statement (Collins et al., BMJ 2024;385:e078378) for prediction-model
# studies, as (topic, where this run answers it or None, what the authors must add). Item numbers
# are deliberately not repeated: check them against the official checklist when submitting.
def tripod_ai_rows(facts: dict) -> list[list[str]]:
    yes, no = "answered", "**not answered by medcls**"
    rows = [
        ("Data source, dates and setting", None, "where and when the images were acquired, the care setting"),
        ("Eligibility and case flow", "Case flow: images found, used and excluded with the reason for each",
         "inclusion criteria of patients"),
        ("Data preparation", "Model and training; model.json `preprocessing` (decoding, resizing, windowing)", ""),
        ("Outcome (reference standard)", f"classes {facts['classes']}, positive class {facts['positive']}",
         "how the labels were obtained and by whom, blinded or not"),
        ("Sample size", f"per split in Case flow ({facts['test_n']} test images)",
         "why this size suffices (e.g. a target interval width)"),
        ("Missing data", "unreadable images excluded and listed in Case flow", ""),
        ("Analytical methods: model, training, tuning", "Model and training (backbone, weights, stages, early "
         "stopping on validation, augmentation policy); config.yaml", ""),
        ("Class imbalance", f"`class_balance = {facts['class_balance']}`", ""),
        ("Performance measures and their uncertainty", "split tables: every metric with a 95 % interval and its "
         "method (docs/intervals.md)", ""),
        ("Model output and operating point", "Operating point (chosen on validation by the stated rule, applied "
         "unchanged to test); calibration section", ""),
        ("Fairness: performance in subgroups", "Subgroups section" if facts["subgroups"] else None,
         "" if facts["subgroups"] else "rerun with --by COLUMN (site, sex, scanner) to compare subgroups"),
        ("Training versus evaluation", "Train, validation and test side by side with the gap", ""),
        ("Clinical utility", "decision curve; abstention section" if facts["abstention"] else "decision curve", ""),
        ("External validation", None, "the test split comes from the same source as training (internal "
         "validation); evaluate on data from another site with `medcls evaluate RUN --data OTHER`"),
        ("Model specification and code availability", "model.safetensors, model.json, manifest.json (versions, "
         "commit, data hashes); `medcls export` for ONNX", "where the model and code are published"),
        ("Ethics approval, funding, conflicts, protocol, registration, patient involvement", None,
         "statements only the authors can make"),
    ]
    return [[topic, yes if where else no, where or "", todo] for topic, where, todo in rows]


def add_checklist(doc: Document, facts: dict) -> None:
    doc.heading("Reporting checklist (TRIPOD+AI topics)")
    doc.paragraph("What this report answers and where, and what it cannot answer, for a prediction-model paper "
                  "(TRIPOD+AI, Collins et al., BMJ 2024; CLAIM covers the imaging-specific items).")
    doc.table(["topic", "status", "where in this run", "the authors must add"], tripod_ai_rows(facts))


def slope_interval(calibration: dict) -> dict | None:
    """The calibration slope's interval as format_value takes it (None when none was computed)."""
    if "slope_low" not in calibration:
        return None
    return {"low": calibration["slope_low"], "high": calibration["slope_high"], "refused": calibration.get("refused")}


def finding_rows(found: dict) -> list[list[str]]:
    """Multi-label: one row per finding: known cases, positives, the figures with their intervals
    and the finding's operating point."""
    rows = []
    for name, assessed in found["findings"].items():
        values, intervals, operating = assessed["values"], assessed["intervals"], assessed["operating"]
        table = operating["table"] if operating else {}
        rows.append([name, str(assessed["known"]), str(table.get("tp", 0) + table.get("fn", 0)),
                     *[format_value(values.get(m), intervals.get(m)) for m in ("roc_auc", "sensitivity", "specificity",
                                                                             "ppv")],
                     "each fold's" if found.get("given_decisions") else
                     "-" if not operating else f"{operating['threshold']:.4f}"])
    return rows


def add_findings(doc: Document, found: dict, where: str) -> None:
    """Multi-label: the per-finding table and the macro/micro summaries with their intervals."""
    doc.paragraph(f"{where}: n = {found['values']['n']} images. Each finding is scored as its own binary task on "
                  "the cases where it is known (an uncertain finding under the 'ignore' policy is left out), "
                  "with the interval methods of a binary run (metrics.json: `findings`).")
    doc.table(["finding", "known", "positive", "roc_auc", "sensitivity", "specificity", "ppv", "threshold"],
              finding_rows(found))
    summary, intervals = found["summary"], found["summary_intervals"]
    doc.table(["summary", "value (interval)", "interval method"],
              [[name.replace("_", " "), format_value(value, intervals.get(name)),
                intervals[name]["method"] if name in intervals else "-"] for name, value in summary.items()])
    notes = sorted({note for a in found["findings"].values() for note in a["notes"]})
    for note in notes:
        doc.paragraph(f"**Note:** {note}.")


def task_rows(assessed: dict) -> tuple[list[str], list[list[str]]]:
    """Multi-task: one row per auxiliary head and split with its own figures and intervals."""
    rows = []
    for split in [s for s in ("train", "val", "test") if s in assessed] + [s for s in assessed if s not in
                                                                        ("train", "val", "test")]:
        for name, found in assessed[split].items():
            values, intervals = found["values"], found["intervals"]
            if found["kind"] == "regression":
                figures = [f"MAE {format_value(values['mae'], intervals.get('mae'))}",
                           f"RMSE {format_value(values['rmse'], intervals.get('rmse'))}",
                           f"R² {format_value(values['r2'], intervals.get('r2'))}",
                           f"r {format_value(values['pearson_r'], intervals.get('pearson_r'))}"]
            else:
                figures = [f"{m.replace('_', ' ')} {format_value(values.get(m), intervals.get(m))}"
                           for m in ("roc_auc", "sensitivity", "specificity", "accuracy")]
            rows.append([name, found["kind"], split, str(values["n"]), "; ".join(figures)])
    return ["head", "kind", "split", "n known", "figures (95% intervals)"], rows


def add_tasks(doc: Document, assessed: dict, weighting: str, learned: list | None) -> None:
    doc.heading("Auxiliary heads (multi-task)")
    doc.paragraph("Each head is scored on the cases whose target is known; classification heads by the single-task "
                  "code at an operating point chosen on validation, regression heads by MAE, RMSE, R² and Pearson's "
                  "r with percentile bootstrap intervals. Early stopping and the checkpoint follow the main task. "
                  f"Loss weighting: {weighting}"
                  + (f"; learned weights exp(-s), main first: {', '.join(f'{w:.3f}' for w in learned)}." if learned
                     else "."))
    doc.table(*task_rows(assessed))


def training_document(config: TrainConfig, data: PreparedData, summary: dict, scoring: dict):
    doc = Document(f"medcls run: {config.backbone} on {shown_source(config.data)}")
    doc.heading("Case flow")
    lines, rows = case_flow(data)
    doc.bullets(lines)
    doc.table(["split", "images", "patients", "per class"], rows)
    if data.warnings:
        doc.bullets(f"Warning: {w}" for w in data.warnings)
    doc.heading("Model and training")
    threshold = summary["threshold"]
    doc.bullets([
        f"Backbone `{config.backbone}`, weights: {summary['weights_origin']}; input {data.cache.channels} "
        f"channel(s) at {config.image_size} px; dropout {config.dropout} before the head.",
        f"Policy `{config.policy}` on training batches only: {summary['policy_params']}.",
        f"Stage 1 (frozen backbone) up to {config.epochs} epochs at lr {config.lr:g}; stage 2 ("
        f"{'every block' if config.unfreeze_blocks < 0 else f'top {config.unfreeze_blocks} blocks'}) up to "
        f"{config.finetune_epochs} epochs at lr "
        f"{config.lr * config.finetune_lr_factor:g}; {summary['epochs_run']} epochs run, best epoch "
        f"{summary['best_epoch']} by validation {config.monitor} (ties broken by the lower validation loss).",
        "Operating point: " + (f"one per finding, chosen on validation by `{config.threshold_rule}`, applied "
                               "unchanged to test (the finding tables below)" if data.multi_label else
                               "most probable class (multi-class)" if threshold is None else
                               f"{threshold:.4f}, chosen on validation by `{config.threshold_rule}`"
                               + (f" (target {config.target})" if config.threshold_rule.startswith("target") else "")
                               + ", applied unchanged to test."),
        f"Calibration: {'temperature ' + format(scoring['temperature'], '.3f') if scoring['temperature'] else 'none'}; "
        f"intervals: {config.bootstrap} bootstrap resamples where bootstrapped, seed {config.seed}.",
    ])
    doc.heading("Train, validation and test side by side")
    doc.paragraph("Image level. Train is scored without augmentation or dropout. Intervals at 95%: "
                  "the method of each is in the split tables below.")
    doc.table(GAP_HEADER, gap_rows(summary["results"], summary["intervals"]))
    doc.paragraph(f"**Reading:** {summary['reading']}")
    doc.image(Path(summary["out"]) / "learning_curves.png", "Learning curves")
    if not config.figures:
        doc.paragraph("Figures were not drawn (figures: false).")
    for split in ("test", "val", "train"):
        doc.heading(f"{split.capitalize()} split")
        if data.multi_label:
            add_findings(doc, scoring["findings"][split], f"{split} split")
        else:
            add_assessment(doc, scoring["assessed"][split], data.classes, f"{split} split")
        if split == "test":
            for name, caption in (("roc.png", "ROC with 95% band"), ("pr.png", "Precision-recall"),
                                  ("calibration.png", "Calibration"), ("decision_curve.png", "Decision curve"),
                                  ("confusion_matrix.png", "Confusion matrix")):
                doc.image(Path(summary["out"]) / name, caption)
    if scoring["calibration"]:
        doc.heading("Calibration")
        doc.table(["split", "slope (ideal 1)", "intercept (ideal 0)", "ECE"],
                  [[s, format_value(c["slope"], slope_interval(c)), format_value(c["intercept"]),
                    format_value(summary["results"][s].get("ece"), summary["intervals"][s].get("ece"))]
                   for s, c in scoring["calibration"].items()])
    if scoring.get("tasks"):
        add_tasks(doc, scoring["tasks"], config.task_weighting, scoring.get("task_weights"))
    if scoring.get("abstention"):
        add_abstention(doc, scoring["abstention"], data.classes)
    if scoring["patient_level"]:
        doc.heading(f"Patient level ({config.patient_level} of image scores)")
        add_assessment(doc, scoring["patient_level"]["test"], data.classes, "test split")
    if scoring["subgroups"]:
        add_subgroups(doc, config.by, scoring["subgroups"], scoring["subgroup_differences"], Path(summary["out"]),
                      "test split")
    add_checklist(doc, {"classes": ", ".join(data.classes),
                        "positive": ("each finding (multi-label)" if data.multi_label else data.classes[1]
                                     if len(data.classes) == 2 else "n/a (multi-class)"),
                        "test_n": summary["results"]["test"]["n"], "class_balance": config.class_balance,
                        "subgroups": bool(scoring["subgroups"]), "abstention": bool(scoring.get("abstention"))})
    return doc
