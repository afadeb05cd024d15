"""patient_pattern: the patient id from each image's path (CheXpert's patientXXXX/studyY/, NIH's
00001234_000.png), so every view of a patient stays on one side of the split; a bad pattern or a
file it does not match is one line."""

import csv
import re

import numpy as np
import pytest

import medcls
from tests.helpers import TINY, assert_one_line_error, run, save_png


def chexpert_like(root, patients=30, views=2):
    rng = np.random.default_rng(0)
    for patient in range(patients):
        label = "yes" if patient % 2 else "no"
        for view in range(views):
            image = (rng.random((32, 32)) * 60).astype(np.uint8)
            if label == "yes":
                image[8:20, 8:20] = 220
            save_png(root / label / f"patient{patient:04d}" / f"study{view % 2 + 1}" / f"view{view}_frontal.png", image)
    return root


@pytest.mark.slow
def test_patients_come_from_the_path_and_stay_on_one_side(tmp_path):
    data = chexpert_like(tmp_path / "data")
    assert medcls.plan(data).fingerprint.patients is None  # without the pattern: each image its own patient
    assert medcls.plan(data, patient_pattern=r"patient\d+").fingerprint.patients == 30
    assert medcls.plan(data, patient_pattern=r"patient(\d+)/study").fingerprint.patients == 30  # first group
    result = run("train", *TINY, "--data", data, "--patient-pattern", r"patient\d+", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "r" / "splits.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    sides = {}
    for row in rows:
        patient = re.search(r"/patient(\d{4})/", row["key"]).group(1)
        sides.setdefault(patient, set()).add(row["split"])
    assert len(sides) == 30 and all(len(s) == 1 for s in sides.values())
    assert len({row["group"] for row in rows}) == 30
    assert "patient0" not in (tmp_path / "r" / "report.md").read_text().replace(str(data), "")


def test_a_bad_pattern_or_an_unmatched_file_is_one_line(tmp_path):
    data = chexpert_like(tmp_path / "data", patients=2, views=1)
    save_png(data / "no" / "loose.png", np.zeros((32, 32), np.uint8))
    result = run("train", *TINY, "--data", data, "--patient-pattern", r"patient\d+", "--out", tmp_path / "r")
    assert_one_line_error(result, "file 'no/loose.png' does not match patient_pattern", code=4)
    result = run("train", *TINY, "--data", data, "--patient-pattern", "patient(", "--out", tmp_path / "r2")
    assert_one_line_error(result, "patient_pattern = 'patient(' is invalid: not a regular expression", code=3)
    result = run("train", *TINY, "--patient-pattern", r"\d+", "--out", tmp_path / "r3")  # synthetic: arrays
    assert_one_line_error(result, "has no files (arrays)", code=3)
    assert not any((tmp_path / name).exists() for name in ("r", "r2", "r3"))
