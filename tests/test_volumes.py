"""Volumes: NIfTI and DICOM series read into one orientation with spacing, the training grid, every
kind of bad series as a one-line error, and 3D training end to end on the synthetic heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medcls.data.synthetic import synthetic_volume_cases, write_dicom_series, write_nifti, write_synthetic_volumes
from medcls.data.volumes import Volume, VolumeGrid, read_dicom_series, read_nifti_volume, to_grid
from medcls.errors import DataError


@pytest.fixture(scope="module")
def head():
    return synthetic_volume_cases(2, 32)[1].array  # with a lesion: not symmetric


def test_nifti_and_a_shuffled_dicom_series_give_the_same_volume(head, tmp_path):
    write_nifti(head.voxels, head.spacing, tmp_path / "head.nii.gz")
    write_dicom_series(head.voxels, head.spacing, tmp_path / "series", seed=7)  # files in random order
    from_nifti, from_dicom = read_nifti_volume(tmp_path / "head.nii.gz"), read_dicom_series(tmp_path / "series")
    assert np.array_equal(from_nifti.voxels, head.voxels) and np.array_equal(from_dicom.voxels, head.voxels)
    assert from_nifti.spacing == from_dicom.spacing == head.spacing
    assert from_dicom.modality == "MR"


def test_non_ras_nifti_is_reoriented_to_ras(head, tmp_path):
    import nibabel as nib

    xyz = head.voxels.transpose(2, 1, 0)
    # Stored as L-P-S with x and y flipped, then with the axes permuted (y, z, x): same anatomy.
    lps = np.diag([-head.spacing[2], -head.spacing[1], head.spacing[0], 1.0])
    lps[:3, 3] = [(xyz.shape[0] - 1) * head.spacing[2], (xyz.shape[1] - 1) * head.spacing[1], 0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz[::-1, ::-1, :]), lps), str(tmp_path / "lps.nii.gz"))
    permuted = np.zeros((4, 4))
    permuted[[1, 2, 0], [0, 1, 2]] = [head.spacing[1], head.spacing[0], head.spacing[2]]
    permuted[3, 3] = 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz.transpose(1, 2, 0)), permuted), str(tmp_path / "yzx.nii.gz"))
    for name in ("lps.nii.gz", "yzx.nii.gz"):
        volume = read_nifti_volume(tmp_path / name)
        assert np.array_equal(volume.voxels, head.voxels), name
        assert volume.spacing == head.spacing, name


def test_nibabels_own_test_files():
    from nibabel.testing import data_path

    anatomical = read_nifti_volume(Path(data_path) / "anatomical.nii")
    assert anatomical.voxels.ndim == 3 and all(s > 0 for s in anatomical.spacing)
    with pytest.raises(DataError, match=r"example4d.nii.gz' has shape \(128, 96, 24, 2\).*one 3D file per volume"):
        read_nifti_volume(Path(data_path) / "example4d.nii.gz")


def test_a_4d_file_with_one_volume_is_read_as_3d(head, tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(head.voxels.transpose(2, 1, 0)[..., None], np.eye(4)), str(tmp_path / "one.nii"))
    assert read_nifti_volume(tmp_path / "one.nii").voxels.shape == (32, 32, 16)[::-1]


def test_a_2d_or_4d_nifti_given_as_a_volume_names_the_fix(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "slice.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(tmp_path / "dwi.nii.gz"))
    with pytest.raises(DataError, match="slice.nii.gz' has shape \\(8, 8\\), a 2D image: .*choose a 2D backbone"):
        read_nifti_volume(tmp_path / "slice.nii.gz")
    with pytest.raises(DataError, match="dwi.nii.gz' has shape \\(8, 8, 8, 3\\).*split a 4D series"):
        read_nifti_volume(tmp_path / "dwi.nii.gz")


@pytest.mark.parametrize("problem, message", [
    ("missing", "has a missing slice (a gap of 6.00 mm where slices are 3.00 mm apart)"),
    ("duplicate", "two slices at the same position (a duplicated slice)"),
    ("uneven", "uneven slice spacing"),
    ("orientation", "mixes 2 slice orientations"),
    ("two_series", "mixes 2 series: move each into its own folder, or name one in a 'series_uid'"),
    ("sizes", "mixes slice sizes"),
])
def test_broken_series_are_one_line_errors_naming_the_series(head, tmp_path, problem, message):
    import pydicom

    folder = tmp_path / "series"
    write_dicom_series(head.voxels, head.spacing, folder, skip=(5,) if problem == "missing" else ())
    files = sorted(folder.iterdir())
    if problem == "duplicate":
        ds = pydicom.dcmread(files[0])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / "copy.dcm")
    elif problem in ("uneven", "orientation", "two_series", "sizes"):
        ds = pydicom.dcmread(files[0])
        if problem == "uneven":
            # Shift one slice by a fifth of the spacing: no longer evenly spaced.
            ds.ImagePositionPatient = [0.0, 0.0, float(ds.ImagePositionPatient[2]) + 0.6]
        elif problem == "orientation":
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        elif problem == "two_series":
            write_dicom_series(head.voxels[:3], head.spacing, tmp_path / "other")
            for other in (tmp_path / "other").iterdir():
                other.rename(folder / f"other-{other.name}")
        else:
            ds.Rows, ds.Columns = 16, 64
        ds.save_as(files[0])
    with pytest.raises(DataError) as caught:
        read_dicom_series(folder)
    text = str(caught.value)
    assert message in text and str(folder) in text and "\n" not in text


def test_a_series_uid_picks_one_series_of_a_mixed_folder(head, tmp_path):
    import pydicom

    write_dicom_series(head.voxels, head.spacing, tmp_path / "mixed")
    write_dicom_series(head.voxels[:4], head.spacing, tmp_path / "other")
    for other in (tmp_path / "other").iterdir():
        other.rename(tmp_path / "mixed" / f"other-{other.name}")
    uid = str(pydicom.dcmread(next((tmp_path / "mixed").glob("other-*"))).SeriesInstanceUID)
    assert read_dicom_series(tmp_path / "mixed", series_uid=uid).voxels.shape[0] == 4


def test_grid_resizes_whole_volumes_or_resamples_to_a_spacing(head):
    whole = to_grid(head, VolumeGrid((8, 16, 16)))
    assert whole.shape == (1, 8, 16, 16) and whole.dtype == torch.float32
    assert float(whole.min()) >= 0 and float(whole.max()) <= 1
    # 16 x 32 x 32 voxels of 3 x 2 x 2 mm is 48 x 64 x 64 mm; at 4 mm that is 12 x 16 x 16 voxels,
    # centred in a 16 x 24 x 24 grid with zero padding around it.
    padded = to_grid(head, VolumeGrid((16, 24, 24), spacing=(4.0, 4.0, 4.0)))
    assert padded.shape == (1, 16, 24, 24)
    assert float(padded[0, :2].abs().max()) == 0 and float(padded[0, :, :4].abs().max()) == 0
    assert float(padded[0, 2:14, 4:20, 4:20].mean()) > 0.1
    cropped = to_grid(head, VolumeGrid((4, 8, 8), spacing=(1.0, 1.0, 1.0)))  # the central 4 x 8 x 8 mm
    assert cropped.shape == (1, 4, 8, 8)


def test_ct_volumes_use_the_window_and_mr_volumes_percentiles():
    hu = np.linspace(-1000, 1000, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    ct = Volume(hu, (1.0, 1.0, 1.0), modality="CT", window=(40.0, 400.0))
    grid = to_grid(ct, VolumeGrid((8, 8, 8)))
    expected = np.clip((hu + 160) / 400, 0, 1)
    np.testing.assert_allclose(grid[0].numpy(), expected, atol=1e-6)
    brain = to_grid(ct, VolumeGrid((8, 8, 8), window="brain"))
    np.testing.assert_allclose(brain[0].numpy(), np.clip((hu - 0) / 80, 0, 1), atol=1e-6)
    mr = to_grid(Volume(hu, (1.0, 1.0, 1.0), modality="MR"), VolumeGrid((8, 8, 8)))
    assert float(mr.min()) == 0.0 and float(mr.max()) == 1.0


def test_a_volume_too_large_for_the_grid_says_how_large(head):
    with pytest.raises(DataError, match=r"\(16, 32, 32\) voxels \(0.0 GiB as float32\).*coarser volume_spacing"):
        to_grid(head, VolumeGrid((8, 16, 16), max_voxels=1000))


def test_a_reader_that_returns_no_volume_is_named():
    with pytest.raises(DataError, match="returned ndarray, not medcls.data.volumes.Volume"):
        to_grid(np.zeros((4, 4, 4)), VolumeGrid((4, 4, 4)))


def test_bad_volume_size_is_a_clear_error():
    from medcls.data.volumes import parse_triple

    with pytest.raises(DataError, match="volume_size '32,32' must be one positive number or three"):
        parse_triple("32,32", "volume_size", int)


def test_folder_of_series_and_volumes_becomes_one_case_each(registries, tmp_path):
    from medcls.config import make_config
    from medcls.data.loading import load_cases

    write_synthetic_volumes(tmp_path / "dicom", 6, 16, fmt="dicom")
    write_synthetic_volumes(tmp_path / "nifti", 6, 16, fmt="nifti")
    for fmt in ("dicom", "nifti"):
        cases, layout, _ = load_cases(make_config({"data": str(tmp_path / fmt), "backbone": "example_tiny_cnn3d"}),
                                      registries)
        assert layout == "folder" and len(cases) == 6 and {c.label for c in cases} == {"normal", "tumour"}
    # A 2D backbone on volumes: the 2D NIfTI reader names the way out.
    from medcls.data.prepared import prepare_data

    with pytest.raises(DataError, match="none of the 6 images.*use a 3D backbone"):
        prepare_data(make_config({"data": str(tmp_path / "nifti"), "backbone": "test_resnet"}), registries,
                     split=False)


def test_3d_policies_augment_volume_batches(registries):
    from medcls.config import make_config
    from medcls.core.augment import make_policy

    volumes = torch.rand(3, 1, 8, 16, 16)
    for name in ("interpretable", "aggressive"):
        policy, _ = make_policy(make_config({"policy": name}), registries)
        out = policy.batch(volumes)
        assert out.shape == volumes.shape and not torch.equal(out, volumes)


@pytest.mark.slow
def test_3d_training_evaluate_and_predict_end_to_end(tmp_path):
    import csv

    from click.testing import CliRunner

    from medcls.cli import cli

    data = write_synthetic_volumes(tmp_path / "dicom", 24, 16, fmt="dicom")
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--backbone", "example_tiny_cnn3d", "--epochs", "2", "--finetune-epochs",
            "1", "--out", str(run), "--set", "volume_size=8,16,16", "--set", "bootstrap=100", "--set", "figures=false", "--policy", "interpretable"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (run / "model.safetensors").exists() and (run / "report.html").exists()
    assert "random initialisation" in result.output  # no pretrained 3D weights: from scratch, said so
    assert "synthetic3d-" not in (run / "report.md").read_text() + result.output  # patient ids never shown
    assert CliRunner().invoke(cli, ["evaluate", str(run)]).exit_code == 0
    out = tmp_path / "pred.csv"
    predicted = CliRunner().invoke(cli, ["predict", str(run), str(data / "tumour"), "-o", str(out)])
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and all(r["error"] == "" and r["predicted"] in ("normal", "tumour") for r in rows)


def test_pretrained_3d_backbone_without_weights_is_refused(tmp_path):
    from click.testing import CliRunner

    from medcls.cli import cli

    result = CliRunner().invoke(cli, ["train", "--data", "synthetic3d", "--backbone", "example_tiny_cnn3d",
                                      "--pretrained", "--out", str(tmp_path / "r")])
    assert result.exit_code == 3 and "has no pretrained weights: train it from scratch" in result.output


def test_ct_series_is_rescaled_to_hounsfield_units_after_cropping(tmp_path):
    hu = np.linspace(-1000, 1000, 6 * 8 * 8).reshape(6, 8, 8).round()
    write_dicom_series(hu, (2.0, 1.0, 1.0), tmp_path / "ct", modality="CT", rescale=(2.0, -1024.0))
    volume = read_dicom_series(tmp_path / "ct")
    assert volume.voxels.dtype == np.int16 and volume.rescale == (2.0, -1024.0)  # stored values kept
    grid = to_grid(volume, VolumeGrid((6, 8, 8), window="40,400"))
    expected = np.clip((((hu + 1024) / 2).round() * 2 - 1024 + 160) / 400, 0, 1)
    np.testing.assert_allclose(grid[0].numpy(), expected, atol=1e-6)


def test_2d_backbone_reads_volumes_slice_by_slice(registries):
    from medcls.core.models import build_classifier

    model, _ = build_classifier(registries, "test_resnet", 2, 1, 0.0, False, slices=3, slice_pooling="attention")
    assert model.backbone.spatial_dims == 3 and model.mean.shape == (1, 1, 1, 1, 1)
    volumes = torch.rand(2, 1, 5, 32, 32)
    assert model(volumes).shape == (2, 2)
    # One volume's score does not depend on the other volumes of its batch.
    model.eval()
    torch.testing.assert_close(model(volumes[:1]), model(volumes)[:1])
    model.set_trainable(0)  # stage 1: the attention pooling is as new as the head and trains with it
    assert all(p.requires_grad for p in model.backbone.attention.parameters())
    assert not any(p.requires_grad for p in model.backbone.backbone.parameters())


@pytest.mark.parametrize("backbone, slices, message", [
    ("test_resnet", 2, "odd number of slices"), ("example_tiny_cnn3d", 3, "needs a 2D backbone"),
])
def test_bad_slice_settings_are_refused(registries, backbone, slices, message):
    from medcls.errors import ConfigError
    from medcls.core.models import build_classifier

    with pytest.raises(ConfigError, match=message):
        build_classifier(registries, backbone, 2, 1, 0.0, False, slices=slices)


@pytest.mark.slow
def test_2_5d_training_and_prediction_end_to_end(tmp_path):
    import csv

    from click.testing import CliRunner

    from medcls.cli import cli

    data = write_synthetic_volumes(tmp_path / "nifti", 24, 16, fmt="nifti")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--backbone", "test_resnet", "--no-pretrained",
                                      "--epochs", "1", "--finetune-epochs", "1", "--out", str(run), "--set", "slices=3",
                                      "--set", "slice_pooling=max", "--set", "volume_size=8,32,32",
                                      "--set", "bootstrap=100", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "pred.csv"
    assert CliRunner().invoke(cli, ["predict", str(run), str(data / "normal"), "-o", str(out)]).exit_code == 0
    assert len(list(csv.DictReader(out.open()))) == 12


def test_a_csv_manifest_carries_volumes_and_picks_series(registries, head, tmp_path):
    import pydicom

    from medcls.config import make_config
    from medcls.data.cases import ReaderTable
    from medcls.data.loading import load_cases

    write_nifti(head.voxels, head.spacing, tmp_path / "a.nii.gz")
    write_dicom_series(head.voxels, head.spacing, tmp_path / "mixed")
    write_dicom_series(head.voxels[:4], head.spacing, tmp_path / "other")
    for other in (tmp_path / "other").iterdir():
        other.rename(tmp_path / "mixed" / f"other-{other.name}")
    uid = str(pydicom.dcmread(next((tmp_path / "mixed").glob("other-*"))).SeriesInstanceUID)
    (tmp_path / "cases.csv").write_text(f"path,label,series_uid\na.nii.gz,yes,\nmixed,no,{uid}\n")
    cases, layout, readers = load_cases(make_config({"data": str(tmp_path / "cases.csv"),
                                                     "backbone": "example_tiny_cnn3d"}), registries)
    assert layout == "csv" and isinstance(readers, ReaderTable) and readers.dims == 3
    assert readers.read(cases[0]).voxels.shape == (16, 32, 32)
    assert readers.read(cases[1]).voxels.shape[0] == 4  # the series the manifest names


@pytest.mark.parametrize("data, backbone, message", [
    ("synthetic3d", "test_resnet", "is a volume and the backbone reads 2D images: choose a 3D backbone"),
    ("synthetic", "example_tiny_cnn3d", "is a 2D image and the backbone reads volumes"),
])
def test_volumes_and_images_given_to_the_wrong_backbone_are_one_line_errors(tmp_path, data, backbone, message):
    from click.testing import CliRunner

    from medcls.cli import cli
    from tests.helpers import assert_one_line_error

    result = CliRunner().invoke(cli, ["train", "--data", data, "--backbone", backbone, "--no-pretrained",
                                      "--out", str(tmp_path / "run")])
    assert_one_line_error(result, message)


def test_a_3d_backbone_on_a_folder_of_2d_images_says_why(image_folder, tmp_path):
    from click.testing import CliRunner

    from medcls.cli import cli
    from tests.helpers import assert_one_line_error

    result = CliRunner().invoke(cli, ["train", "--data", str(image_folder), "--backbone", "example_tiny_cnn3d",
                                      "--out", str(tmp_path / "run")])
    assert_one_line_error(result, "has no readable volumes (NIfTI files or DICOM series folders): the backbone is 3D")


def test_crop_foreground_on_a_volume_backbone_is_refused_with_the_fix(registries):
    from medcls.config import TrainConfig
    from medcls.data.loading import load_cases
    from medcls.errors import ConfigError

    pytest.importorskip("medcls_example", reason="the example plugin (a 3D backbone) is not installed")
    config = TrainConfig(data="synthetic3d", backbone="example_tiny_cnn3d", crop_foreground=True)
    with pytest.raises(ConfigError, match="crop_foreground cuts 2D images.*drop crop_foreground"):
        load_cases(config, registries)


@pytest.mark.slow
def test_auto_grid_comes_from_dicom_series_headers_and_is_kept_with_the_run(tmp_path):
    import yaml
    from click.testing import CliRunner

    from medcls.cli import cli
    from medcls.data.cases import Case
    from medcls.data.loading import source_grid

    data = write_synthetic_volumes(tmp_path / "dicom", 24, 20, fmt="dicom")
    series = next((data / "tumour").iterdir())
    assert source_grid(Case(key="s", label="tumour", path=series)) == read_dicom_series(series).voxels.shape
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--backbone", "example_tiny_cnn3d", "--epochs", "1",
                                      "--finetune-epochs", "0", "--out", str(run), "--set", "bootstrap=50", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    assert "volume_size auto: 16,20,20 voxels" in result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["volume_size"] == "16,20,20"  # evaluate reads this
    assert CliRunner().invoke(cli, ["evaluate", str(run)]).exit_code == 0
