"""Patient-grouped, stratified splits that keep every copy of an image on one side, and a leakage check."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from medcls.data.cases import Case
from medcls.errors import DataError


def linked_groups(cases: list[Case], hashes: list[str]) -> np.ndarray:
    """Group index per case: cases sharing a patient or byte-identical content are linked (union-find)."""
    parent = list(range(len(cases)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    for i, (case, digest) in enumerate(zip(cases, hashes)):
        for key in (("patient", case.patient_id), ("content", digest)):
            if key[1] is None:
                continue
            if key in first_seen:
                parent[find(i)] = find(first_seen[key])
            else:
                first_seen[key] = i
    roots = [find(i) for i in range(len(cases))]
    _, group = np.unique(roots, return_inverse=True)
    return group


def duplicate_sets(cases: list[Case], hashes: list[str]) -> list[list[str]]:
    """Sets of byte-identical cases (two or more keys each), largest first."""
    by_hash: dict[str, list[str]] = defaultdict(list)
    for case, digest in zip(cases, hashes):
        by_hash[digest].append(case.key)
    return sorted((keys for keys in by_hash.values() if len(keys) > 1), key=len, reverse=True)


def conflicting_copies(cases: list[Case], hashes: list[str], labels: np.ndarray, classes: list[str]) -> list[str]:
    """A warning when byte-identical images carry different labels (one image cannot be both; a
    label error or a file filed twice), naming the first such pair by file and label."""
    first: dict[str, int] = {}
    conflicts = []
    for i, digest in enumerate(hashes):
        j = first.setdefault(digest, i)
        if j != i and not np.array_equal(labels[i], labels[j], equal_nan=True):
            conflicts.append((j, i))
    if not conflicts:
        return []
    j, i = conflicts[0]

    def label(k: int) -> str:
        if labels.ndim == 1:
            return classes[labels[k]]
        return ", ".join(f"{c}={'blank' if np.isnan(v) else int(v)}" for c, v in zip(classes, labels[k]))

    if cases[i].key == cases[j].key:
        example = f"'{cases[i].key}' is listed twice, as {label(j)} and as {label(i)}"
    else:
        example = f"'{cases[j].key}' ({label(j)}) = '{cases[i].key}' ({label(i)})"
    copies = "1 copy of an image carries" if len(conflicts) == 1 else f"{len(conflicts)} copies of images carry"
    return [f"{copies} a different label from its first copy, e.g. {example}: an image cannot be both; correct "
            "the label or remove the copy"]


def holdout(indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int,
            what: str, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (kept, held out ~fraction), stratified by label, whole groups only;
    `classes` names the labels in errors."""
    from sklearn.model_selection import StratifiedGroupKFold

    if fraction <= 0:
        return indices, indices[:0]
    n_splits = max(2, round(1.0 / fraction))
    n_groups = len(np.unique(groups[indices]))
    if n_groups < n_splits:
        raise DataError(
            f"only {n_groups} patients/image groups are left to hold out a {what} set of {fraction:.0%}: "
            f"add data, give explicit splits, or lower {what}_fraction"
        )
    if labels.ndim == 2:
        kept, held = next(multilabel_group_folds(labels[indices], groups[indices], n_splits, seed))
        return indices[kept], indices[held]
    for label in np.unique(labels[indices]):
        in_class = len(np.unique(groups[indices][labels[indices] == label]))
        if in_class < n_splits:
            name = f"class {classes[label]!r}" if classes else "a class"
            raise DataError(
                f"{name} has only {in_class} patient/image group(s) left, too few to hold out a stratified {what} "
                f"set of {fraction:.0%} (at least {n_splits} needed): add data or give explicit splits (a larger "
                f"{what}_fraction needs fewer groups)"
            )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept, held = next(folds.split(indices, labels[indices], groups[indices]))
    return indices[kept], indices[held]


def multilabel_group_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    """(rest, fold) positions per fold for multi-label data: iterative stratification (Sechidis et
    al. 2011, the `iterative-stratification` package) over whole groups, each group labelled with
    every finding any of its images has, so that every finding is spread over the folds and no
    patient is split."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    ids, index = np.unique(groups, return_inverse=True)
    known = np.nan_to_num(labels, nan=0.0)
    per_group = np.zeros((len(ids), labels.shape[1]))
    np.maximum.at(per_group, index, known)
    folds = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for rest_groups, fold_groups in folds.split(np.zeros(len(ids)), per_group):
        in_fold = np.isin(index, fold_groups)
        yield np.flatnonzero(~in_fold), np.flatnonzero(in_fold)


def assign_splits(cases: list[Case], labels: np.ndarray, groups: np.ndarray, val_fraction: float,
                  test_fraction: float, seed: int, classes: list[str] | None = None) -> np.ndarray:
    """'train'/'val'/'test' per case: the data set's own splits where given, else grouped holdouts."""
    splits = np.array([case.split or "" for case in cases], dtype=object)
    given = splits != ""
    if given.any() and not given.all():
        raise DataError(
            f"{int(given.sum())} cases have a split and {int((~given).sum())} do not: give every case a split or none"
        )
    everything = np.arange(len(cases))
    if not given.any():
        rest, test = holdout(everything, labels, groups, test_fraction, seed, "test", classes)
        splits[test] = "test"
        splits[rest] = "train"
    if given.any() and not (splits == "test").any() and test_fraction > 0:
        # The data set's own split has no test cases: hold some training patients out, as without a split.
        train = np.flatnonzero(splits == "train")
        if not len(train):
            raise DataError("the data set's own split has no training cases")
        kept, test = holdout(train, labels, groups, test_fraction, seed + 2, "test", classes)
        splits[test] = "test"
    if not (splits == "val").any():
        train = np.flatnonzero(splits == "train")
        if not len(train):
            raise DataError("the data set's own split has no training cases")
        kept, val = holdout(train, labels, groups, val_fraction / max(1e-9, 1 - test_fraction), seed + 1, "val",
                            classes)
        splits[val] = "val"
    for name, key in (("test", "test_fraction"), ("val", "val_fraction"), ("train", None)):
        if not (splits == name).any():
            fix = f"give {key} > 0 or a {name} split in the data" if key else "add training cases"
            raise DataError(f"no {name} cases after splitting {len(cases)} cases: {fix}")
    return splits.astype(str)


def leakage_warnings(cases: list[Case], hashes: list[str], splits: np.ndarray) -> list[str]:
    """Warnings when a patient or a byte-identical image appears in more than one split.

    Patient identifiers are never named, only counted; duplicate images are named by file.
    """
    warnings = []
    patient_splits: dict[str, set] = defaultdict(set)
    content_splits: dict[str, set] = defaultdict(set)
    content_keys: dict[str, list] = defaultdict(list)
    for case, digest, split in zip(cases, hashes, splits):
        if case.patient_id is not None:
            patient_splits[case.patient_id].add(split)
        content_splits[digest].add(split)
        content_keys[digest].append((case.key, split))
    shared_patients = sum(1 for s in patient_splits.values() if len(s) > 1)
    if shared_patients:
        warnings.append(f"leakage: {shared_patients} patient(s) have images in more than one split "
                        "(identifiers withheld); results on the held-out splits are optimistic")
    shared = [content_keys[d] for d, s in content_splits.items() if len(s) > 1]
    if shared:
        # The example pair lies in two different splits (a copy in the same split leaks nothing).
        first_key, first_split = shared[0][0]
        other_key, other_split = next((k, s) for k, s in shared[0] if s != first_split)
        example = f"'{first_key}' ({first_split}) = '{other_key}' ({other_split})"
        warnings.append(f"leakage: {len(shared)} byte-identical image(s) appear in more than one split, "
                        f"e.g. {example}; remove the copies or let medcls split the data")
    return warnings
