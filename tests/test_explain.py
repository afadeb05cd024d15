"""Grad-CAM explanations: heatmaps where the model looks (hot = important), PNGs per input and a grid."""

import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.workflows.explain import unit_range
from tests.helpers import assert_one_line_error


def test_the_most_important_region_is_hot():
    maps = torch.tensor([[[[0.0, 2.0], [4.0, 8.0]]], [[[3.0, 3.0], [3.0, 3.0]]]])
    scaled = unit_range(maps)
    assert scaled[0, 0, 1, 1] == 1.0 and scaled[0, 0, 0, 0] == 0.0  # unlike MONAI's default, not flipped
    assert torch.equal(scaled[1], torch.zeros_like(scaled[1]))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    result = CliRunner().invoke(cli, ["train", "--backbone", "test_resnet", "--no-pretrained", "--image-size", "32",
                                      "--epochs", "1", "--finetune-epochs", "0", "--out", str(out),
                                      "--set", "bootstrap=50", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_explain_writes_a_heatmap_per_image_and_a_grid(run, image_folder, tmp_path):
    (image_folder / "yes" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "cams"
    result = CliRunner().invoke(cli, ["explain", str(run), str(image_folder / "yes"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*-gradcam.png"))) == 12 and (out / "gradcam-grid.png").stat().st_size > 0
    assert "broken.png' cannot be decoded" in result.output


def test_explain_refuses_an_unknown_class(run, image_folder, tmp_path):
    assert_one_line_error(CliRunner().invoke(cli, ["explain", str(run), str(image_folder), "-o",
                                                   str(tmp_path / "cams"), "--class", "maybe"]), "--class 'maybe' is not one of")


@pytest.mark.slow
def test_explain_volumes_shows_the_middle_slice(tmp_path):
    from medcls.data.synthetic import write_synthetic_volumes

    run = tmp_path / "run3d"
    trained = CliRunner().invoke(cli, ["train", "--data", "synthetic3d", "--backbone", "example_tiny_cnn3d",
                                       "--epochs", "1", "--finetune-epochs", "0", "--out", str(run),
                                       "--set", "volume_size=8,16,16", "--set", "bootstrap=50", "--set", "figures=false"])
    assert trained.exit_code == 0, trained.output
    data = write_synthetic_volumes(tmp_path / "volumes", 4, 16, fmt="nifti")
    result = CliRunner().invoke(cli, ["explain", str(run), str(data), "-o", str(tmp_path / "cams")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cams").glob("*-gradcam.png"))) == 4
