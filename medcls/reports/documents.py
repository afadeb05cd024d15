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
        rows.append([split, str(len(labels)), "-" if split_patients is None else str(len(set(split_patients))),
                     ", ".join(f"{name} {int((labels == i).sum())}" for i, name in enumerate(data.classes))])
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
                         + (" **interval excludes 0**" if r["flagged"] else ""),
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
                  f"Holm-adjusted over all {3 * compared} comparisons. A difference whose interval excludes 0 "
                  "is marked; with many subgroups, read the adjusted p-value before concluding.")
    doc.table([column, "figure", "subgroup vs rest", "difference (95% interval)", "p (raw / Holm)"],
              difference_rows(differences))
    if plots.plot_forest(differences, column, out / "subgroups_forest.png"):
        doc.image(out / "subgroups_forest.png", "Subgroup differences from the rest")


def training_document(config: TrainConfig, data: PreparedData, summary: dict, scoring: dict):
    doc = Document(f"medcls run: {config.backbone} on {config.data}")
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
        f"Stage 1 (frozen backbone) up to {config.epochs} epochs at lr {config.lr:g}; stage 2 (top "
        f"{config.unfreeze_blocks} blocks) up to {config.finetune_epochs} epochs at lr "
        f"{config.lr * config.finetune_lr_factor:g}; {summary['epochs_run']} epochs run, best epoch "
        f"{summary['best_epoch']} by validation {config.monitor}.",
        "Operating point: " + ("most probable class (multi-class)" if threshold is None else
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
    for split in ("test", "val", "train"):
        doc.heading(f"{split.capitalize()} split")
        add_assessment(doc, scoring["assessed"][split], data.classes, f"{split} split")
        if split == "test":
            for name, caption in (("roc.png", "ROC with 95% band"), ("pr.png", "Precision-recall"),
                                  ("calibration.png", "Calibration"), ("decision_curve.png", "Decision curve"),
                                  ("confusion_matrix.png", "Confusion matrix")):
                doc.image(Path(summary["out"]) / name, caption)
    if scoring["calibration"]:
        doc.heading("Calibration")
        doc.table(["split", "slope (ideal 1)", "intercept (ideal 0)", "ECE"],
                  [[s, format_value(c["slope"]), format_value(c["intercept"]),
                    format_value(summary["results"][s].get("ece"))] for s, c in scoring["calibration"].items()])
    if scoring["patient_level"]:
        doc.heading(f"Patient level ({config.patient_level} of image scores)")
        add_assessment(doc, scoring["patient_level"]["test"], data.classes, "test split")
    if scoring["subgroups"]:
        add_subgroups(doc, config.by, scoring["subgroups"], scoring["subgroup_differences"], Path(summary["out"]),
                      "test split")
    return doc
