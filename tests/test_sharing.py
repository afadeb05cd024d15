"""Sharing a model: the model card in every run folder, and a Hugging Face-style folder that timm
loads without medcls and medcls loads back, both giving the run's own outputs."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import medcls
from medcls.cli import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.helpers import FAST

    out = tmp_path_factory.mktemp("sharing") / "run"
    # fp32: the exports run in fp32, and bf16 autocast (the default on CPUs with native bf16) moves
    # probabilities by more than the 1e-4 the tests compare them to.
    result = CliRunner().invoke(cli, ["train", *FAST, "--set", "precision=fp32", "--out", str(out)])
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
    # the Hub's metadata block, as huggingface_hub reads it, and the per-split data summary
    from huggingface_hub import ModelCard

    metadata = ModelCard.load(run / "MODEL_CARD.md").data.to_dict()
    assert metadata["library_name"] == "timm" and "medcls" in metadata["tags"] and metadata["license"] == "other"
    assert metadata["medcls_test_figures"][0] == {"name": "test_roc_auc", "value": round(metrics["test"]["roc_auc"], 4)}
    with open(run / "splits.csv", newline="") as fh:
        test = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    tumour = sum(r["label"] == "tumour" for r in test)
    assert f"| test | {len(test)} | {len({r['group'] for r in test})} | {len(test) - tumour} | {tumour} | " \
           f"{tumour / len(test):.3f} |" in card
    assert "Split by patient" in card and "run = medcls.load_run(" in card and "| epochs | 2 |" in card
    assert str(run.parent) not in card  # no absolute path of the data or the run


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

    # timm's own transform from the folder's config resizes the whole image to the square, as medcls
    # does (crop_mode squash), instead of cutting its middle out
    from PIL import Image
    from timm.data import create_transform

    wide = np.zeros((48, 96), np.uint8)
    wide[:, :12] = 255  # the left eighth is white: a centre crop would drop it
    transform = create_transform(**resolve_data_config({}, model=plain))
    shown = transform(Image.fromarray(wide)) * torch.tensor(data["std"]).view(-1, 1, 1) + torch.tensor(data["mean"]).view(-1, 1, 1)
    assert config["pretrained_cfg"]["crop_mode"] == "squash" and tuple(shown.shape[-2:]) == (48, 48)
    assert float(shown[..., :, 0].mean()) > 0.9 and float(shown[..., :, -1].mean()) < 0.1

    shared = medcls.load_run(folder)  # and back into medcls: the same probabilities and decisions
    np.testing.assert_allclose(shared.predict(images.numpy()[:, 0]), expected, atol=1e-6)
    assert shared.threshold == original.threshold and shared.classes == original.classes
    assert "## Performance" in (folder / "README.md").read_text()


def test_a_3d_or_plugin_backbone_is_refused_for_hf_with_the_fix(tmp_path):
    from medcls.core.runs import RunInfo
    from medcls.errors import ConfigError
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries
    from medcls.workflows.sharing import timm_architecture

    pytest.importorskip("medcls_monai", reason="the MONAI plugin is not installed")
    with pytest.raises(ConfigError, match="--format hf needs a 2D timm backbone.*--format onnx"):
        timm_architecture(RunInfo(backbone="monai:resnet10", spatial_dims=3), Registries(get_plugin_manager()))


@pytest.mark.parametrize("crop", [False, True], ids=["whole", "crop_foreground"])
@pytest.mark.slow
def test_monai_bundle_carries_the_schema_fields_and_monai_runs_it_to_medcls_probabilities(run, tmp_path, crop):
    """MONAI's own runner, in a separate process, on three PNGs (two sizes, one in colour for a
    greyscale model, one an object on a black border) gives the probabilities `medcls predict`
    gives; for a run trained with crop_foreground, the bundle cuts each image to its object too."""
    import csv
    import os
    import shutil
    import subprocess
    import sys

    from medcls.workflows.bundle import REQUIRED_METADATA, REQUIRED_TENSOR
    from tests.helpers import save_png

    if crop:  # the same weights, read as a crop_foreground run reads its images
        shutil.copytree(run, tmp_path / "run")
        uncropped, run = run, tmp_path / "run"
        from medcls.core.runs import info_digest

        info = {**json.loads((run / "model.json").read_text()), "crop_foreground": True}
        (run / "model.json").write_text(json.dumps({**info, "info_sha256": info_digest(info)}))
    bundle = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(run), "--format", "monai-bundle", "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert all(key in metadata for key in REQUIRED_METADATA)
    for tensors in metadata["network_data_format"].values():
        assert all(key in spec for spec in tensors.values() for key in REQUIRED_TENSOR)
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "normal", "1": "tumour"}
    assert (bundle / "models" / "model.ts").is_file() and (bundle / "docs" / "README.md").is_file()
    rng = np.random.default_rng(3)
    images = tmp_path / "images"
    framed = np.zeros((96, 96), dtype=np.uint8)
    framed[10:60, 30:90] = 80 + (rng.random((50, 60)) * 175).astype(np.uint8)
    save_png(images / "a.png", framed)
    save_png(images / "b.png", (rng.random((50, 70)) * 255).astype(np.uint8))
    save_png(images / "c.png", (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    ran = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(bundle),
                          "--config_file", str(bundle / "configs" / "inference.json"),
                          "--meta_file", str(bundle / "configs" / "metadata.json"), "--dataset_dir", str(images)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert ran.returncode == 0, ran.stderr[-2000:]
    with open(bundle / "eval" / "predictions.csv", newline="") as fh:
        theirs = {os.path.basename(row[0]): [float(v) for v in row[1:]] for row in csv.reader(fh)}
    ours = medcls.load_run(run, device="cpu").predictions([str(images)])
    assert sorted(theirs) == ["a.png", "b.png", "c.png"]
    for name, probs in zip(ours.inputs, ours.probabilities):
        np.testing.assert_allclose(theirs[os.path.basename(name)], probs, atol=1e-4)
    if crop:  # the crop reached the framed image: not the probabilities the whole image gives
        whole = medcls.load_run(uncropped, device="cpu").predict(str(images / "a.png"))
        assert np.abs(whole - ours.probabilities[[os.path.basename(n) for n in ours.inputs].index("a.png")]).max() > 1e-3
