"""`medcls experiment`: one setting varied, split fixed, seeds repeated, spread-aware verdicts."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from medcls.workflows.experiment import FINETUNE, exceeds_spread, settings_for
from tests.helpers import assert_one_line_error


def test_finetune_settings():
    assert settings_for("finetune", "frozen") == {"pretrained": True, "finetune_epochs": 0}
    assert settings_for("finetune", "all")["unfreeze_blocks"] == -1
    assert settings_for("finetune", "scratch") == {"pretrained": False}
    assert set(FINETUNE) == {"scratch", "frozen", "top", "all"}
    assert settings_for("policy", "none") == {"policy": "none"}


def test_exceeds_spread():
    assert exceeds_spread(np.array([0.90, 0.91, 0.92]), np.array([0.70, 0.71, 0.72]))
    assert not exceeds_spread(np.array([0.90, 0.70, 0.80]), np.array([0.82, 0.78, 0.75]))
    assert exceeds_spread(np.array([0.99, 0.99]), np.array([1.0, 1.0])) is None  # no spread to judge by
    assert exceeds_spread(np.array([0.9]), np.array([0.8])) is None


def tiny_experiment(out, vary: str, seeds: str = "0,1"):
    """`medcls experiment` of one-epoch runs of a tiny model on the synthetic set."""
    result = CliRunner().invoke(cli, ["experiment", "--vary", vary, "--seeds", seeds,
                                      "--backbone", "test_resnet", "--out", str(out), "--set", "pretrained=false",
                                      "--set", "epochs=1", "--set", "finetune_epochs=0", "--set", "image_size=32",
                                      "--set", "bootstrap=100", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_experiment_holds_the_split_fixed(tmp_path):
    out = tmp_path / "exp"
    result = tiny_experiment(out, "policy=none,aggressive")
    rows = list(csv.DictReader(open(out / "experiment.csv")))
    assert [(r["value"], r["seed"]) for r in rows] == [("none", "0"), ("none", "1"), ("aggressive", "0"), ("aggressive", "1")]
    split_files = [(out / f"policy={r['value']}" / f"seed{r['seed']}" / "splits.csv").read_text() for r in rows]
    assert len(set(split_files)) == 1  # every run saw the same train/val/test cases
    assert (out / "experiment.png").is_file() and "beyond seed spread" in (out / "experiment.md").read_text()
    assert "| aggressive |" in result.stdout
    from medcls.workflows.experiment import rewrite_from_csv

    table = (out / "experiment.md").read_text()
    (out / "experiment.md").unlink()
    assert set(rewrite_from_csv(out, "policy")) == {"none", "aggressive"}
    assert (out / "experiment.md").read_text() == table
    mean_accuracy = np.mean([float(r["test_accuracy"]) for r in rows if r["value"] == "none"])
    assert f"| {mean_accuracy:.3f} |" in table.split("Per run")[0]  # accuracy beside ROC AUC, per setting
    # An experiment.csv written before the accuracy column still re-tabulates (accuracy shown as nan).
    with open(out / "experiment.csv", newline="") as fh:
        old = [{k: v for k, v in r.items() if not k.startswith("test_accuracy")} for r in csv.DictReader(fh)]
    with open(out / "experiment.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(old[0]))
        writer.writeheader()
        writer.writerows(old)
    assert set(rewrite_from_csv(out, "policy")) == {"none", "aggressive"}


@pytest.mark.slow
def test_one_value_gives_the_seed_spread_of_that_setting(tmp_path):
    """`--vary KEY=VALUE` with several seeds: one setting's mean and seed spread (before: refused)."""
    out = tmp_path / "exp"
    tiny_experiment(out, "policy=none")
    rows = list(csv.DictReader(open(out / "experiment.csv")))
    assert [(r["value"], r["seed"]) for r in rows] == [("none", "0"), ("none", "1")]
    assert "| none |" in (out / "experiment.md").read_text()


@pytest.mark.parametrize("vary, seeds, message", [
    ("policy=", "0", "--vary 'policy=': give KEY=VALUE1[,VALUE2,...]"),
    ("lrr=0.1,0.2", "0", "--vary 'lrr' is not a configuration key (nor one of finetune): did you mean 'lr'?"),
    ("lr=0.1,0.1", "0", "--vary lr: '0.1' is given twice"),
    ("policy=none,agressive", "0", "unknown policy 'agressive'"),  # the last value, checked before the first run
    ("lr=0.1,0.2", "", "give at least one seed"),
    ("lr=0.1,0.2", "1,1", "experiment seeds [1, 1]: give at least one seed, each once"),
])
def test_bad_experiments_are_refused_before_any_run(tmp_path, vary, seeds, message):
    out = tmp_path / "experiment"
    result = CliRunner().invoke(cli, ["experiment", "--vary", vary, "--seeds", seeds, "--out", str(out)])
    assert_one_line_error(result, message)
    assert not out.exists()
