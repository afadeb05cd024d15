"""Splits: stratified, grouped by patient, byte-identical copies on one side; leakage is reported."""

import numpy as np

from medcls.data.cases import Case
from medcls.data.splits import (assign_splits, conflicting_copies, duplicate_sets, leakage_warnings,
                                linked_groups)


def make_cases(n=100, patients=None):
    return [Case(key=f"c{i}", label="ab"[i % 2], patient_id=None if patients is None else f"p{patients[i]}",
                 array=np.zeros((1, 2, 2), np.float32)) for i in range(n)]


def test_duplicates_and_patients_are_linked():
    cases = make_cases(5, patients=[0, 0, 1, 2, 3])
    hashes = ["h0", "h1", "h2", "h2", "h4"]  # c2 and c3 are byte-identical copies
    groups = linked_groups(cases, hashes)
    assert groups[0] == groups[1] and groups[2] == groups[3] and len(set(groups)) == 3
    assert duplicate_sets(cases, hashes) == [["c2", "c3"]]


def test_copies_with_different_labels_are_named():
    cases = make_cases(5)
    hashes = ["h0", "h1", "h0", "h1", "h4"]  # c0 = c2 (labels a, a: fine); c1 = c3 (b, b)
    assert conflicting_copies(cases, hashes, np.array([0, 1, 0, 1, 0]), ["a", "b"]) == []
    labels = np.array([0, 1, 1, 0, 0])  # now both pairs disagree
    (warning,) = conflicting_copies(cases, hashes, labels, ["normal", "tumour"])
    assert warning.startswith("2 copies of images carry a different label")
    assert "'c0' (normal) = 'c2' (tumour)" in warning and "correct the label or remove the copy" in warning
    # one file listed twice in a manifest; multi-label rows (NaN: not mentioned) compared whole
    twice = [Case(key="x.png", label=None), Case(key="x.png", label=None)]
    findings = np.array([[1.0, np.nan], [1.0, 0.0]])
    (warning,) = conflicting_copies(twice, ["h", "h"], findings, ["effusion", "oedema"])
    assert "'x.png' is listed twice, as effusion=1, oedema=blank and as effusion=1, oedema=0" in warning
    assert conflicting_copies(twice, ["h", "h"], findings[[0, 0]], ["effusion", "oedema"]) == []


def test_split_keeps_groups_together_and_stratifies():
    rng = np.random.default_rng(1)
    patients = rng.integers(0, 60, 300)
    cases = make_cases(300, patients=patients)
    labels = np.array([i % 2 for i in range(300)])
    hashes = [f"h{i}" for i in range(300)]
    hashes[5] = hashes[200]  # a copy across two patients links them
    groups = linked_groups(cases, hashes)
    splits = assign_splits(cases, labels, groups, 0.15, 0.15, seed=0)
    for group in np.unique(groups):
        assert len(set(splits[groups == group])) == 1
    for split in ("train", "val", "test"):
        share = (splits == split).mean()
        assert 0.05 < share < 0.8
        assert 0.3 < labels[splits == split].mean() < 0.7
    assert leakage_warnings(cases, hashes, splits) == []


def test_split_is_seeded():
    cases, labels = make_cases(80), np.array([i % 2 for i in range(80)])
    groups = linked_groups(cases, [f"h{i}" for i in range(80)])
    a = assign_splits(cases, labels, groups, 0.15, 0.15, seed=3)
    assert (a == assign_splits(cases, labels, groups, 0.15, 0.15, seed=3)).all()
    assert (a != assign_splits(cases, labels, groups, 0.15, 0.15, seed=4)).any()


def test_given_splits_are_kept_and_val_is_carved_from_train():
    cases = make_cases(60)
    for i, case in enumerate(cases):
        case.split = "test" if i < 10 else "train"
    labels = np.array([i % 2 for i in range(60)])
    splits = assign_splits(cases, labels, linked_groups(cases, [f"h{i}" for i in range(60)]), 0.15, 0.15, 0)
    assert (splits[:10] == "test").all() and (splits[10:] != "test").all() and (splits == "val").any()


def test_leakage_warning_counts_patients_without_naming_them():
    cases = make_cases(4, patients=[7, 7, 8, 9])
    hashes = ["a", "b", "c", "c"]
    warnings = leakage_warnings(cases, hashes, np.array(["train", "test", "train", "test"]))
    assert any("1 patient(s)" in w for w in warnings)
    assert any("'c2' (train) = 'c3' (test)" in w for w in warnings)
    assert not any("p7" in w for w in warnings)


def test_the_leakage_example_pair_lies_in_two_splits():
    """Three copies, two of them in train: the example names a train copy and the test copy."""
    cases = make_cases(4)
    warnings = leakage_warnings(cases, ["c", "c", "x", "c"], np.array(["train", "train", "val", "test"]))
    assert any("'c0' (train) = 'c3' (test)" in w for w in warnings)


def test_too_few_groups_in_a_class_is_a_clear_error():
    import pytest

    from medcls.errors import DataError

    # 12 cases, 9 of one class and 3 of the other: a 1-in-7 stratified holdout cannot be made.
    cases = make_cases(12)
    labels = np.array([0] * 9 + [1] * 3)
    with pytest.raises(DataError, match="a class has only 3 patient/image group.*test set of 15% .at least 7"):
        assign_splits(cases, labels, np.arange(12), 0.15, 0.15, seed=0)
    with pytest.raises(DataError, match="class 'tumour' has only 3 patient/image group"):
        assign_splits(cases, labels, np.arange(12), 0.15, 0.15, seed=0, classes=["normal", "tumour"])
