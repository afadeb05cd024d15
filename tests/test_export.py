"""Export: ONNX (checked with ONNX Runtime) and TorchScript give PyTorch's probabilities, with the
threshold and preprocessing beside them; 2D and 3D runs, and a 2D backbone read in 3D (ACS)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from tests.helpers import assert_one_line_error


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, args in {"2d": ["--backbone", "test_resnet", "--image-size", "32"],
                       "3d": ["--data", "synthetic3d", "--backbone", "example_tiny_cnn3d", "--set", "volume_size=8,16,16"],
                       "acs": ["--data", "synthetic3d", "--backbone", "test_resnet", "--set", "acs=true",
                               "--set", "volume_size=32"]}.items():
        result = CliRunner().invoke(cli, ["train", *args, "--no-pretrained", "--epochs", "1", "--finetune-epochs", "0",
                                          "--out", str(root / name), "--set", "bootstrap=50", "--set", "figures=false"])
        assert result.exit_code == 0, result.output
        made[name] = root / name
    return made


def pytorch_probs(run, images, registries):
    from medcls.core.runs import load_model

    model, _ = load_model(run, registries)
    with torch.no_grad():
        return model(images).float().softmax(1).numpy()


@pytest.mark.parametrize("kind", ["2d", "3d", "acs"])
def test_onnx_runtime_matches_pytorch(runs, kind, registries, tmp_path):
    import onnxruntime

    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", str(runs[kind]), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    description = json.loads((out / "export.json").read_text())
    info = json.loads((runs[kind] / "model.json").read_text())
    assert description["threshold"] == info["threshold"] and description["classes"] == info["classes"]
    assert description["run"] == runs[kind].name and description["weights_sha256"] == info["weights_sha256"]
    assert str(runs[kind].parent) not in (out / "export.json").read_text()  # no path of this machine
    shape = [5, *description["input"]["shape"][1:]]  # a batch size the export never saw
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"images": images.numpy()})[0]
    np.testing.assert_allclose(got, pytorch_probs(runs[kind], images, registries), atol=1e-4)


def test_torchscript_matches_pytorch(runs, registries, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(runs["2d"]), "--format", "torchscript", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    images = torch.rand(3, 1, 32, 32)
    got = torch.jit.load(str(tmp_path / "model.ts"))(images).detach().numpy()
    np.testing.assert_allclose(got, pytorch_probs(runs["2d"], images, registries), atol=1e-5)


def test_export_of_a_folder_without_a_model_is_a_one_line_error(tmp_path):
    assert_one_line_error(CliRunner().invoke(cli, ["export", str(tmp_path)]), "has no model.safetensors")


def test_each_format_gets_its_own_default_folder_and_description(runs, tmp_path):
    """Exporting ONNX and then TorchScript without -o keeps both, each export.json naming its own
    file (one shared RUN/export folder left model.onnx described by the TorchScript's export.json)."""
    import shutil

    run = shutil.copytree(runs["2d"], tmp_path / "run")
    for fmt in ("onnx", "torchscript"):
        result = CliRunner().invoke(cli, ["export", str(run), "--format", fmt])
        assert result.exit_code == 0, result.output
    assert json.loads((run / "onnx" / "export.json").read_text())["file"] == "model.onnx"
    assert json.loads((run / "torchscript" / "export.json").read_text())["file"] == "model.ts"
