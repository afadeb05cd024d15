"""Comparing two models on the same cases: paired DeLong test for ROC AUC (over patients when the
data has patient ids: Obuchowski 1997), exact McNemar tests for sensitivity and specificity at each
model's stored operating point."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medcls.config import read_config_file
from medcls.core.runs import read_model_info
from medcls.data.arrays import held, is_memory
from medcls.errors import DataError
from medcls.stats.intervals import compare_predictions
from medcls.stats.multilabel import compare_findings
from medcls.workflows.evaluate import run_predictions
from medcls.workflows.score import read_prediction_file


def compare_runs(run_a, run_b, registries, *, data=None, split=None) -> dict:
    """Score both runs on the same data and split, refuse if the cases differ, then compare. Runs
    trained on in-memory arrays of an earlier Python session are compared on what they stored."""

    if data is None and all(arrays_gone(Path(run)) for run in (run_a, run_b)):
        return compare_stored(Path(run_a), Path(run_b), split=split or "test")
    a = run_predictions(run_a, registries, data=data, split=split)
    b = run_predictions(run_b, registries, data=data, split=split)
    if a.keys != b.keys:
        only = len(set(a.keys) ^ set(b.keys))
        raise DataError(f"runs '{run_a}' and '{run_b}' would be compared on different cases ({only} differ, "
                        "e.g. different test splits): give both the same --data with --split all")
    if a.info.classes != b.info.classes:
        raise DataError(f"runs '{run_a}' and '{run_b}' have different classes: {a.info.classes} vs {b.info.classes}")
    if a.data.multi_label:
        result = compare_findings(a.labels, a.probs, b.probs, a.info.threshold, b.info.threshold, a.info.classes,
                                  groups=a.data.patients(a.rows))
    else:
        result = compare_predictions(a.labels, a.probs, b.probs, a.info.threshold, b.info.threshold,
                                     groups=a.data.patients(a.rows))
    result["split"] = a.split
    return result


def arrays_gone(run: Path) -> bool:
    """The run was trained on in-memory arrays that this Python session does not hold."""
    saved = run / "config.yaml"
    source = str(read_config_file(saved).get("data", "")) if saved.is_file() else ""
    return is_memory(source) and not held(source)


def stored_split(run: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, object]:
    """A run's own predictions of one split (predictions.csv: the probabilities training wrote)
    with each case's patient group (splits.csv): keys, labels, probabilities, groups, model info."""
    info = read_model_info(run)
    if info.multi_label or len(info.classes) != 2:
        raise DataError(f"run '{run}' was trained on arrays of an earlier session: comparing its stored predictions "
                        "needs a binary task; pass the arrays again and compare in one session")
    groups = {}
    with open(run / "splits.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("group"):
                raise DataError(f"'{run / 'splits.csv'}' has no patient groups (a run from before 2026-12-07): "
                                "compare it in the session that holds its arrays, or train it again")
            groups[row["key"]] = row["group"]
    stored = read_prediction_file(run / "predictions.csv", positive_class=info.positive_class)  # checked whole
    if stored.classes != list(info.classes):
        raise DataError(f"'{run / 'predictions.csv'}' has classes {stored.classes}, not the run's {info.classes}: "
                        "restore the run's own file")
    rows = stored.rows(split)
    keys, labels, probs = [stored.keys[i] for i in rows], stored.labels[rows], stored.probs[rows]
    if not keys:
        raise DataError(f"run '{run}' stored no {split!r} predictions (predictions.csv): choose a split it has")
    missing = [k for k in keys if k not in groups]
    if missing:
        raise DataError(f"'{missing[0]}' of '{run / 'predictions.csv'}' is not in its splits.csv: the files do not "
                        "belong together; restore the run's own files")
    return keys, labels, probs.astype(np.float64), np.array([groups[k] for k in keys]), info


def compare_stored(run_a: Path, run_b: Path, *, split: str) -> dict:
    """Two runs trained on the same arrays in an earlier session: their stored predictions of
    `split`, matched by key, over patients (the groups of splits.csv, which must agree)."""
    keys_a, labels, probs_a, groups, info_a = stored_split(run_a, split)
    keys_b, labels_b, probs_b, groups_b, info_b = stored_split(run_b, split)
    if sorted(keys_a) != sorted(keys_b):
        only = len(set(keys_a) ^ set(keys_b))
        raise DataError(f"runs '{run_a}' and '{run_b}' would be compared on different cases ({only} differ in their "
                        f"{split} predictions): compare runs trained on the same arrays and split")
    if info_a.classes != info_b.classes:
        raise DataError(f"runs '{run_a}' and '{run_b}' have different classes: {info_a.classes} vs {info_b.classes}")
    order = [{k: i for i, k in enumerate(keys_b)}[k] for k in keys_a]
    if not np.array_equal(labels, labels_b[order]) or not same_partition(groups, groups_b[order]):
        raise DataError(f"runs '{run_a}' and '{run_b}' hold other labels or patients for the same case keys: they were "
                        "not trained on the same arrays")
    shared = len(set(groups.tolist())) < len(groups)  # else every image is its own patient, as without ids
    result = compare_predictions(labels, probs_a, probs_b[order], info_a.threshold, info_b.threshold,
                                 groups=groups if shared else None)
    result["split"] = split
    result["source"] = "the runs' stored predictions (predictions.csv) and patient groups (splits.csv)"
    return result


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """The two labellings group the cases the same way (names aside)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
