"""Real data from ../shared/data (skipped when absent, as on a user's machine)."""

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from medcls.config import make_config
from medcls.data.cases import ReaderTable
from medcls.data.decoding import decode_all
from medcls.data.loading import load_cases
from medcls.data.splits import assign_splits, duplicate_sets, leakage_warnings, linked_groups
from medcls.data.prepared import hash_all
from tests.helpers import SHARED_DATA

BRAIN = SHARED_DATA / "brain-tumour-mri"
CT = SHARED_DATA / "ct-contrast-dicom"
needs_brain = pytest.mark.skipif(not BRAIN.is_dir(), reason=f"{BRAIN} is absent (real data is not shipped)")
needs_ct = pytest.mark.skipif(not CT.is_dir(), reason=f"{CT} is absent (real data is not shipped)")
CT_FLAGS = {"data": str(CT / "overview.csv"), "path_column": "dicom_name", "label_column": "Contrast",
            "image_root": "dicom_dir", "patient_from_dicom": True}


@needs_brain
def test_brain_tumour_duplicates_stay_on_one_side(registries):
    cases, name, readers = load_cases(make_config({"data": str(BRAIN)}), registries)
    assert name == "folder" and len(cases) == 253
    hashes = hash_all(cases)
    duplicates = duplicate_sets(cases, hashes)
    assert len(duplicates) == 22 and sum(len(d) - 1 for d in duplicates) == 25
    labels = np.array([c.label == "yes" for c in cases], dtype=np.int64)
    for seed in range(5):
        splits = assign_splits(cases, labels, linked_groups(cases, hashes), 0.15, 0.15, seed)
        by_key = dict(zip((c.key for c in cases), splits))
        assert all(len({by_key[k] for k in group}) == 1 for group in duplicates)
        assert leakage_warnings(cases, hashes, splits) == []


@needs_brain
def test_brain_tumour_every_file_reads_whatever_its_mode(registries):
    cases, _, readers = load_cases(make_config({"data": str(BRAIN)}), registries)
    cache = decode_all(cases, readers, size=32)
    assert cache.failures == [] and cache.images.shape == (253, 1, 32, 32)


@needs_ct
def test_ct_manifest_with_header_patients_splits_by_patient(registries):
    config = make_config(CT_FLAGS)
    cases, name, readers = load_cases(config, registries)
    assert name == "csv" and len(cases) == 100 and {c.label for c in cases} == {"True", "False"}
    assert len({c.patient_id for c in cases}) == 54
    hashes = hash_all(cases)
    labels = np.array([c.label == "True" for c in cases], dtype=np.int64)
    splits = assign_splits(cases, labels, linked_groups(cases, hashes), 0.15, 0.15, 0)
    assert leakage_warnings(cases, hashes, splits) == []


@needs_ct
def test_ct_is_read_in_hounsfield_units_through_the_header_window(registries):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    cases, _, readers = load_cases(make_config(CT_FLAGS), registries)
    path = cases[0].path
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    center = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
    width = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
    expected = np.clip((hu - (center - width / 2)) / width, 0, 1)
    np.testing.assert_allclose(ReaderTable(registries["readers"]).read(cases[0])[0], expected, atol=1e-5)


@needs_ct
@pytest.mark.slow
def test_ct_training_never_prints_or_writes_a_patient_identifier(tmp_path):
    import pydicom

    patient_ids = {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in (CT / "dicom_dir").glob("*.dcm")}
    result = CliRunner().invoke(cli, [
        "train", "--data", str(CT / "overview.csv"), "--path-column", "dicom_name", "--label-column", "Contrast",
        "--image-root", "dicom_dir", "--patient-from-dicom", "--backbone", "test_resnet", "--no-pretrained",
        "--epochs", "1", "--finetune-epochs", "0", "--image-size", "32", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = result.output + "".join(p.read_text(errors="ignore") for p in tmp_path.iterdir()
                                      if p.suffix in (".csv", ".json", ".md", ".yaml"))
    leaked = [pid for pid in patient_ids if pid and pid in written]
    assert not leaked, f"{len(leaked)} patient identifier(s) leaked"
