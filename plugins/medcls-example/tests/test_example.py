"""The template plugin's own tests: what a third party copies along with the code. The contract
checks come from `medcls.testing`, so a plugin tests what medcls will rely on."""

import numpy as np

import medcls_example
import medcls
from medcls.testing import check_backbone, check_metric


def test_plugin_registers_backbone_and_metric():
    backbone = next(e for e in medcls.registered("backbones", "example_*") if e.name == "example_tiny_cnn")
    assert backbone.plugin == "example" and backbone.metadata["pretrained"] is False
    [metric] = medcls.registered("metrics", "youden_index")
    assert metric.metadata["needs_threshold"] is True


def test_backbones_keep_the_contract():
    check_backbone(medcls_example.tiny_cnn)
    check_backbone(medcls_example.tiny_cnn3d, in_chans=(1,), spatial_dims=3, size=16)


def test_youden_index():
    check_metric(medcls_example.youden_index, needs_threshold=True)
    y = np.array([0, 0, 1, 1])
    assert medcls_example.youden_index(y, None, np.array([0, 0, 1, 1])) == 1.0
    assert medcls_example.youden_index(y, None, np.array([0, 1, 1, 0])) == 0.0


def test_the_template_trains_as_copied(tmp_path):
    """`medcls train --backbone example_tiny_cnn` with no other flag about weights: it trains from scratch."""
    from click.testing import CliRunner

    from medcls.cli import cli

    result = CliRunner().invoke(cli, ["train", "--backbone", "example_tiny_cnn", "--data", "synthetic", "--image-size",
                                      "32", "--epochs", "1", "--finetune-epochs", "0", "--set", "bootstrap=50",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "random initialisation" in result.stderr and (tmp_path / "run" / "model.safetensors").is_file()
