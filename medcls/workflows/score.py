"""Scoring predictions from any tool (R, MONAI, a vendor's CAD output, another medcls run): the
evaluation a medcls run gets, from a CSV file of labels and probabilities.

The file has a label column and either a probability column per class (`p_<class>` as medcls's
predictions.csv, or `prob_<class>` as its cross-validation and predict files) or one column with
P(positive) for a binary task (`--score COLUMN`); optionally a key column (`key`, `case` or
`file`), a split column (train/val/test), a patient column and subgroup columns. The operating
point is chosen on the validation rows by the same rules as a training run (never on test), or
given; every split present is scored with intervals, the test split first. Several files for the
same cases are scored as their mean (soft voting): an ensemble of runs already trained.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from medcls.data.cases import SPLIT_ALIASES, Case
from medcls.data.layouts import table_rows
from medcls.data.loading import class_names
from medcls.errors import ConfigError, DataError
from medcls.reports import plots
from medcls.reports.documents import add_cases_to_review, add_subgroups, slope_interval
from medcls.reports.report import Document, add_assessment, format_value, write_metrics_json
from medcls.stats.assess import assess, assess_subgroups
from medcls.stats.calibration import calibration_slope_intercept
from medcls.stats.operating_points import choose_threshold
from medcls.stats.review import cases_at_odds
from medcls.stats.subgroups import compare_subgroups
from medcls.stats.intervals import compare_predictions

SPLIT_ORDER = ("test", "val", "train", "all")
KEY_COLUMNS = ("key", "case", "file")  # medcls's predictions.csv, cross-validation, predict
PROBABILITY_PREFIXES = ("p_", "prob_")


@dataclass
class PredictionFile:
    """Labels, class probabilities and the optional columns of one predictions file."""

    path: Path
    keys: list[str]
    classes: list[str]  # binary: the positive class last
    labels: np.ndarray  # (N,) class indices
    probs: np.ndarray  # (N, K) probabilities
    splits: np.ndarray  # (N,) train / val / test, or "all" without a split column
    patients: np.ndarray | None
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # every column as text, for --by

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def read_prediction_file(path, *, label_column: str = "label", score_column: str | None = None,
                         key_column: str | None = None, split_column: str = "split", patient_column: str | None = None,
                         positive_class: str | None = None) -> PredictionFile:
    """Read and check a predictions CSV; every problem is a one-line DataError naming the file. The
    key column is the first of KEY_COLUMNS present unless given (row numbers without one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file '{path}' does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = table_rows(fh, path)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"predictions file '{path}' cannot be read as CSV ({exc})") from None
    if not rows:
        raise DataError(f"predictions file '{path}' has no rows")
    for column in filter(None, (label_column, score_column, patient_column)):
        if column not in header:
            raise DataError(f"predictions file '{path}' has no column {column!r} (columns: {', '.join(header)})")
    labels_text = [row[label_column].strip() for row in rows]
    empty = [i for i, label in enumerate(labels_text) if not label]
    if empty:
        raise DataError(f"predictions file '{path}', row {empty[0] + 2}: the label is empty")
    prefix = next((p for p in PROBABILITY_PREFIXES if any(c.startswith(p) for c in header)), "p_")
    named = sorted(set(labels_text) | {c[len(prefix):] for c in header if c.startswith(prefix)}
                   if score_column is None else set(labels_text))
    classes = class_names([Case(key=n, label=n) for n in named], positive_class, str(path),
                          flag="--positive-class ")
    if score_column is not None:
        if len(classes) != 2:
            raise DataError(f"predictions file '{path}': --score gives P(positive) of a binary task, but the labels "
                            f"have {len(classes)} classes: give a p_<class> column per class instead")
        p1 = numbers(rows, score_column, path)
        probs = np.stack([1 - p1, p1], 1)
    else:
        missing = [c for c in classes if f"{prefix}{c}" not in header]
        if missing:
            candidates = [c for c in header if c not in (label_column, split_column, patient_column)
                          and all(is_probability(row[c]) for row in rows)]
            example = candidates[0] if len(classes) == 2 and len(candidates) == 1 else "COLUMN"
            raise DataError(f"predictions file '{path}' has no probability column for class(es) "
                            f"{', '.join(missing)}: give p_<class> or prob_<class> columns (as medcls writes) or, "
                            f"for a binary task, the column with P(positive): --score {example} (Python: score_column={example!r})")
        probs = np.stack([numbers(rows, f"{prefix}{c}", path) for c in classes], 1)
        in_range(probs, path)  # every column, before a binary file is reduced to P(positive)
        if np.abs(probs.sum(1) - 1).max() > 1e-3:
            bad = int(np.argmax(np.abs(probs.sum(1) - 1)))
            raise DataError(f"predictions file '{path}', row {bad + 2}: the class probabilities sum to "
                            f"{probs[bad].sum():.4g}, not 1: write softmax outputs")
        if len(classes) == 2:
            probs = np.stack([1 - probs[:, 1], probs[:, 1]], 1)  # P(positive) decides, as in a run
    in_range(probs, path)
    splits = np.array(["all"] * len(rows), dtype=object)
    if split_column in header:
        named_splits = [SPLIT_ALIASES.get(row[split_column].strip().lower()) for row in rows]
        unknown = [i for i, s in enumerate(named_splits) if s is None]
        if unknown:
            raise DataError(f"predictions file '{path}', row {unknown[0] + 2}: split {rows[unknown[0]][split_column]!r} "
                            "is not train, val or test")
        splits = np.array(named_splits, dtype=object)
    key_column = key_column or next((c for c in KEY_COLUMNS if c in header), None)
    keys = [row[key_column] for row in rows] if key_column in header else [str(i + 2) for i in range(len(rows))]
    first = {}
    for i, key in enumerate(keys):  # a repeated case would count twice and narrow every interval
        if first.setdefault(key, i) != i:
            same = "the same row again" if rows[first[key]] == rows[i] else "a different row"
            raise DataError(f"predictions file '{path}', rows {first[key] + 2} and {i + 2}: case {key!r} appears twice "
                            f"({same}): keep one row per case (several images of a patient: a row per image, "
                            "each its own key, and --patient-column)")
    patients = np.array([row[patient_column] for row in rows]) if patient_column else None
    return PredictionFile(path, keys, classes, np.array([classes.index(label) for label in labels_text]),
                          probs, splits.astype(str), patients,
                          {c: np.array([row[c] for row in rows]) for c in header})


def in_range(probs: np.ndarray, path: Path) -> None:
    outside = np.flatnonzero((probs < 0).any(1) | (probs > 1).any(1))
    if len(outside):
        row = probs[outside[0]]
        raise DataError(f"predictions file '{path}', row {outside[0] + 2}: a probability outside [0, 1] "
                        f"({row[np.argmax(np.abs(row - 0.5))]:.4g}): write probabilities, not logits or scores")


def is_probability(text) -> bool:
    try:
        return 0 <= float(text) <= 1
    except (TypeError, ValueError):
        return False


def numbers(rows: list[dict], column: str, path: Path) -> np.ndarray:
    values = np.empty(len(rows))
    for i, row in enumerate(rows):
        try:
            values[i] = float(row[column])
        except (TypeError, ValueError):
            comma = isinstance(row[column], str) and re.fullmatch(r"\s*-?\d*,\d+\s*", row[column])
            fix = ": write a decimal point (0.5, not 0,5), e.g. save as 'CSV' in an English locale" if comma else ""
            raise DataError(f"predictions file '{path}', row {i + 2}: {row[column]!r} in column {column!r} is not a "
                            f"number{fix}") from None
        if not math.isfinite(values[i]):
            raise DataError(f"predictions file '{path}', row {i + 2}: column {column!r} is {row[column]}")
    return values


def operating_point(file: PredictionFile, threshold: float | None, rule: str, target: float) -> tuple[float | None, str]:
    """The binary threshold and where it came from: given, or chosen on the validation rows."""
    if len(file.classes) != 2:
        return None, "most probable class (multi-class)"
    if threshold is not None:
        return float(threshold), f"{threshold:g}, given"
    if rule == "fixed":
        return 0.5, "0.5, fixed"
    val = file.rows("val")
    if not len(val):
        raise ConfigError(f"predictions file '{file.path}' has no validation rows to choose the operating point "
                          f"on by {rule!r}: add a split column with val rows, or give --threshold (never choose "
                          "it on the test rows)")
    chosen = choose_threshold(rule, file.labels[val], file.probs[val, 1], target=target, where="validation")
    return chosen, f"{chosen:.4f}, chosen on {len(val)} validation rows by `{rule}`"


def matching_rows(a: PredictionFile, rows_a: np.ndarray, b: PredictionFile, split: str | None = None) -> np.ndarray:
    """The rows of `b` that hold the cases of `a`'s `rows_a`, matched by key (within `split`, else
    in the same split as in `a`); a DataError when the files do not hold the same cases and labels."""
    candidates = [i for i, s in enumerate(b.splits) if split is None or s == split]
    index_b = {b.keys[i]: i for i in candidates}
    for file, keys in ((a, [a.keys[i] for i in rows_a]), (b, [b.keys[i] for i in candidates])):
        if len(set(keys)) != len(keys):
            raise DataError(f"'{file.path}' names a case twice in its key column: give each row a unique key "
                            f"({', '.join(KEY_COLUMNS)}) so that its cases can be matched")
    missing = [a.keys[i] for i in rows_a if a.keys[i] not in index_b]
    if missing or len(index_b) != len(rows_a):
        raise DataError(f"'{a.path}' and '{b.path}' hold different {split or 'sets of'} cases ({len(missing)} of "
                        f"{len(rows_a)} keys in the first are not in the second, e.g. {missing[:1]}): give "
                        "predictions for the same cases, matched by the key column")
    rows_b = np.array([index_b[a.keys[i]] for i in rows_a], dtype=int)
    if not np.array_equal(a.labels[rows_a], b.labels[rows_b]):
        raise DataError(f"'{a.path}' and '{b.path}' give different labels for the same keys")
    if not np.array_equal(a.splits[rows_a], b.splits[rows_b]):
        raise DataError(f"'{a.path}' and '{b.path}' put the same keys in different splits: give predictions of "
                        "models trained and validated on the same split")
    return rows_b


def mean_prediction_file(files: list[PredictionFile]) -> PredictionFile:
    """Soft voting: the class probabilities of several files for the same cases (matched by key),
    averaged; the rows, splits, patients and other columns are the first file's."""
    first, *others = files
    probs = first.probs.copy()
    for other in others:
        if other.classes != first.classes:
            raise DataError(f"'{first.path}' and '{other.path}' have different classes: {first.classes} vs "
                            f"{other.classes}")
        probs += other.probs[matching_rows(first, np.arange(len(first.keys)), other)]
    return replace(first, probs=probs / len(files))


def write_prediction_file(file: PredictionFile, path: Path) -> None:
    """The rows as medcls's predictions.csv lays them out: key, split (when the source had one),
    label, p_<class>..."""
    split = [] if (file.splits == "all").all() else ["split"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", *split, "label", *[f"p_{c}" for c in file.classes]])
        for key, named, label, p in zip(file.keys, file.splits, file.labels, file.probs):
            writer.writerow([key, *([named] if split else []), file.classes[label], *[repr(float(v)) for v in p]])


def score_predictions(paths: list[Path], registries, *, out, label_column: str = "label", score_column: str | None = None,
                      split_column: str = "split", patient_column: str | None = None, positive_class: str | None = None,
                      threshold: float | None = None, threshold_rule: str = "youden", target: float = 0.95,
                      by: str | None = None, prevalence: float | None = None, n_resamples: int = 2000,
                      seed: int = 0) -> dict:
    """Every split of a predictions file, or of the mean of several for the same cases, scored as a
    medcls run scores its splits; writes metrics.json, report.md and report.html (and, for a mean,
    its predictions.csv) into `out` (a new or empty folder)."""
    files = [read_prediction_file(path, label_column=label_column, score_column=score_column,
                                  split_column=split_column, patient_column=patient_column,
                                  positive_class=positive_class) for path in paths]
    file = files[0] if len(files) == 1 else mean_prediction_file(files)
    if by is not None and by not in file.columns:
        raise DataError(f"predictions file '{file.path}' has no column {by!r} for --by "
                        f"(columns: {', '.join(file.columns)})")
    out = Path(out)
    chosen, how = operating_point(file, threshold, threshold_rule, target)
    metrics = list(registries["metrics"])
    splits = [s for s in SPLIT_ORDER if len(file.rows(s))]
    assessed, calibration, subgroups, differences = {}, {}, {}, {}
    for split in splits:
        rows = file.rows(split)
        patients = None if file.patients is None else file.patients[rows]
        options = dict(prevalence=prevalence, n_resamples=n_resamples, seed=seed)
        assessed[split] = assess(file.probs[rows], file.labels[rows], chosen, metrics, patients=patients,
                                 where=f"{split} rows of '{file.path.name}'", **options)
        if len(file.classes) == 2:
            calibration[split] = calibration_slope_intercept(file.labels[rows], file.probs[rows, 1], groups=patients,
                                                             n_resamples=n_resamples, seed=seed)
        if by is not None and split == splits[0]:
            subgroups = assess_subgroups(file.probs[rows], file.labels[rows], chosen, metrics, file.columns[by][rows],
                                         by, patients=patients, where=f"{split} rows: ", **options)
            differences = compare_subgroups(file.probs[rows], file.labels[rows], chosen, file.columns[by][rows],
                                            patients=patients, n_resamples=n_resamples, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    if len(files) > 1:
        write_prediction_file(file, out / "predictions.csv")
    main = splits[0]
    rows = file.rows(main)
    plots.plot_roc({main: (file.probs[rows], file.labels[rows], chosen)}, file.classes, out / "roc.png",
                   groups=None if file.patients is None else file.patients[rows], highlight=main)
    if len(file.classes) == 2:
        plots.plot_calibration(file.probs[rows], file.labels[rows], out / "calibration.png", main)
    result = {
        "source": [str(f.path) for f in files] if len(files) > 1 else str(file.path), "classes": file.classes,
        "threshold": chosen, "operating_point": how,
        **{s: assessed[s]["values"] for s in splits},
        "intervals": {s: assessed[s]["intervals"] for s in splits},
        "operating": {s: assessed[s]["operating"] for s in splits},
        "level": {s: assessed[s]["level"] for s in splits}, "notes": {s: assessed[s]["notes"] for s in splits},
        "per_class": {s: assessed[s]["per_class"] for s in splits},
        "calibration": calibration, "subgroups": subgroups, "subgroup_differences": differences, "splits": splits,
        "to_review": to_review(file, rows),
    }
    write_metrics_json(out / "metrics.json", result)
    score_document(file, result, assessed, by, out, [f.path for f in files]).write(out)
    result["out"] = str(out)
    return result


def to_review(file: PredictionFile, rows: np.ndarray, count: int = 10) -> list[dict]:
    """The rows (of the main split) given the lowest probability for their own label, by key; with
    their fold where the file has a fold column (medcls's oof_predictions.csv). With one class
    present (confirmed tumours only) these are the cases the model missed."""
    folds = file.columns.get("fold")
    cases = []
    for found in cases_at_odds(file.labels[rows], file.probs[rows], count):
        i = rows[found["index"]]
        fold = None if folds is None else (int(folds[i]) if str(folds[i]).strip().isdigit() else str(folds[i]))
        cases.append({"case": file.keys[i], "label": file.classes[file.labels[i]], "fold": fold,
                      "p_label": found["p_label"], "auc_without": found["auc_without"]})
    return cases


def score_document(file: PredictionFile, result: dict, assessed: dict, by: str | None, out: Path,
                   sources: list[Path]) -> Document:
    doc = Document(f"Scores of '{file.path.name}'" if len(sources) == 1 else
                   f"Scores of the mean of {len(sources)} prediction files")
    doc.heading("Cases")
    counts = [[s, str(len(file.rows(s))), "-" if file.patients is None else str(len(set(file.patients[file.rows(s)]))),
               ", ".join(f"{c} {int((file.labels[file.rows(s)] == i).sum())}" for i, c in enumerate(file.classes))]
              for s in result["splits"]]
    doc.table(["split", "rows", "patients", "per class"], counts)
    source = f"`{file.path}`" if len(sources) == 1 else (
        "the mean of the class probabilities (soft voting) of " + ", ".join(f"`{p}`" for p in sources)
        + ", matched by key (predictions.csv here)")
    doc.bullets([f"Source: {source}; classes {', '.join(file.classes)}"
                 + (f" (positive: {file.classes[1]})." if len(file.classes) == 2 else "."),
                 f"Operating point: {result['operating_point']}."])
    for split in result["splits"]:
        doc.heading(f"{split.capitalize()} rows")
        add_assessment(doc, assessed[split], file.classes, f"{split} rows")
        slope = result["calibration"].get(split)
        if slope and not slope.get("not_computable"):
            doc.paragraph(f"Calibration slope {format_value(slope['slope'], slope_interval(slope), reason=True)} (ideal 1; "
                          f"{slope.get('method', 'no interval')}), intercept {slope['intercept']:.3f} (ideal 0).")
    doc.image(out / "roc.png", "ROC with 95% band")
    if (out / "calibration.png").exists():
        doc.image(out / "calibration.png", "Calibration")
    if result["subgroups"]:
        add_subgroups(doc, by, result["subgroups"], result["subgroup_differences"], out, f"{result['splits'][0]} rows")
    add_cases_to_review(doc, result["to_review"], f"the predictions (of the {result['splits'][0]} rows)")
    return doc


def compare_prediction_files(path_a, path_b, *, split: str | None = None, threshold_rule: str = "youden",
                             target: float = 0.95, **columns) -> dict:
    """Two prediction files for the same cases (matched by key): paired DeLong for ROC AUC (over
    patients when the first file has a patient column), exact McNemar for sensitivity and
    specificity, each at its own operating point from its validation rows."""
    a, b = (read_prediction_file(p, **columns) for p in (path_a, path_b))
    if a.classes != b.classes:
        raise DataError(f"'{a.path}' and '{b.path}' have different classes: {a.classes} vs {b.classes}")
    if len(a.classes) != 2:
        raise DataError(f"'{a.path}': comparing prediction files needs a binary task")
    chosen_split = split or next(s for s in SPLIT_ORDER if len(a.rows(s)))
    thresholds = [operating_point(f, None, threshold_rule, target)[0] for f in (a, b)]
    rows_a = a.rows(chosen_split)
    rows_b = matching_rows(a, rows_a, b, chosen_split)
    patients = None if a.patients is None else a.patients[rows_a]
    result = compare_predictions(a.labels[rows_a], a.probs[rows_a], b.probs[rows_b], *thresholds, groups=patients)
    result["split"] = chosen_split
    return result
