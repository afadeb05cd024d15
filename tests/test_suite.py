"""The recipe suite (benchmarks/suite.py): the paired rule for a new default, checked on figures
whose answer is known, and one tiny end-to-end run of both arms."""

import json

import click
import pytest
from click.testing import CliRunner

from benchmarks.suite import main, paired, spread


def rows(figures: dict) -> list[dict]:
    return [{"set": name, "seed": seed, "roc_auc": value} for name, values in figures.items()
            for seed, value in enumerate(values)]


DEFAULT = {"a": [0.80, 0.82, 0.81], "b": [0.90, 0.91, 0.89]}


def test_a_gain_on_every_set_and_seed_passes_the_rule():
    result = paired(rows(DEFAULT), rows({k: [v + 0.02 for v in vs] for k, vs in DEFAULT.items()}), resamples=2000)
    assert result["mean_difference"] == pytest.approx(0.02)
    assert result["low"] == pytest.approx(0.02) and result["high"] == pytest.approx(0.02)
    assert result["rule_holds"] and result["runs"] == 6
    assert result["per_set"]["a"]["seed_spread"] == pytest.approx(0.01)


def test_a_set_that_loses_more_than_its_seed_spread_fails_the_rule_even_when_the_mean_gains():
    candidate = {"a": [v + 0.08 for v in DEFAULT["a"]], "b": [v - 0.03 for v in DEFAULT["b"]]}
    result = paired(rows(DEFAULT), rows(candidate), resamples=2000)
    assert result["mean_difference"] == pytest.approx(0.025)
    assert result["worst_set"] == "b" and result["worst_difference"] == pytest.approx(-0.03)
    assert result["per_set"]["b"]["loses_beyond_spread"] and not result["rule_holds"]


def test_an_interval_reaching_zero_fails_the_rule():
    candidate = {"a": [0.85, 0.79, 0.81], "b": [0.905, 0.905, 0.90]}  # +0.05, -0.03, 0 ; +0.005, -0.005, +0.01
    result = paired(rows(DEFAULT), rows(candidate), resamples=2000)
    assert result["mean_difference"] > 0 and result["low"] < 0 < result["high"]
    assert not result["rule_holds"]


def test_unpaired_runs_are_refused():
    with pytest.raises(click.UsageError, match="no run of a with seed 5"):
        paired(rows(DEFAULT), [{"set": "a", "seed": 5, "roc_auc": 0.9}])
    assert spread([0.8]) == 0.0


@pytest.mark.slow
def test_the_suite_runs_both_arms_and_pairs_them(tmp_path):
    out = tmp_path / "suite.json"
    base = ["--base", "backbone=test_resnet", "--base", "pretrained=false", "--base", "epochs=1",
            "--base", "finetune_epochs=0", "--base", "bootstrap=50", "--base", "figures=false"]
    result = CliRunner().invoke(main, ["--sets", "synthetic", "--seeds", "0,1", *base, "--base", "image_size=32",
                                       "--candidate", "image_size=40", "--json", str(out)])
    assert result.exit_code == 0, result.output
    stored = json.loads(out.read_text())
    assert [r["seed"] for r in stored["default"]] == [0, 1] and stored["candidate"] == {"image_size": 40}
    differences = [c["roc_auc"] - d["roc_auc"] for c, d in zip(stored["candidate_rows"], stored["default"])]
    assert stored["paired"]["mean_difference"] == pytest.approx(sum(differences) / 2)
    assert "Rule for a new default" in result.output and "| synthetic | 0 |" in result.output
    again = CliRunner().invoke(main, ["--sets", "synthetic", "--seeds", "0,1", *base, "--base", "image_size=32",
                                      "--baseline", str(out)])
    assert again.exit_code == 0 and "| synthetic | 1 |" in again.output  # the default's rows, not run again
    unknown = CliRunner().invoke(main, ["--sets", "nosuchset"])
    assert unknown.exit_code == 2 and "unknown set 'nosuchset'" in unknown.output


def test_a_run_that_fails_counts_as_chance_and_is_shown():
    from benchmarks.suite import set_table

    failed = {"set": "a", "seed": 0, "roc_auc": None, "error": "no 3D backbone", "minutes": 0.1}
    result = paired([failed], rows({"a": [0.9]}), resamples=2000)
    assert result["mean_difference"] == pytest.approx(0.4)
    assert "failed: no 3D backbone" in "\n".join(set_table([failed]))
