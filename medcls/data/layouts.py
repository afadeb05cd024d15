"""Data set layouts: a folder per class (optionally under train/val/test), a CSV manifest, MedMNIST .npz."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medcls.data import findings
from medcls.data.cases import SPLIT_ALIASES, Case, DataOptions, normalise_split
from medcls.errors import DataError

MISSING_LABELS = {"nan", "na", "n/a", "null", "none", "missing", "?"}  # what spreadsheets write for no value
IGNORED_SUFFIXES = {".csv", ".txt", ".json", ".md", ".yaml", ".yml", ".toml", ".xml", ".html", ".pdf", ".zip"}


def is_folder(source: str) -> bool:
    return Path(source).is_dir()


def is_csv(source: str) -> bool:
    return source.lower().endswith((".csv", ".tsv")) and Path(source).is_file()


def is_npz(source: str) -> bool:
    return source.lower().endswith(".npz") and Path(source).is_file()


def candidate_files(folder: Path, options: DataOptions) -> list[Path]:
    """Image files below `folder` (for volumes also DICOM series folders): those a reader claims,
    skipping hidden and side-car files."""
    files, series_folders = [], set()
    volumes = options.readers is not None and options.readers.dims == 3
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if volumes and path.is_dir() and options.readers.can_read(path):
            files.append(path)
            series_folders.add(path)
            continue
        if not path.is_file() or (series_folders and not series_folders.isdisjoint(path.parents)):
            continue
        if path.suffix.lower() in IGNORED_SUFFIXES:
            continue
        if options.readers is None or options.readers.can_read(path):
            files.append(path)
    return files


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_folder(source: str, options: DataOptions) -> list[Case]:
    """`root/<class>/*` or `root/{train,val,test}/<class>/*`, as Keras's flow_from_directory."""
    root = Path(source)
    subdirs = class_folders(root)
    if not subdirs:
        raise DataError(f"data folder '{root}' has no class sub-folders: put each class's images in root/<class>/")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = ", ".join(d.name for d in subdirs if d not in split_dirs)
        raise DataError(
            f"data folder '{root}' mixes split folders ({', '.join(d.name for d in split_dirs)}) "
            f"with other folders ({others}): use either root/<split>/<class>/ or root/<class>/"
        )
    cases = []
    for split_dir in split_dirs or [root]:
        split = normalise_split(split_dir.name, str(split_dir)) if split_dirs else None
        classes = class_folders(split_dir)
        if not classes:
            raise DataError(f"split folder '{split_dir}' has no class sub-folders")
        for class_dir in classes:
            files = candidate_files(class_dir, options)
            if not files:
                volumes = options.readers is not None and options.readers.dims == 3
                raise DataError(
                    f"class folder '{class_dir}' has no readable volumes (NIfTI files or DICOM series folders): "
                    "the backbone is 3D; for 2D images choose a 2D backbone" if volumes else
                    f"class folder '{class_dir}' has no readable images: add images or remove the folder"
                )
            cases += [Case(key=str(f), label=class_dir.name, split=split, path=f) for f in files]
    return cases


def table_rows(fh, path: Path) -> csv.DictReader:
    """A CSV reader for a table as spreadsheets save it: tab-separated for .tsv; otherwise the
    header line's separator, ',' or the ';' that spreadsheet programs write in locales whose
    decimal mark is a comma."""
    header = fh.readline()
    fh.seek(0)
    if path.suffix.lower() == ".tsv":
        return csv.DictReader(fh, dialect=csv.excel_tab)
    return csv.DictReader(fh, delimiter=";" if header.count(";") > header.count(",") else ",")


def load_csv(source: str, options: DataOptions) -> list[Case]:
    """A manifest with one row per image; column names are mappable in the configuration."""
    manifest = Path(source)
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            rows = list(table_rows(fh, manifest))
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest '{manifest}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start}): save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)") from None
    except csv.Error as exc:
        raise DataError(f"manifest '{manifest}' is not a readable CSV ({exc}): check that it is a text table") from None
    if not rows:
        raise DataError(f"manifest '{manifest}' has no rows")
    columns = [c for c in rows[0].keys() if c is not None]  # None: cells beyond the header's columns
    patient_column = options.patient_column or ("patient_id" if "patient_id" in columns else None)
    split_column = options.split_column or ("split" if "split" in columns else None)
    label_columns = list(options.label_columns)
    needed = [("path_column", options.path_column)]
    needed += [("label_columns", c) for c in label_columns] or [("label_column", options.label_column)]
    needed += [("patient_column", patient_column), ("split_column", split_column)]
    for option, column in needed:
        if column is not None and column not in columns:
            raise DataError(
                f"manifest '{manifest}' has no column {column!r} (columns: {', '.join(columns) or 'none'}): "
                f"set {option} in the config or --{option.replace('_', '-')}"
            )
    root = Path(options.image_root) if options.image_root else manifest.parent
    if options.image_root and not root.is_absolute() and not root.exists():
        root = manifest.parent / options.image_root
    in_cells = options.multi_label and not label_columns
    names = findings.cell_findings([row.get(options.label_column) or "" for row in rows]) if in_cells else label_columns
    if in_cells and not names:
        raise DataError(f"manifest '{manifest}': column {options.label_column!r} names no findings: write them "
                        "'|'-separated (e.g. Effusion|Mass), or drop --set multi_label=true")
    cases, spellings = [], {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"manifest '{manifest}' line {number}"
        file_name, label = (row.get(options.path_column) or "").strip(), (row.get(options.label_column) or "").strip()
        found = None
        if label_columns:
            found = {name: findings.finding_value(row.get(name) or "", f"{where} column {name!r}") for name in names}
        elif in_cells:
            found = findings.findings_from_cell(label, names, where)
        if found is not None:
            label = findings.as_text(found)
        if not file_name or not label:
            raise DataError(f"{where}: empty {'path' if not file_name else 'label'}: fill it in or delete the row")
        if found is None and label.lower() in MISSING_LABELS:
            raise DataError(f"{where}: label {label!r} means a missing label: fill it in or delete the row")
        path = Path(file_name.replace("\\", "/"))
        path = path if path.is_absolute() else root / path
        patient = (row.get(patient_column) or "").strip() or None if patient_column else None
        split = normalise_split(row[split_column], where) if split_column and row.get(split_column) else None
        used = {options.path_column, options.label_column, patient_column, split_column, *label_columns}
        attributes = {k: (v or "").strip() for k, v in row.items() if k not in used and k is not None}
        cases.append(Case(key=str(path), label=label, patient_id=patient, split=split, path=path,
                          attributes=attributes, findings=found))
        if found is not None:
            continue
        spelled = spellings.setdefault(label.casefold(), (label, number))
        if spelled[0] != label:
            raise DataError(f"manifest '{manifest}' line {number}: label {label!r} differs from {spelled[0]!r} "
                            f"(line {spelled[1]}) only in case: write one class one way")
    return cases


def load_npz(source: str, options: DataOptions) -> list[Case]:
    """MedMNIST-style arrays: `{train,val,test}_images` and `*_labels`. Images (N, H, W), (N, H, W, C)
    or (N, C, H, W), or volumes (N, D, H, W) when the backbone reads volumes (MedMNIST 3D); uint8
    (0-255), floats in [0, 1], or other unsigned integers scaled by the set's maximum. Optional
    `class_names` names the classes in label order."""
    from medcls.data.arrays import array_cases

    try:
        archive = np.load(source, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"npz file '{source}' cannot be read ({exc}): give an .npz written by numpy.savez") from None
    cases = []
    volumes = options.readers is not None and options.readers.dims == 3
    with archive:
        names = read_npz_array(archive, source, "class_names") if "class_names" in archive.files else None
        for split in ("train", "val", "test"):
            if f"{split}_images" not in archive.files:
                continue
            images = read_npz_array(archive, source, f"{split}_images")
            if f"{split}_labels" not in archive.files:
                raise DataError(f"npz file '{source}': {split}_labels is missing: give one label per image")
            labels = read_npz_array(archive, source, f"{split}_labels")
            multi = labels.ndim == 2 and labels.shape[1] != 1
            found = npz_findings(labels, source, split, names) if multi else None
            labels = [findings.as_text(f) for f in found] if multi else \
                npz_labels(labels.reshape(-1), source, split, names)
            try:
                made = array_cases(npz_scaled(images, source, split), labels, split=[split] * len(labels),
                                   volumes=volumes, name=f"{source}#{split}")
            except DataError as exc:
                raise DataError(f"npz file '{source}' {split}_images: {exc}") from None
            for case, case_findings in zip(made, found or []):
                case.findings = case_findings
            cases += made
    for case in cases:  # keys as before: source#split/index
        prefix, _, index = case.key.rpartition("#")
        case.key = f"{prefix}/{index}"
    if not cases:
        raise DataError(f"npz file '{source}' has no train_images/val_images/test_images arrays (MedMNIST layout)")
    return cases


def read_npz_array(archive, source: str, name: str) -> np.ndarray:
    try:
        return archive[name]
    except ValueError as exc:  # object arrays need pickle, which medcls never loads
        raise DataError(f"npz file '{source}': {name} cannot be read without unpickling ({exc}); save it as a "
                        "numeric array") from None


def npz_findings(labels: np.ndarray, source: str, split: str, names) -> list[dict]:
    """Multi-label arrays (N, L) of 1 / 0 (and -1 uncertain), as MedMNIST's ChestMNIST: one finding
    per column, named by `class_names` (else finding_0, finding_1, ...)."""
    names = None if names is None else [str(n) for n in np.asarray(names).reshape(-1)]
    return findings.from_matrix(labels, names, f"npz file '{source}': {split}_labels")


def npz_labels(labels: np.ndarray, source: str, split: str, names) -> list:
    """Integer class labels (floats only when whole numbers), or class names by index."""
    if labels.dtype.kind in "iub":
        values = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise DataError(f"npz file '{source}': {split}_labels[{index}] = {labels[index].item()!r} is not a class: "
                            "labels must be whole numbers (or strings)")
        values = labels.astype(np.int64)
    elif labels.dtype.kind in "US":
        return [str(v) for v in labels]
    else:
        raise DataError(f"npz file '{source}': {split}_labels has dtype {labels.dtype}: give integers or strings")
    if names is None:
        return [str(v) for v in values]
    names = [str(n) for n in np.asarray(names).reshape(-1)]
    if values.min() < 0 or values.max() >= len(names):
        raise DataError(f"npz file '{source}': {split}_labels holds {int(values.max())} but class_names has "
                        f"{len(names)} names")
    return [names[v] for v in values]


def npz_scaled(images: np.ndarray, source: str, split: str) -> np.ndarray:
    """Unsigned integer images other than uint8 scaled to [0, 1] by the array's maximum."""
    if images.dtype.kind == "u" and images.dtype != np.uint8:
        return images.astype(np.float32) / max(float(images.max()), 1.0)
    if images.dtype.kind == "i":
        if images.size and images.min() < 0:
            raise DataError(f"npz file '{source}': {split}_images has negative values: scale it to [0, 1] or uint8")
        return images.astype(np.float32) / max(float(images.max()), 1.0)
    return images
