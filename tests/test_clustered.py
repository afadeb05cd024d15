"""Intervals and tests for several images a patient (medcls.stats.clustered): Obuchowski's clustered
AUC variance against a direct pairwise implementation of the paper's formulas, the reduction to
DeLong and Wilson for one image a patient, tripled images counted as their patients, and refusals."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from medcls.stats.clustered import (ClusteredAUC, auc_interval, clustered_variance, paired_auc_test,
                                    proportion_interval)
from medcls.stats.intervals import delong_auc_variance, paired_delong, wilson


def obuchowski_by_pairs(y, s, groups):
    """Obuchowski (1997), eqs. 2-5, written from the paper with every (positive, negative) pair."""
    patients = sorted(set(groups))
    pos, neg = s[y == 1], s[y == 0]
    psi = lambda a, b: 1.0 if a > b else 0.5 if a == b else 0.0  # noqa: E731
    M, N = len(pos), len(neg)
    auc = sum(psi(a, b) for a in pos for b in neg) / (M * N)
    v10, v01, m, n = [], [], [], []
    for patient in patients:
        here = groups == patient
        v10.append(sum(psi(a, b) for a in s[here & (y == 1)] for b in neg) / N)
        v01.append(sum(psi(a, b) for a in pos for b in s[here & (y == 0)]) / M)
        m.append(int((here & (y == 1)).sum()))
        n.append(int((here & (y == 0)).sum()))
    v10, v01, m, n = map(np.array, (v10, v01, m, n))
    i10, i01, i = (m > 0).sum(), (n > 0).sum(), len(patients)
    s10 = i10 / ((i10 - 1) * M) * ((v10 - m * auc) ** 2).sum()
    s01 = i01 / ((i01 - 1) * N) * ((v01 - n * auc) ** 2).sum()
    s11 = i / (i - 1) * ((v10 - m * auc) * (v01 - n * auc)).sum()
    return auc, s10 / M + s01 / N + 2 * s11 / (M * N)


def clustered_data(patients=40, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, patients)
    groups = np.repeat(np.arange(patients), sizes)
    u = rng.normal(0, 0.8, patients)[groups]
    y = (rng.random(len(groups)) < 0.4).astype(int)  # some patients have images of both classes
    s = np.round(1.2 * y + u + rng.normal(0, 0.6, len(groups)), 1)  # rounded: ties across classes
    return y, s, groups


def test_clustered_auc_variance_matches_the_papers_formulas():
    y, s, groups = clustered_data()
    found = ClusteredAUC.of(y, s, groups)
    auc, variance = obuchowski_by_pairs(y, s, groups)
    assert found.auc == pytest.approx(auc, abs=1e-12)
    assert clustered_variance(*found.centred(), found.m, found.n) == pytest.approx(variance, rel=1e-10)


def test_one_image_a_patient_is_delong_and_wilson():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 90)
    s = y + rng.normal(0, 1, 90)
    found = ClusteredAUC.of(y, s, np.arange(90))
    assert clustered_variance(*found.centred(), found.m, found.n) == pytest.approx(delong_auc_variance(y, s)[1])
    decided = s > 0.5
    interval = proportion_interval(decided, y == 1)
    assert (interval.low, interval.high) == pytest.approx(wilson(int((decided & (y == 1)).sum()), int(y.sum())))


def test_tripled_images_give_the_patient_level_p_value():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    a, b = y + rng.normal(0, 1, 80), 0.4 * y + rng.normal(0, 1, 80)
    once = paired_delong(y, a, b)
    tripled = paired_delong(np.repeat(y, 3), np.repeat(a, 3), np.repeat(b, 3), groups=np.repeat(np.arange(80), 3))
    assert tripled["p_value"] == pytest.approx(once["p_value"], rel=1e-9)
    assert tripled["difference"] == pytest.approx(once["difference"])
    ignored = paired_delong(np.repeat(y, 3), np.repeat(a, 3), np.repeat(b, 3))
    assert 0.01 < once["p_value"] < 0.3 and ignored["p_value"] < once["p_value"] / 3  # copies claim far more


def test_clustered_proportion_is_wider_than_counting_images():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(30), 4)
    hits = np.repeat(rng.random(30) < 0.6, 4)  # every image of a patient agrees
    members = np.ones(120, dtype=bool)
    clustered, naive = proportion_interval(hits, members, groups), proportion_interval(hits, members)
    assert clustered.low < naive.low and clustered.high > naive.high
    by_patient = proportion_interval(hits[::4], members[::4])
    # design effect 4 on 120 images is 30 patients again (a little wider: t with 29 df, not z)
    assert clustered.low == pytest.approx(by_patient.low, abs=0.01) and clustered.low < by_patient.low


def test_refusals_name_the_reason_and_never_give_zero_width():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    s = np.linspace(0, 1, 12)[::-1]
    found = auc_interval(y, s)
    assert found.low is None and found.refused == "2 positive and 10 negative images"
    one = proportion_interval(np.array([True, True]), np.array([True, True]), groups=np.array(["a", "a"]))
    assert one.low is None and one.refused == "1 patients in the denominator"
    perfect = auc_interval(np.repeat([0, 1], 10), np.repeat([0.1, 0.9], 10))
    assert perfect.high == 1.0 and perfect.low < 0.9 and perfect.refused is None


def test_compare_of_prediction_files_counts_patients(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    a, b = y + rng.normal(0, 1, 60), 0.6 * y + rng.normal(0, 1, 60)
    prob = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    paths = []
    for name, scores in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["key", "patient", "split", "label", "prob"])
            for i in range(180):  # every patient's image three times (three views, one score)
                writer.writerow([f"img{i}", f"pt{i // 3}", "val" if i < 60 else "test", int(y[i // 3]),
                                 repr(float(prob(scores[i // 3])))])
        paths.append(str(path))
    out = tmp_path / "compared.json"
    result = CliRunner().invoke(cli, ["compare", *paths, "--score", "prob", "--patient-column", "patient",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    expected = paired_delong(y[20:], prob(a[20:]), prob(b[20:]))
    assert written["auc"]["p_value"] == pytest.approx(expected["p_value"], rel=1e-6)
    assert written["patients"] == 40 and "clustered by patient" in written["auc"]["method"]


def test_paired_test_refuses_one_class():
    with pytest.raises(Exception, match="only one class"):
        paired_auc_test(np.ones(5), np.arange(5.0), np.arange(5.0))
