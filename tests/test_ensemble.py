"""Ensembles: bagging by patient, probabilities averaged, and an ensemble run that evaluates,
predicts and exports like a single model, reported beside its members."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from medcls.cli import cli
from medcls.core.models import Ensemble
from medcls.workflows.ensemble import bootstrap_rows


def test_bagging_draws_whole_patients_with_replacement():
    rows = np.arange(12)
    patients = np.repeat([f"p{i}" for i in range(6)], 2)
    sample = bootstrap_rows(rows, patients, np.random.default_rng(0))
    drawn = patients[sample]
    assert len(sample) == 12 and len(set(drawn)) < 6  # with replacement: some patients twice, some never
    for patient in set(drawn):
        assert (drawn == patient).sum() % 2 == 0  # both images of a drawn patient, every time


def test_the_ensemble_is_the_average_of_its_members_probabilities():
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.rand(5, 4)
    expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
    torch.testing.assert_close(Ensemble(members)(x).softmax(1), expected)


@pytest.mark.slow
def test_ensemble_run_reports_members_and_works_like_a_single_model(tmp_path):
    run = tmp_path / "ensemble"
    result = CliRunner().invoke(cli, ["train", "--backbone", "test_resnet", "--no-pretrained", "--image-size", "32",
                                      "--epochs", "1", "--finetune-epochs", "0", "--ensemble", "2", "--out", str(run),
                                      "--set", "bootstrap=100", "--set", "figures=false", "--set", "ensemble_backbones=test_resnet,example_tiny_cnn"])
    assert result.exit_code == 0, result.output
    assert (run / "member-1" / "model.safetensors").exists() and (run / "member-2" / "model.safetensors").exists()
    assert json.loads((run / "model.json").read_text())["ensemble"] == {
        "members": 2, "bagging": True, "backbones": ["test_resnet", "example_tiny_cnn"]}
    assert "Ensemble members (test split)" in (run / "report.md").read_text()
    assert "Members' test ROC AUC" in result.output
    evaluated = CliRunner().invoke(cli, ["evaluate", str(run), "--bootstrap", "100"])
    assert evaluated.exit_code == 0, evaluated.output
    saved = json.loads((run / "metrics.json").read_text())["test"]["roc_auc"]
    again = json.loads((run / "evaluation" / "metrics.json").read_text())["test"]["roc_auc"]
    assert abs(saved - again) < 1e-6
    assert CliRunner().invoke(cli, ["export", str(run), "-o", str(tmp_path / "onnx")]).exit_code == 0
