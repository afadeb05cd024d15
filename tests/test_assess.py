"""Evaluation machinery: bootstrap (vectorised = loop, patients kept whole, stratified), interval
methods, operating-point rules, calibration, decision curves, and bad input."""

import warnings

import numpy as np
import pytest

from medcls.errors import ConfigError, DataError
from medcls.stats.assess import aggregate_patients, assess, check_probabilities
from medcls.stats.bootstrap import (bootstrap_binary, bootstrap_loop, bootstrap_multiclass,
                                         resample_weights)
from medcls.stats.calibration import apply_temperature, calibration_slope_intercept, fit_temperature
from medcls.stats.intervals import delong_auc_variance
from medcls.stats.operating_points import choose_threshold, net_benefit, predictive_values


def binary_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 2)
    return y, np.stack([1 - p1, p1], 1)


def test_vectorised_bootstrap_equals_the_loop(registries):
    y, probs = binary_data()
    yhat = (probs[:, 1] >= 0.5).astype(int)
    metrics = [e for e in registries["metrics"] if e.metadata.get("vectorised")]
    for stratified in (True, False):
        fast = bootstrap_binary(y, probs[:, 1], yhat, {e.name: e.metadata["vectorised"] for e in metrics},
                                n_resamples=60, seed=3, stratified=stratified)
        slow = bootstrap_loop(y, probs, yhat, {e.name: e.obj for e in metrics}, n_resamples=60, seed=3,
                              stratified=stratified)
        for name in fast:
            np.testing.assert_allclose(fast[name], slow[name], atol=1e-5, err_msg=name)


def test_unstratified_resamples_vary_the_prevalence_and_stratified_ones_do_not():
    y = np.r_[np.ones(30, int), np.zeros(70, int)]
    fixed = np.concatenate([W @ y for W in resample_weights(y, None, 200, seed=0)])
    varying = np.concatenate([W @ y for W in resample_weights(y, None, 200, seed=0, stratified=False)])
    assert (fixed == 30).all()
    assert varying.std() > 3  # binomial: sd sqrt(100 * 0.3 * 0.7) = 4.6


def test_vectorised_calibration_slope_equals_the_fitted_one():
    from medcls.stats.bootstrap import WeightedBinary
    from medcls.stats.calibration import calibration_slope_intercept

    rng = np.random.default_rng(2)
    p1 = rng.uniform(0.05, 0.95, 300)
    y = (rng.random(300) < p1 ** 1.5).astype(int)
    W = np.vstack([np.ones(300), rng.poisson(1.0, 300)]).astype(np.float32)
    slopes = WeightedBinary.build(W, y, p1, (p1 >= 0.5).astype(int)).calibration_slope()
    assert slopes[0] == pytest.approx(calibration_slope_intercept(y, p1)["slope"], abs=1e-6)
    index = np.repeat(np.arange(300), W[1].astype(int))
    assert slopes[1] == pytest.approx(calibration_slope_intercept(y[index], p1[index])["slope"], abs=1e-6)


def test_fixed_point_figures_equal_a_pass_over_every_threshold():
    """Sensitivity at fixed specificity (and the reverse) by a binary search per resample equals the
    plain reading of every ROC point, ties and resamples without positives or negatives included."""
    from medcls.stats.bootstrap import WeightedBinary

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    p1 = np.round(np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1), 2)
    W = rng.poisson(1.0, (40, 400)).astype(np.float32)
    W[1, y == 0] = 0  # no negatives: FPR undefined
    W[2, y == 1] = 0  # no positives: TPR undefined
    stats = WeightedBinary.build(W, y, p1, (p1 >= 0.5).astype(int))
    tpr, fpr = stats.roc
    with np.errstate(invalid="ignore"):
        for target in (0.5, 0.9, 0.95, 1.0):
            np.testing.assert_array_equal(stats.sensitivity_at_specificity(target),
                                          np.where(fpr <= 1 - target + 1e-12, tpr, 0.0).max(1))
            np.testing.assert_array_equal(stats.specificity_at_sensitivity(target),
                                          1 - np.where(tpr >= target - 1e-12, fpr, 1.0).min(1))


def test_a_roc_point_exactly_at_the_limit_counts():
    """FPR 1/5 is 0.2 exactly; in float32 it is a hair above the float64 0.2, so a float64 comparison
    would drop the point (sensitivity 0.5 instead of 1.0 at FPR <= 0.2, the ROC band's grid)."""
    from medcls.stats.bootstrap import WeightedBinary

    y = np.array([1, 0, 1, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    stats = WeightedBinary.build(np.ones((1, 7), np.float32), y, p1, y)
    grid = np.linspace(0, 1, 51) + 1e-12
    assert stats.sensitivity_where_fpr_at_most(grid)[0, 10] == 1.0
    assert stats.sensitivity_at_specificity(0.8)[0] == 1.0


def test_vectorised_calibration_slope_of_small_resamples_equals_each_fit():
    """Resamples of 30 cases start Newton's method from the mean fit; one of these 100 overshoots from
    there (slope -0.46 where its own fit is 1.61) unless it starts again from 0."""
    from medcls.stats.bootstrap import WeightedBinary, resample_weights
    from medcls.stats.calibration import calibration_slope_intercept

    rng = np.random.default_rng(23)
    p1 = rng.uniform(0.02, 0.98, 30)
    y = (rng.random(30) < p1 ** 2).astype(int)
    W = next(resample_weights(y, None, 100, 0, stratified=False))
    slopes = WeightedBinary.build(W, y, p1, y).calibration_slope()
    for row, slope in zip(W.astype(int), slopes):
        index = np.repeat(np.arange(30), row)
        fitted = calibration_slope_intercept(y[index], p1[index])["slope"]
        if np.isfinite(fitted) and abs(fitted) < 20:  # separated resamples have no finite slope
            assert slope == pytest.approx(fitted, abs=1e-5)


@pytest.mark.parametrize("stratified", [True, False])
def test_vectorised_multiclass_equals_the_loop(registries, stratified):
    """Every built-in metric's multi-class bootstrap (one-vs-rest combinations and the figures of
    the whole K x K table) equals the metric called on each resample's repeated cases."""
    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    probs = rng.dirichlet([1, 1, 1], 90)
    probs[np.arange(90), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    yhat = probs.argmax(1)
    yhat[:6] = (yhat[:6] + 1) % 3  # decisions that are not all the top class
    statistics = {}
    for e in registries["metrics"]:
        if e.metadata.get("vectorised_multiclass"):
            statistics[e.name] = e.metadata["vectorised_multiclass"]
        elif e.metadata.get("multiclass"):
            statistics[e.name] = lambda s, e=e: s.one_vs_rest(e.metadata["vectorised"], e.metadata["multiclass"])
    assert set(statistics) >= {"roc_auc", "sensitivity", "specificity", "brier", "accuracy", "balanced_accuracy",
                               "mcc", "ece"}
    fast = bootstrap_multiclass(y, probs, yhat, statistics, n_resamples=40, seed=2, stratified=stratified)
    slow = bootstrap_loop(y, probs, yhat, {e.name: e.obj for e in registries["metrics"] if e.name in statistics},
                          n_resamples=40, seed=2, stratified=stratified)
    for name in fast:
        np.testing.assert_allclose(fast[name], slow[name], atol=1e-5, err_msg=name)


def test_multiclass_mcc_of_one_class_tables_follows_the_metric():
    from medcls.stats.bootstrap import WeightedMulticlass
    from medcls.stats.metrics import mcc

    probs = np.full((4, 3), 1 / 3)
    for y, yhat in (([0, 0, 0, 0], [0, 0, 0, 0]), ([0, 1, 2, 0], [0, 0, 0, 0]), ([0, 1, 2, 2], [0, 1, 2, 1])):
        y, yhat = np.array(y), np.array(yhat)
        found = WeightedMulticlass.build(np.ones((1, 4), np.float32), y, probs, yhat).mcc()[0]
        np.testing.assert_allclose(found, mcc(y, probs, yhat), atol=1e-12)


def test_multiclass_intervals_are_all_vectorised_and_skewed_ones_bca(registries):
    y = np.arange(120) % 4
    probs = np.random.default_rng(3).dirichlet([1, 1, 1, 1], 120)
    probs[np.arange(120), y] += 0.4
    probs /= probs.sum(1, keepdims=True)
    found = assess(probs, y, None, list(registries["metrics"]), n_resamples=300)["intervals"]
    builtin = ("accuracy", "balanced_accuracy", "mcc", "f1", "brier", "pr_auc")
    assert found["ece"]["low"] is None and "biased" in found["ece"]["refused"]
    assert all(found[name]["resamples"] == 300 for name in builtin)  # none capped by the per-resample loop
    assert all(("BCa" in found[name]["method"]) == (name in ("balanced_accuracy", "mcc", "f1", "brier", "pr_auc"))
               for name in builtin)


def test_resampling_is_stratified_and_keeps_patients_whole():
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    patients = np.array(["a", "a", "b", "c", "c", "d", "e", "e"])
    for W in resample_weights(labels, None, 50, seed=0):
        assert (W[:, labels == 1].sum(1) == 4).all()  # as many positives as in the data
    for W in resample_weights(labels, patients, 50, seed=0):
        for patient in set(patients):
            members = W[:, patients == patient]
            assert (members == members[:, :1]).all()  # a patient's images are drawn together


def test_interval_methods_follow_the_data(registries):
    y, probs = binary_data(200)
    metrics = list(registries["metrics"])
    independent = assess(probs, y, 0.5, metrics, n_resamples=200)
    methods = {k: v["method"] for k, v in independent["intervals"].items()}
    assert methods["sensitivity"] == "Wilson" and methods["roc_auc"] == "DeLong"
    # prevalence-dependent figures resample without fixing the class sizes; skewed ones get BCa
    assert methods["f1"] == methods["brier"] == methods["pr_auc"] == "bootstrap (unstratified, BCa)"
    assert methods["balanced_accuracy"] == "bootstrap (stratified by class, BCa)"
    assert independent["intervals"]["ece"]["low"] is None  # no interval covered a biased plug-in ECE
    patients = np.repeat(np.arange(100), 2)
    clustered = assess(probs, y, 0.5, metrics, patients=patients, n_resamples=200)
    methods = {k: v["method"] for k, v in clustered["intervals"].items()}
    assert methods["sensitivity"].startswith("Wilson, clustered (design effect over ")
    assert methods["roc_auc"] == "Obuchowski clustered DeLong (100 patients)"
    assert methods["f1"] == "cluster bootstrap (patients, unstratified, BCa)"
    assert all(methods[m].startswith("Wilson, clustered (design effect over ") for m in ("ppv", "npv", "accuracy"))
    assert all(m.startswith(("cluster bootstrap (patients, ", "Wilson, clustered", "Obuchowski", "none"))
               for m in methods.values())
    # Resampling patients (pairs of correlated images) is not narrower than pretending independence.
    width = lambda a, m: a["intervals"][m]["high"] - a["intervals"][m]["low"]  # noqa: E731
    assert width(clustered, "roc_auc") > 0.5 * width(independent, "roc_auc")
    for name, value in independent["values"].items():
        if isinstance(value, float) and name in independent["intervals"] and name != "loss":
            interval = independent["intervals"][name]
            assert interval["low"] is None or interval["low"] - 1e-9 <= value <= interval["high"] + 1e-9, name


def test_patient_level_aggregation():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    patients = np.array(["p", "p", "q", "q"])
    mean, y = aggregate_patients(probs, labels, patients, "mean")
    np.testing.assert_allclose(mean[:, 1], [0.4, 0.3])
    assert y.tolist() == [1, 0]
    maximum, _ = aggregate_patients(probs, labels, patients, "max")
    np.testing.assert_allclose(maximum[:, 1], [0.7, 0.4])


def test_operating_figures_and_prevalence(registries):
    y, probs = binary_data(300)
    result = assess(probs, y, 0.5, list(registries["metrics"]), prevalence=0.05, n_resamples=200)
    figures = result["operating"]
    table = figures["table"]
    assert sum(table.values()) == 300
    values = figures["values"]
    assert {"sensitivity_at_specificity_0.90", "specificity_at_sensitivity_0.95", "ppv_at_prevalence_0.05"} <= set(values)
    sens, spec = result["values"]["sensitivity"], result["values"]["specificity"]
    assert values["ppv_at_prevalence_0.05"]["value"] == pytest.approx(predictive_values(sens, spec, 0.05)[0])


def test_predictive_values_textbook():
    ppv, npv = predictive_values(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18)) and npv == pytest.approx(0.72 / 0.73)


@pytest.mark.parametrize("rule, target", [("target_sensitivity", 0.95), ("target_sensitivity", 0.8),
                                          ("target_specificity", 0.9), ("target_specificity", 0.5)])
def test_target_rules_reach_the_target_as_tightly_as_possible(rule, target):
    y, probs = binary_data(400, seed=4)
    p1 = probs[:, 1]
    t = choose_threshold(rule, y, p1, target=target)
    sens = lambda th: ((p1 >= th) & (y == 1)).sum() / (y == 1).sum()  # noqa: E731
    spec = lambda th: ((p1 < th) & (y == 0)).sum() / (y == 0).sum()  # noqa: E731
    if rule == "target_sensitivity":
        assert sens(t) >= target
        assert sens(np.nextafter(t, 1)) < target  # any higher threshold would miss the target
    else:
        assert spec(t) >= target
        assert spec(np.nextafter(t, 0)) < target


def test_unreachable_or_uncomputable_targets():
    y, probs = binary_data(50)
    with pytest.raises(ConfigError, match="unreachable"):
        choose_threshold("target_sensitivity", y, probs[:, 1], target=1.2)
    with pytest.raises(DataError, match="no positive cases"):
        choose_threshold("target_sensitivity", np.zeros(5, int), np.linspace(0, 1, 5), target=0.9)
    with pytest.raises(DataError, match="only one class"):
        choose_threshold("youden", np.ones(5, int), np.linspace(0, 1, 5))


@pytest.mark.parametrize("probs, message", [
    (np.array([[0.5, np.nan]]), "NaN or infinite"),
    (np.array([[np.inf, 0.0]]), "NaN or infinite"),
    (np.array([[-2.0, 3.0]]), "outside \\[0, 1\\]"),
    (np.array([[0.6, 0.6]]), "do not sum to 1"),
])
def test_bad_probabilities_are_refused(probs, message):
    with pytest.raises(DataError, match=message):
        check_probabilities(probs, "test split")


def test_single_class_split_says_not_computable(registries):
    probs = np.tile([[0.7, 0.3]], (10, 1))
    result = assess(probs, np.zeros(10, int), 0.5, list(registries["metrics"]), n_resamples=100)
    assert np.isnan(result["values"]["roc_auc"]) and result["values"]["specificity"] == 1.0
    assert any("not computable" in note for note in result["notes"])
    assert "not_computable" in result["operating"]


def test_hanley_mcneil_worked_example():
    """Hanley & McNeil (1982), Radiology 143:29, table 1: 5-point ratings of 58 normal and 51
    abnormal CT images; published area 0.893 (their approximate SE 0.032)."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    scores = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)].astype(float)
    y = np.r_[np.zeros(58), np.ones(51)].astype(int)
    auc, variance = delong_auc_variance(y, scores)
    assert round(auc, 3) == 0.893
    assert 0.028 < np.sqrt(variance) < 0.034


def test_calibration_slope_and_temperature():
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.02, 0.98, 4000)
    y = (rng.random(4000) < true_p).astype(int)
    probs = np.stack([1 - true_p, true_p], 1)
    fit = calibration_slope_intercept(y, true_p)
    assert abs(fit["slope"] - 1) < 0.1 and abs(fit["intercept"]) < 0.1
    overconfident = apply_temperature(probs, 0.5)  # sharpened: slope well below 1
    assert calibration_slope_intercept(y, overconfident[:, 1])["slope"] < 0.7
    assert fit_temperature(overconfident, y) == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("y, p1", [
    ([1, 1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),  # inverted: every negative above every positive
    ([0, 0, 1, 0, 1, 1], [0.2, 0.5, 0.5, 0.5, 0.6, 0.9]),  # quasi-separated: the classes touch at a tie
    ([1, 1, 1, 0, 0, 0], [0.4] * 6),                         # constant scores
])
def test_calibration_slope_not_computable_when_unbounded(y, p1):
    # Newton on these diverges (overflow warnings, then a meaningless slope): say why instead.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = calibration_slope_intercept(np.array(y), np.array(p1))
    assert np.isnan(fit["slope"]) and "unbounded" in fit["not_computable"]


def test_net_benefit():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    curve = net_benefit(y, p1, np.array([0.2, 0.5]))
    # threshold 0.5: TP 2, FP 1 -> 2/10 - 1/10 * 1 = 0.1; treat all: 0.2 - 0.8 = -0.6
    assert curve["model"][1] == pytest.approx(0.1) and curve["treat_all"][1] == pytest.approx(-0.6)
    assert curve["treat_all"][0] == pytest.approx(0.2 - 0.8 * 0.25)


def test_perfect_separation_with_patient_clusters_never_claims_certainty(registries):
    # 10 patients with 2 images each; the scores separate the classes perfectly.
    labels = np.repeat([0, 1] * 5, 2)
    probs = np.stack([1 - (0.2 + 0.6 * labels), 0.2 + 0.6 * labels], 1)
    patients = np.repeat([f"p{i}" for i in range(10)], 2)
    result = assess(probs, labels, 0.5, list(registries["metrics"]), patients=patients, n_resamples=200)
    auc, sensitivity = result["intervals"]["roc_auc"], result["intervals"]["sensitivity"]
    assert result["values"]["roc_auc"] == 1.0 and auc["high"] == 1.0 and auc["low"] < 0.9
    assert auc["method"].startswith("Wilson over 5 patients of the smaller class")
    assert sensitivity["high"] == 1.0 and sensitivity["low"] < 0.9 and "5 patients" in sensitivity["method"]
    # Bootstrap figures on 5 patients a class, or collapsed to a point: refused, never zero-width.
    for name, interval in result["intervals"].items():
        assert interval["low"] is None or interval["low"] < interval["high"], (name, interval)
    assert result["intervals"]["f1"]["refused"] == "5 patients of class 0, under the 20 a bootstrap needs to cover"


def test_confident_sensitivity_keeps_enough_positives_for_a_lower_bound_at_the_target():
    from scipy.stats import beta

    y = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    p1 = np.r_[np.linspace(0.99, 0.30, 100), np.linspace(0.60, 0.01, 100)]
    threshold = choose_threshold("confident_sensitivity", y, p1, target=0.9)
    kept = int((p1[y == 1] >= threshold).sum())
    assert beta.ppf(0.05, kept, 100 - kept + 1) >= 0.9 > beta.ppf(0.05, kept - 1, 100 - kept + 2)
    assert threshold < choose_threshold("target_sensitivity", y, p1, target=0.9)  # stricter than matching 0.9
    threshold = choose_threshold("confident_specificity", y, p1, target=0.9)
    cleared = int((p1[y == 0] < threshold).sum())
    assert beta.ppf(0.05, cleared, 100 - cleared + 1) >= 0.9 > beta.ppf(0.05, cleared - 1, 100 - cleared + 2)
    with pytest.raises(DataError, match="20 positive cases cannot show a sensitivity of 0.95 with 95% confidence.*"
                                        "it takes at least 59"):
        choose_threshold("confident_sensitivity", y[80:], p1[80:], target=0.95)


def test_multiclass_figures_over_an_absent_class_or_undefined_get_no_interval(registries):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)  # four classes, the last absent from the split
    probs = rng.dirichlet([1, 1, 1, 1], 200)
    probs[np.arange(200), y] += 0.3
    probs /= probs.sum(1, keepdims=True)
    found = assess(probs, y, None, list(registries["metrics"]), n_resamples=200)
    assert np.isnan(found["values"]["roc_auc"]) and found["intervals"]["roc_auc"]["low"] is None
    for name in ("pr_auc", "sensitivity"):  # the estimate averages in the absent class, resamples could not
        assert found["intervals"][name]["refused"] == "class 3 has no case in this split"
    assert found["intervals"]["accuracy"]["low"] < found["values"]["accuracy"] < found["intervals"]["accuracy"]["high"]


def test_operating_figures_tabulate_the_decisions_given():
    from medcls.stats.assess import operating_figures

    y, probs = binary_data(200)
    own = (np.arange(200) % 3 == 0).astype(np.int64)  # e.g. each fold's own threshold in cross-validation
    table = operating_figures(probs, y, 0.5, y_pred=own, n_resamples=50)["table"]
    assert table == {"tp": int(((own == 1) & (y == 1)).sum()), "fp": int(((own == 1) & (y == 0)).sum()),
                     "tn": int(((own == 0) & (y == 0)).sum()), "fn": int(((own == 0) & (y == 1)).sum())}
