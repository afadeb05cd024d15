"""Sharing a model: the model card in every run folder, and a Hugging Face-style folder that timm
loads without medcls and medcls loads back, both giving the run's own outputs."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import medcls
from medcls.cli import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.test_training import FAST

    out = tmp_path_factory.mktemp("sharing") / "run"
    result = CliRunner().invoke(cli, ["train", *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_run_has_a_model_card_with_its_figures(run):
    card = (run / "MODEL_CARD.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    for heading in ("## Intended use", "## Data", "## Performance", "## Operating point", "## Calibration",
                    "## Subgroups", "## Known limitations", "## Software"):
        assert heading in card
    assert f"| test | {metrics['test']['n']} | {metrics['test']['roc_auc']:.3f}" in card
    assert "No external validation" in card and "chosen on the validation split by `youden`" in card


def test_the_hf_folder_loads_in_timm_and_back_in_medcls_with_the_same_outputs(run, tmp_path):
    import timm
    from timm.data import resolve_data_config

    result = CliRunner().invoke(cli, ["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "hf"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["label_names"] == ["normal", "tumour"]
    assert "tag" not in config["pretrained_cfg"]  # not timm's ImageNet weights any more
    images = torch.rand(3, 1, 48, 48)
    original = medcls.load_run(run)
    expected = original.predict(images.numpy()[:, 0])

    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # timm alone, no medcls
    data = resolve_data_config({}, model=plain)
    normalised = (images - torch.tensor(data["mean"]).view(1, -1, 1, 1)) / torch.tensor(data["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        theirs = plain(normalised).softmax(1).numpy()
    np.testing.assert_allclose(theirs, expected, atol=1e-5)

    shared = medcls.load_run(folder)  # and back into medcls: the same probabilities and decisions
    np.testing.assert_allclose(shared.predict(images.numpy()[:, 0]), expected, atol=1e-6)
    assert shared.threshold == original.threshold and shared.classes == original.classes
    assert "## Performance" in (folder / "README.md").read_text()


def test_a_3d_or_plugin_backbone_is_refused_for_hf_with_the_fix(tmp_path):
    from medcls.errors import ConfigError
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries
    from medcls.workflows.sharing import timm_architecture

    pytest.importorskip("medcls_monai", reason="the MONAI plugin is not installed")
    with pytest.raises(ConfigError, match="--format hf needs a 2D timm backbone.*--format onnx"):
        timm_architecture({"backbone": "monai:resnet10", "spatial_dims": 3}, Registries(get_plugin_manager()))
