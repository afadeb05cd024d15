"""Comparing two models on the same cases: paired DeLong against its definition, exact McNemar,
and `medcls compare` end to end (refusing different cases)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from medcls.stats.intervals import mcnemar, paired_delong
from tests.helpers import FAST


def pairwise_paired_delong(y, a, b):
    """DeLong et al. (1988) directly: placement values from all pairwise comparisons."""
    def placements(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(1), psi.mean(0)

    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = placements(a), placements(b)
    s10 = np.cov(np.stack([v10a, v10b])) / len(v10a)
    s01 = np.cov(np.stack([v01a, v01b])) / len(v01a)
    s = s10 + s01
    return auc_a - auc_b, s[0, 0] + s[1, 1] - 2 * s[0, 1]


def test_paired_delong_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    a = np.round(y * 0.8 + rng.normal(0, 0.6, 150), 1)
    b = np.round(y * 0.5 + rng.normal(0, 0.6, 150) + 0.3 * (a - y * 0.8), 1)  # correlated with a
    result = paired_delong(y, a, b)
    difference, variance = pairwise_paired_delong(y, a, b)
    assert result["difference"] == pytest.approx(difference)
    assert result["z"] == pytest.approx(difference / np.sqrt(variance))
    assert 0 < result["p_value"] < 1 and result["low"] < difference < result["high"]


def test_identical_models_do_not_differ():
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 60), rng.random(60)
    assert paired_delong(y, s, s)["p_value"] == 1.0


def test_exact_mcnemar():
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    result = mcnemar(a, b)
    # 10 vs 2 discordant pairs: two-sided exact p = 2 * P(X <= 2 | n=12, 0.5) = 0.0386
    assert (result["a_only_correct"], result["b_only_correct"]) == (10, 2)
    assert result["p_value"] == pytest.approx(0.03857, abs=1e-4)


def train(tmp_path, name, seed):
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["train", *FAST, "--seed", str(seed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.mark.slow
def test_compare_cli(tmp_path):
    a, b = train(tmp_path, "a", 0), train(tmp_path, "b", 1)
    refused = CliRunner().invoke(cli, ["compare", a, b])
    assert refused.exit_code == 4 and "different cases" in refused.stderr and "--split all" in refused.stderr
    result = CliRunner().invoke(cli, ["compare", a, b, "--split", "all", "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "paired DeLong" in result.stdout and "exact McNemar" in result.stdout
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["n"] == 400 and saved["split"] == "all"
    same = CliRunner().invoke(cli, ["compare", a, a])
    assert same.exit_code == 0 and "p = 1.0000" in same.stdout
