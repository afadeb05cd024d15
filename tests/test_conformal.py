"""Abstention by split-conformal prediction sets: the per-class guarantee holds on fresh data, the
thresholds travel with the model, and predict says which cases to refer."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from medcls.stats.conformal import conformal_report, fit_conformal, prediction_sets, refer


def draw(rng, n, prevalence=0.2):
    y = (rng.random(n) < prevalence).astype(int)
    p1 = 1 / (1 + np.exp(-(2.5 * (y - 0.5) * 2 + rng.normal(0, 1.5, n))))
    return np.stack([1 - p1, p1], 1), y


def test_each_class_is_covered_as_promised_on_fresh_cases():
    rng = np.random.default_rng(0)
    covered = {0: [], 1: []}
    for _ in range(200):
        probs, y = draw(rng, 300)
        fitted = fit_conformal(probs, y, 0.9)
        test_probs, test_y = draw(rng, 300)
        report = conformal_report(test_probs, test_y, fitted)
        for k in (0, 1):
            covered[k].append(report["per_class_coverage"][k])
    for k in (0, 1):  # the minority class (about 60 validation cases) is covered too, not only on average
        assert 0.895 <= np.mean(covered[k]) <= 0.9 + 1 / 50, (k, np.mean(covered[k]))


def test_sets_threshold_each_class_and_refer_what_is_not_one_class():
    fitted = {"coverage": 0.9, "thresholds": [0.3, 0.2], "method": "m"}
    probs = np.array([[0.9, 0.1], [0.25, 0.75], [0.5, 0.5]])
    assert prediction_sets(probs, fitted).tolist() == [[True, False], [False, True], [True, True]]
    assert refer(probs, fitted).tolist() == [False, False, True]
    report = conformal_report(probs, np.array([0, 1, 1]), fitted)
    assert report["referred"] == 1 and report["kept"]["n"] == 2 and report["kept"]["sensitivity"] == 1.0


def test_a_class_with_too_few_validation_cases_always_enters_the_set():
    probs, y = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]]), np.array([0, 0, 1])
    fitted = fit_conformal(probs, y, 0.95)  # (1 + 1) * 0.95 > 1 positive: no finite threshold
    assert fitted["thresholds"][1] == 0.0 and fitted["calibration_cases"] == [2, 1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.helpers import FAST

    out = tmp_path_factory.mktemp("conformal") / "run"
    result = CliRunner().invoke(cli, ["train", *FAST, "--out", str(out), "--set", "abstain_coverage=0.9"])
    assert result.exit_code == 0, result.output
    return out


def test_the_run_stores_the_sets_reports_them_and_predict_refers(run, tmp_path):
    import medcls

    info = json.loads((run / "model.json").read_text())
    assert info["conformal"]["coverage"] == 0.9 and len(info["conformal"]["thresholds"]) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["abstention"]["test"]["coverage_target"] == 0.9
    assert "Abstention: cases referred to a reader" in (run / "report.md").read_text()
    loaded = medcls.load_run(run)
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    probs = np.array([[float(r["p_normal"]), float(r["p_tumour"])] for r in rows])
    expected = refer(probs, info["conformal"])
    assert loaded.predictor.refer(probs).tolist() == expected.tolist()
    predictions = loaded.predictions(np.zeros((3, 64, 64), np.float32))
    assert predictions.columns[-2:] == ["refer", "error"]
    assert {row["refer"] for row in predictions.rows()} <= {"yes", "no"}


def test_the_report_ends_with_the_reporting_checklist(run):
    text = (run / "report.md").read_text()
    last = text.rsplit("\n## ", 1)[1]
    assert last.startswith("Reporting checklist (TRIPOD+AI topics)")
    assert "| External validation | **not answered by medcls** |" in last
    assert "| Eligibility and case flow | answered | Case flow" in last
    assert "| Fairness: performance in subgroups | **not answered by medcls** |  | rerun with --by COLUMN" in last
