"""medcls-npy's own tests: each contract checked the way medcls will call it (`medcls.testing`), then
a training from the CLI that uses all six parts."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import medcls_npy
from medcls.cli import cli
from medcls.testing import check_backbone, check_metric, check_policy, check_reader


def test_contracts(tmp_path):
    check_backbone(medcls_npy.small_cnn)
    check_policy(medcls_npy.Invert, {"prob": 0.5})
    check_metric(medcls_npy.f2_score, needs_threshold=True)
    np.save(tmp_path / "a.npy", np.arange(64.0).reshape(8, 8))
    check_reader(medcls_npy.read_npy, tmp_path / "a.npy")


def write_cases(root: Path) -> Path:
    """Two findings on 16 x 16 arrays, two images per patient, in a JSON-lines manifest."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        finding = "lesion" if i % 2 else "clear"
        image = rng.normal(size=(16, 16))
        if finding == "lesion":
            image[4:10, 4:10] += 3
        np.save(root / f"{i}.npy", image)
        lines.append(json.dumps({"file": f"{i}.npy", "finding": finding, "patient": f"p{i // 4}_{i % 2}",
                                 "site": "ab"[i % 3 == 0]}))
    (root / "cases.jsonl").write_text("\n".join(lines) + "\n")
    return root / "cases.jsonl"


@pytest.mark.slow
def test_a_training_uses_all_six_parts(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    weights = tmp_path / "small_cnn.safetensors"  # the "released" weights, where the weight source looks
    save_file({k: v.contiguous() for k, v in medcls_npy.small_cnn(3).state_dict().items()}, str(weights))
    monkeypatch.setattr(medcls_npy, "WEIGHTS", weights)
    listed = CliRunner().invoke(cli, ["plugins"])
    assert listed.exit_code == 0 and '"distribution": "medcls-npy"' in listed.output.replace("'", '"')

    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(write_cases(tmp_path)), "--out", str(out),
                                      "--backbone", "small_cnn", "--policy", "invert", "--pretrained",
                                      "--image-size", "16", "--epochs", "2", "--finetune-epochs", "1",
                                      "--set", "positive_class=lesion", "--set", "bootstrap=50"])
    assert result.exit_code == 0, result.output
    assert "small_cnn_release" in json.loads((out / "model.json").read_text())["weights_origin"]
    used = {(row["plugin"], row["name"]) for row in json.loads((out / "manifest.json").read_text())["plugins"]}
    assert {("npy", "small_cnn"), ("npy", "invert"), ("npy", "jsonl"), ("npy", "f2_score")} <= used
    # the reported F2 is the metric applied to the run's own test decisions
    with open(out / "predictions.csv", newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row["split"] == "test"]
    truth = np.array([row["label"] == "lesion" for row in rows], dtype=int)
    decided = np.array([row["decision"] == "lesion" for row in rows], dtype=int)
    reported = json.loads((out / "metrics.json").read_text())["test"]["f2_score"]
    assert reported == medcls_npy.f2_score(truth, None, decided) or np.isnan(medcls_npy.f2_score(truth, None, decided))


def test_without_its_weights_the_backbone_is_not_offered_as_working(tmp_path, monkeypatch):
    monkeypatch.setattr(medcls_npy, "WEIGHTS", tmp_path / "absent.safetensors")
    result = CliRunner().invoke(cli, ["train", "--backbone", "small_cnn", "--pretrained", "--data", str(tmp_path)])
    assert result.exit_code == 3 and "is missing: copy the released weights there" in result.stderr
