"""Subgroups compared with the rest: textbook intervals, Holm adjustment, a real difference found
and a null one not, patients kept whole."""

import math

import numpy as np
import pytest

from medcls.stats.subgroups import compare_subgroups, holm, newcombe


@pytest.mark.parametrize("counts, expected", [
    ((56, 70, 48, 80), (0.0524, 0.3339)),  # Newcombe (1998), Table II, method 10, examples (a)-(d)
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
])
def test_newcombe_matches_the_published_table(counts, expected):
    assert newcombe(*counts) == pytest.approx(expected, abs=1e-4)


def test_holm_steps_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.5, math.nan])[1])


def data(n=600, seed=0, worse_site="b"):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    site = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    noise = np.where(site == worse_site, 1.6, 0.6)  # the model is much worse on one site's images
    p1 = 1 / (1 + np.exp(-(2.0 * (y - 0.5) * 2 + rng.normal(0, 1, n) * noise * 2)))
    return np.stack([1 - p1, p1], 1), y, site


def test_a_worse_site_is_flagged_and_the_others_are_not():
    probs, y, site = data()
    result = compare_subgroups(probs, y, 0.5, site, n_resamples=200)
    assert set(result) == {"a", "b", "c"}
    assert result["b"]["roc_auc"]["flagged"] and result["b"]["roc_auc"]["difference"] < 0
    assert result["b"]["roc_auc"]["p_holm"] < 0.05
    assert result["b"]["sensitivity"]["method"] == "Newcombe hybrid score, Fisher exact"
    # the a-vs-rest AUC difference is positive (the rest holds b) but a and c are alike:
    assert not result["c"]["roc_auc"]["flagged"] or result["c"]["roc_auc"]["difference"] > 0
    for value in result.values():
        for row in value.values():
            assert row["low"] <= row["difference"] <= row["high"] and row["p_holm"] >= row["p_value"]


def test_no_difference_is_rarely_flagged():
    flagged = 0
    for seed in range(20):
        probs, y, site = data(seed=seed, worse_site="none")
        result = compare_subgroups(probs, y, 0.5, site, n_resamples=100)
        flagged += any(row["p_holm"] < 0.05 for value in result.values() for row in value.values())
    assert flagged <= 3  # family-wise error of Holm at 5 %, with noise


def test_patients_are_resampled_whole_and_tiny_groups_are_not_compared():
    probs, y, site = data(400)
    patients = np.repeat(np.arange(200), 2)
    y, site = np.repeat(y[::2], 2), np.repeat(site[::2], 2)  # two images per patient, one label and site
    site = site.astype("U10")
    site[:4] = "tiny"
    result = compare_subgroups(probs, y, 0.5, site, patients=patients, n_resamples=200)
    assert result["b"]["roc_auc"]["method"] == "Obuchowski clustered DeLong (independent groups of patients)"
    assert "not_compared" in result["tiny"]


def test_tripled_images_compare_subgroups_as_their_patients_do():
    probs, y, site = data(300)
    tripled = compare_subgroups(np.repeat(probs, 3, 0), np.repeat(y, 3), 0.5, np.repeat(site, 3),
                                patients=np.repeat(np.arange(300), 3))
    once = compare_subgroups(probs, y, 0.5, site)
    for value in once:
        assert tripled[value]["roc_auc"]["p_value"] == pytest.approx(once[value]["roc_auc"]["p_value"], rel=1e-9)
        for name in ("sensitivity", "specificity"):  # a design effect of 3 takes the copies back out
            assert tripled[value][name]["difference"] == pytest.approx(once[value][name]["difference"])
            assert tripled[value][name]["p_value"] == pytest.approx(once[value][name]["p_value"], abs=0.05)


def test_flags_follow_the_holm_adjusted_p_value():
    probs, y, site = data(400)
    for value in compare_subgroups(probs, y, 0.5, site).values():
        for row in value.values():
            assert row["flagged"] == (row["p_holm"] < 0.05)
    assert compare_subgroups(probs, y, None, site) == {}  # multi-class / no operating point: nothing
