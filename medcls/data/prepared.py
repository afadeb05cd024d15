"""Data made ready for a run: cases, labels, patient-grouped splits, duplicates and the decoded images."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from medcls.errors import DataError
from medcls.logs import stage

if TYPE_CHECKING:
    from medcls.config import TrainConfig


SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}  # the order training needs images in


@dataclass
class PreparedData:
    """Cases with labels, splits and content hashes, and the decoded image cache."""

    cases: list
    classes: list[str]
    labels: np.ndarray  # class index per case
    splits: np.ndarray  # 'train'/'val'/'test' per case ('' when not split)
    hashes: list[str]
    cache: object  # medcls.data.images.ImageCache
    format_name: str
    duplicates: list[list[str]]
    warnings: list[str] = field(default_factory=list)
    multi_label: bool = False  # labels are (N, findings) float: 1, 0 or NaN (ignored), `classes` the findings
    tasks: list = field(default_factory=list)  # multi-task: auxiliary heads (medcls.data.tasks.Task)
    task_targets: np.ndarray | None = None  # (N, tasks) float: class index or number per case, NaN: blank

    def training_targets(self, rows: np.ndarray, tasks: list | None = None) -> np.ndarray:
        """What the loss sees per image: the label, or with auxiliary tasks an (n, 1 + tasks) float
        array: the main class index, then each task's target (regression standardised by `tasks`)."""
        labels = self.cache_labels(rows)
        if not self.tasks:
            return labels
        extra = self.task_targets[self.cache.kept[rows]].copy()
        for j, task in enumerate(tasks or self.tasks):
            if task.kind == "regression":
                extra[:, j] = (extra[:, j] - task.mean) / task.std
        return np.column_stack([labels.astype(np.float64), extra]).astype(np.float32)

    def cache_task_targets(self, rows: np.ndarray) -> np.ndarray:
        return self.task_targets[self.cache.kept[rows]]

    def rows(self, split: str | None = None) -> np.ndarray:
        """Positions in the image cache of the readable cases of `split` (all when None)."""
        kept = self.cache.kept
        return np.flatnonzero(self.splits[kept] == split) if split else np.arange(len(kept))

    def keys(self, rows: np.ndarray) -> list[str]:
        """Each image's key (its file, or 'source#split/index' for arrays)."""
        return [self.cases[i].key for i in self.cache.kept[rows]]

    def cache_labels(self, rows: np.ndarray) -> np.ndarray:
        return self.labels[self.cache.kept[rows]]

    def patients(self, rows: np.ndarray) -> np.ndarray | None:
        """Patient id per image (an image without one is its own patient); None when no case has one."""
        cases = [self.cases[i] for i in self.cache.kept[rows]]
        if all(c.patient_id is None for c in cases):
            return None
        return np.array([c.patient_id if c.patient_id is not None else f"image:{c.key}" for c in cases], dtype=object)

    def column(self, rows: np.ndarray, name: str) -> np.ndarray:
        """A manifest column's value per image, for subgroup tables."""
        available = sorted({k for c in self.cases for k in c.attributes})
        if name not in available:
            raise DataError(f"--by column {name!r} does not exist in the data (available: "
                            f"{', '.join(available) or 'none: only CSV manifests carry columns'})")
        return np.array([self.cases[i].attributes.get(name, "") for i in self.cache.kept[rows]], dtype=object)

    def batches(self, rows: np.ndarray):
        def iterate(batch_size: int):
            self.cache.prioritise(rows)
            for start in range(0, len(rows), batch_size):
                yield self.cache.batch(rows[start:start + batch_size])
        return iterate

    def complete(self) -> list[str]:
        """Wait for images still decoding in the background; returns the new warnings. Unreadable
        images leave the splits, so `rows()` must be asked again afterwards."""
        before = len(self.cache.failures)
        self.cache.complete()
        if len(self.cache.failures) == before:
            return []
        warning = skipped_warning(self.cache.failures)
        self.warnings.append(warning)
        return [warning]


def skipped_warning(failures) -> str:
    return (f"skipped {len(failures)} unreadable image(s), listed in the report; "
            f"first: {failures[0][1]} (use --strict to stop instead)")


def hash_all(cases) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    def digest(case):
        try:
            return case.content_hash()
        except OSError:
            return f"missing:{case.key}"  # unreadable: reported when decoding; unique so never linked

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(digest, cases))


def image_store(config: TrainConfig, readers, registries):
    """The disk store for this preprocessing: what changes the decoded pixels is in the key."""
    from medcls.data.images import ImageStore, default_store_root

    from medcls.data.loading import training_grid

    # The readers by identity (plugin, version, a hash of their code): a changed reader decodes again.
    settings = {"size": repr(training_grid(config, registries)), **{k: str(v) for k, v in readers.settings.items()},
                "readers": ",".join(sorted(registries.identity(entry) for entry in readers.readers))}
    return ImageStore(config.cache_dir or default_store_root(), settings)


def prepare_data(config: TrainConfig, registries, *, split: bool = True, background: bool = False,
                 known_classes: list[str] | None = None) -> PreparedData:
    """Load cases, find duplicates, split by patient/content group, decode every image once
    (with `background`, training images first, while the caller trains: see decode_all).
    `known_classes`: a trained run's classes, which single-label cases must come from; new data
    may hold only some of them (a set of confirmed tumours scores sensitivity). Multi-label data
    keeps its own findings (the caller orders them)."""
    from medcls.data.decoding import decode_all
    from medcls.data.loading import class_names, load_cases, sizes_from_sources, training_grid
    from medcls.data.splits import (assign_splits, conflicting_copies, duplicate_sets, leakage_warnings,
                                     linked_groups)

    config = sizes_from_sources(config, registries)  # 'auto' sizes as numbers (already, from a run)
    cases, format_name, readers = load_cases(config, registries)
    multi_label = any(case.findings is not None for case in cases)
    if multi_label:
        classes, labels = finding_targets(cases, config)
    elif known_classes is not None:
        classes = list(known_classes)
        labels = np.array([index_of_known(c.label, classes, config.data) for c in cases], dtype=np.int64)
    else:
        classes = class_names(cases, config.positive_class, config.data)
        labels = np.array([classes.index(c.label) for c in cases], dtype=np.int64)
    tasks, targets = [], None
    if config.tasks:
        from medcls.data.tasks import parse_tasks, task_targets

        if multi_label:
            raise DataError("tasks (multi-task heads) cannot be combined with multi-label findings yet: use one of them")
        tasks, targets = task_targets(cases, parse_tasks(config.tasks), config.data, config.label_column)
    hashes = hash_all(cases)
    duplicates = duplicate_sets(cases, hashes)
    splits = np.array([""] * len(cases), dtype=object)
    warnings = conflicting_copies(cases, hashes, labels, classes)
    if split:
        groups = linked_groups(cases, hashes)
        split_seed = config.seed if config.split_seed is None else config.split_seed
        try:
            splits = assign_splits(cases, labels, groups, config.val_fraction, config.test_fraction, split_seed,
                                   classes)
        except DataError as error:
            raise DataError(f"data source '{config.data}': {error}") from None
        if any(case.split for case in cases) and not any(case.split == "test" for case in cases):
            warnings.append(f"the data set's own split has no test cases: {int((splits == 'test').sum())} training "
                            f"images (whole patients) were held out as the test split (test_fraction "
                            f"{config.test_fraction})")
        warnings += leakage_warnings(cases, hashes, splits)
    store = image_store(config, readers, registries) if config.cache == "disk" else None
    order = sorted(range(len(cases)), key=lambda i: SPLIT_ORDER.get(splits[i], 3))
    if background:  # training follows the decoding, which the epochs' progress shows
        cache = decode_all(cases, readers, training_grid(config, registries), config.channels, strict=config.strict,
                           hashes=hashes, store=store, background=True, order=order)
    else:
        with stage(f"decoding {len(cases)} images (or reading them from the disk cache)", total=len(cases),
                   unit="img") as advance:
            cache = decode_all(cases, readers, training_grid(config, registries), config.channels,
                               strict=config.strict, hashes=hashes, store=store, order=order, progress=advance)
    if cache.failures:
        warnings.append(skipped_warning(cache.failures))
    return PreparedData(cases, classes, labels, np.asarray(splits, dtype=str), hashes, cache, format_name,
                        duplicates, warnings, multi_label, tasks, targets)


def index_of_known(label: str, classes: list[str], source: str) -> int:
    if label in classes:
        return classes.index(label)
    spelled = [c for c in classes if c.lower() == label.lower()]
    hint = f" (the run spells it {spelled[0]!r}: rename the class to match)" if spelled else ""
    raise DataError(f"data '{source}' has class {label!r}, which the run was not trained on ({', '.join(classes)}){hint}")


def finding_targets(cases, config: TrainConfig) -> tuple[list[str], np.ndarray]:
    """Multi-label: the findings and the (N, L) targets after the uncertain and blank policies; a
    finding that is never present (or never absent) cannot be learnt and is refused by name."""
    from medcls.data.findings import targets

    if config.positive_class is not None:
        raise DataError("positive_class applies to single-label tasks: each finding of a multi-label set is "
                        "its own positive class")
    if not all(case.findings is not None for case in cases):
        raise DataError(f"data source '{config.data}' mixes multi-label and single-label cases")
    names = list(cases[0].findings)
    labels = targets([case.findings for case in cases], names, config.uncertain, config.blank_findings)
    for j, name in enumerate(names):
        known = labels[:, j][~np.isnan(labels[:, j])]
        if not (known == 1).any() or not (known == 0).any():
            raise DataError(f"data source '{config.data}': finding {name!r} is {'never' if not (known == 1).any() else 'always'} "
                            "present (after the uncertain and blank policies): it cannot be learnt; "
                            "drop it from label_columns")
    return names, labels
