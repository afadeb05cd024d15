"""Test-time augmentation: the views of each scheme, laterality, and the with/without report."""

import json

import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.errors import ConfigError
from medcls.core.tta import views


def test_ten_crops_are_four_corners_and_the_centre_plus_their_mirrors():
    images = torch.arange(2 * 1 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    ten = views(images, "crops", mirrors=True)
    assert len(ten) == 10 and all(v.shape == images.shape for v in ten)
    assert all(torch.equal(ten[i + 5], ten[i].flip(-1)) for i in range(5))
    # The top-left crop starts at the image's first pixel, the bottom-right ends at its last.
    assert ten[0][0, 0, 0, 0] == images[0, 0, 0, 0] and ten[3][0, 0, -1, -1] == images[0, 0, -1, -1]
    assert len(views(images, "crops", mirrors=False)) == 5
    flips = views(images, "flip", mirrors=True)
    assert len(flips) == 2 and torch.equal(flips[1], images.flip(-1))


def test_laterality_and_volumes_refuse_what_does_not_apply():
    with pytest.raises(ConfigError, match="laterality-sensitive run forbids"):
        views(torch.rand(1, 1, 8, 8), "flip", mirrors=False)
    with pytest.raises(ConfigError, match="crops is for 2D images"):
        views(torch.rand(1, 1, 4, 8, 8), "crops", mirrors=True)
    with pytest.raises(ConfigError, match="'rotate' is not one of none, flip, crops"):
        views(torch.rand(1, 1, 8, 8), "rotate", mirrors=True)


@pytest.mark.slow
def test_evaluate_reports_with_and_without_tta(tmp_path):
    run = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "--backbone", "test_resnet", "--no-pretrained", "--image-size", "32",
                                       "--epochs", "1", "--finetune-epochs", "0", "--out", str(run),
                                       "--set", "bootstrap=50", "--set", "figures=false"])
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(cli, ["evaluate", str(run), "--tta", "crops", "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["tta"] == "crops" and "roc_auc" in metrics["without_tta"]["test"]
    report = (run / "evaluation" / "report.md").read_text()
    assert "Test-time augmentation: without and with" in report and "paired DeLong p =" in report
