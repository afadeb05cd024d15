"""Metrics against scikit-learn and textbook values; DeLong against an independent O(n^2) version."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from medcls.stats import metrics as m
from medcls.stats.intervals import delong_auc_variance, delong_interval, wilson


@pytest.fixture
def binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    return y, np.stack([1 - p1, p1], 1)


def test_against_sklearn(binary):
    y, probs = binary
    assert m.roc_auc(y, probs, None) == pytest.approx(roc_auc_score(y, probs[:, 1]))
    assert m.pr_auc(y, probs, None) == pytest.approx(average_precision_score(y, probs[:, 1]))
    assert m.brier(y, probs, None) == pytest.approx(brier_score_loss(y, probs[:, 1]))


def test_thresholded_metrics_on_a_known_table():
    # TP 8, FN 2, TN 6, FP 4
    y = np.array([1] * 10 + [0] * 10)
    yhat = np.array([1] * 8 + [0] * 2 + [0] * 6 + [1] * 4)
    probs = np.zeros((20, 2))
    assert m.sensitivity(y, probs, yhat) == 0.8
    assert m.specificity(y, probs, yhat) == 0.6
    assert m.ppv(y, probs, yhat) == pytest.approx(8 / 12)
    assert m.npv(y, probs, yhat) == pytest.approx(6 / 8)
    assert m.balanced_accuracy(y, probs, yhat) == pytest.approx(0.7)


def test_single_class_gives_nan_not_a_crash():
    y = np.zeros(5, dtype=int)
    probs = np.tile([0.7, 0.3], (5, 1))
    assert np.isnan(m.roc_auc(y, probs, None)) and np.isnan(m.sensitivity(y, probs, np.zeros(5, int)))


def test_multiclass_macro_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    assert m.roc_auc(y, probs, None) == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))


def test_wilson_textbook_value():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_wilson_bounds_never_cross_the_estimate_at_0_or_n():
    # Newcombe (1998) table I also lists 0/10 -> 0 to 0.2775 and 10/10 -> 0.7225 to 1; computed
    # naively the lower bound at 0 comes out ~1e-17, above the estimate it should contain.
    for total in range(1, 200):
        low, high = wilson(0, total)
        assert low == 0.0 <= high
        low, high = wilson(total, total)
        assert low <= 1.0 == high
    assert round(wilson(0, 10)[1], 4) == 0.2775 and round(wilson(10, 10)[0], 4) == 0.7225


def delong_reference(y, s):
    """Straight from DeLong et al. (1988): placement values by all pairwise comparisons."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(1), psi.mean(0)
    return psi.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


def test_delong_matches_pairwise_definition(binary):
    y, probs = binary
    scores = np.round(probs[:, 1], 2)  # ties exercise the midranks
    auc, variance = delong_auc_variance(y, scores)
    ref_auc, ref_variance = delong_reference(y, scores)
    assert auc == pytest.approx(ref_auc) and variance == pytest.approx(ref_variance)
    low, high = delong_interval(y, scores)
    assert low < auc < high


def test_youden_threshold_separates_perfectly():
    y = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    threshold = m.youden_threshold(y, scores)
    assert 0.3 < threshold <= 0.6


def test_every_registered_metric_on_binary_and_multiclass(registries):
    rng = np.random.default_rng(2)
    for n_classes in (2, 3):
        y = np.arange(60) % n_classes
        probs = rng.dirichlet(np.ones(n_classes), 60)
        y_pred = probs.argmax(1)
        for entry in registries["metrics"]:
            value = entry.obj(y, probs, y_pred)
            assert isinstance(value, float) and np.isfinite(value), (entry.name, n_classes)
            assert isinstance(entry.metadata.get("needs_threshold"), bool), entry.name


@pytest.mark.parametrize("train, val, test, expected", [
    (0.70, 0.68, 0.69, "Under-fitting"),
    (0.99, 0.80, 0.82, "Over-fitting"),
    (0.93, 0.92, 0.91, "Fine"),
    (0.99, 0.55, 0.99, "Validation and test disagree"),
])
def test_gap_reading(train, val, test, expected):
    from medcls.reports.report import read_gap

    split = lambda auc, n: {"roc_auc": auc, "accuracy": auc, "loss": 0.3, "n": n}  # noqa: E731
    assert expected in read_gap(split(train, 100), split(val, 40), split(test, 40))


@pytest.mark.parametrize("test_auc", [0.95, 0.70, 0.50])
def test_the_advice_rests_on_validation_never_on_test(test_auc):
    """A run whose test is worse than validation gets the same diagnosis and advice: test figures
    are reported (saying they are not used), never turned into recommendations."""
    from medcls.reports.report import read_gap

    split = lambda auc, n: {"roc_auc": auc, "accuracy": auc, "loss": 0.3, "n": n}  # noqa: E731
    reading = read_gap(split(0.97, 100), split(0.95, 40), split(test_auc, 40))
    advice = reading.split(" Test (")[0]
    assert advice == "Fine (training vs validation): ROC AUC agrees within 0.05 (0.970 vs 0.950)."
    assert f"Test (40 images, the final result, not used for this advice): ROC AUC {test_auc:.3f}" in reading
    overfit = read_gap(split(0.99, 100), split(0.80, 40), split(test_auc, 40))
    assert overfit.startswith("Over-fitting (training vs validation): ROC AUC is 0.990 on training images but "
                              "0.800 on validation images")


@pytest.mark.parametrize("kind", ["independent", "clustered"])
@pytest.mark.slow
def test_interval_coverage_on_a_small_clustered_grid_cell(kind):
    """A fast cell of benchmarks/interval_coverage.py (docs/intervals.md): 150 test sets of 150 images
    (clustered: 2-4 images a patient, intra-patient correlation 0.6), prevalence 0.3, an over-confident
    model, population values by integration. Every replicate counted; sensitivity, specificity, PPV,
    NPV, accuracy and ROC AUC cover within Monte Carlo error of 95 %; ECE is never given an interval."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from interval_coverage import coverage_cell

    found = coverage_cell(dict(kind=kind, model="overconfident", prevalence=0.3, images=150, repetitions=150,
                               resamples=200, seed=7))["table"]
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "roc_auc"):
        assert found[name]["hit"] + found[name]["miss"] >= 140, (name, found[name])  # printed nearly always
        assert 0.90 <= found[name]["coverage"] <= 0.995, (name, found[name])  # 0.95 +- 2.5 MC SE
    assert found["ece"]["refused"] == 150


def test_auc_without_each_case_is_the_leave_one_out_auc_ties_included():
    from sklearn.metrics import roc_auc_score

    from medcls.stats.review import auc_without_each, cases_at_odds

    rng = np.random.default_rng(4)
    y = (rng.random(70) < 0.4).astype(int)
    scores = np.round(rng.random(70) * 0.7 + 0.3 * y, 1)  # one decimal: many ties across the classes
    expected = [roc_auc_score(np.delete(y, i), np.delete(scores, i)) for i in range(70)]
    assert auc_without_each(y, scores) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(auc_without_each(np.array([0, 1, 0]), np.array([0.2, 0.9, 0.4]))[1])  # no positive left
    probs = np.stack([1 - scores, scores], 1)
    found = cases_at_odds(y, probs, 5)
    own = probs[np.arange(70), y]
    assert [f["index"] for f in found] == list(np.argsort(own, kind="stable")[:5])
    assert found[0]["auc_without"] == pytest.approx(expected[found[0]["index"]])
    three = cases_at_odds(np.array([0, 1, 2, 2]), np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6],
                                                             [0.5, 0.4, 0.1]]), 2)
    assert [(f["index"], f["auc_without"]) for f in three] == [(3, None), (1, None)]


def epochs_of(stages: dict):
    """History records: {stage: [val roc_auc per epoch]}, numbered on across stages."""
    from types import SimpleNamespace

    history = []
    for stage, scores in stages.items():
        for score in scores:
            history.append(SimpleNamespace(stage=stage, epoch=len(history) + 1, val_metrics={"roc_auc": score}))
    return history


def test_the_reading_says_when_fine_tuning_collapsed_and_went_unused():
    """The vessel-slice run of examples/README.md: stage 2's validation ROC AUC sat at chance."""
    from medcls.reports.report import read_stages

    history = epochs_of({"frozen": [0.63, 0.65, 0.68, 0.66], "finetune": [0.4995, 0.5, 0.4862, 0.5]})
    reading = read_stages(history, "roc_auc", best_epoch=3)
    assert "did not beat the new head" in reading and "0.500 at best" in reading and "0.680" in reading
    assert "collapsed" in reading and "finetune_batchnorm=train" in reading


def test_the_reading_tells_an_unused_stage_from_a_collapse_and_from_a_kept_one():
    from medcls.reports.report import read_stages

    unused = read_stages(epochs_of({"frozen": [0.80, 0.82], "finetune": [0.70, 0.79]}), "roc_auc", best_epoch=2)
    assert "did not beat" in unused and "collapsed" not in unused
    tie_kept = epochs_of({"frozen": [0.9, 1.0], "finetune": [0.95, 1.0]})  # a tie the loss broke for stage 2
    assert read_stages(tie_kept, "roc_auc", best_epoch=4) == ""
    assert read_stages(epochs_of({"all": [0.6, 0.7]}), "roc_auc", best_epoch=2) == ""  # one stage: nothing to say
