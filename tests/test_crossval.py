"""Cross-validation: every case scored once out of fold, folds grouped by patient, pooled intervals."""

import csv
import json

import pytest
from click.testing import CliRunner

import medcls

from medcls.cli import cli
from tests.helpers import assert_one_line_error

FAST = ["--backbone", "test_resnet", "--no-pretrained", "--image-size", "32", "--epochs", "1",
        "--finetune-epochs", "0", "--set", "bootstrap=100", "--set", "figures=false"]


@pytest.mark.slow
def test_three_folds_score_every_case_once_with_patients_kept_together(tmp_path):
    result = CliRunner().invoke(cli, ["train", *FAST, "--folds", "3", "--out", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "cv" / "oof_predictions.csv").open()))
    assert len(rows) == 400 and len({r["case"] for r in rows}) == 400
    fold_of_patient = {}
    for row in rows:  # synthetic#patientNNNN/sliceK: both slices of a patient share a fold
        patient = row["case"].split("/")[0]
        assert fold_of_patient.setdefault(patient, row["fold"]) == row["fold"]
    assert {r["fold"] for r in rows} == {"1", "2", "3"}
    metrics = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())
    assert metrics["n"] == 400 and len(metrics["per_fold"]) == 3 and sum(f["n"] for f in metrics["per_fold"]) == 400
    # two slices per patient: every pooled interval resamples patients, as a single run's would
    assert metrics["pooled_intervals"]["roc_auc"]["method"] == "Obuchowski clustered DeLong (200 patients)"
    for name in ("sensitivity", "ppv"):
        assert metrics["pooled_intervals"][name]["method"].startswith("Wilson, clustered (design effect over ")
    assert metrics["pooled_intervals"]["f1"]["method"] == "cluster bootstrap (patients, unstratified, BCa)"
    for fold in (1, 2, 3):
        assert (tmp_path / "cv" / f"fold-{fold}" / "model.safetensors").exists()
    assert "| pooled | 400 |" in result.output and "mean ± sd" in result.output
    # the cases at odds with their labels: the lowest out-of-fold P(label) first, with the AUC of the rest
    from sklearn.metrics import roc_auc_score

    by_case = {r["case"]: r for r in rows}
    own = {c: float(r[f"prob_{r['label']}"]) for c, r in by_case.items()}
    review = metrics["to_review"]
    assert len(review) == 10 and [r["p_label"] for r in review] == sorted(r["p_label"] for r in review)
    assert review[0]["p_label"] == pytest.approx(min(own.values()), abs=1e-6)
    for found in review[:3]:
        assert found["p_label"] == pytest.approx(own[found["case"]], abs=1e-6)
        row = by_case[found["case"]]
        assert found["fold"] == int(row["fold"]) and found["label"] == row["label"]
        others = [r for c, r in by_case.items() if c != found["case"]]
        labels = [r["label"] == "tumour" for r in others]
        assert found["auc_without"] == pytest.approx(roc_auc_score(labels, [float(r["prob_tumour"]) for r in others]),
                                                     abs=1e-5)
    assert "## Cases to look at again" in result.output and f"`{review[0]['case']}`" in result.output
    # the out-of-fold file (case, prob_<class> columns, no split) is scored by `medcls score` as pooled
    scores = medcls.score(tmp_path / "cv" / "oof_predictions.csv", threshold_rule="fixed", bootstrap=100)
    assert list(scores.splits) == ["all"] and scores.test.n == 400
    assert scores.test["roc_auc"].value == pytest.approx(metrics["pooled"]["roc_auc"], abs=1e-6)


def test_more_folds_than_patients_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", *FAST, "--folds", "500", "--out", str(tmp_path / "cv")])
    assert_one_line_error(result, "fewer than 500 folds: use at most")


def test_the_report_lists_cases_to_review_without_an_auc_column_for_more_classes(tmp_path):
    from medcls.config import make_config
    from medcls.workflows.crossval import cv_document

    config = make_config({}, {"folds": 3, "data": "retina.npz"}, where="test")
    result = {"folds": 3, "n": 3, "per_fold": [], "spread": {}, "pooled": {}, "pooled_intervals": {},
              "to_review": [{"case": "a.png", "label": "2", "fold": 1, "p_label": 0.04, "auc_without": None}]}
    cv_document(config, result).write(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| case | label | fold | P(label) |\n" in text and "| `a.png` | 2 | 1 | 0.040 |" in text
    assert "ROC AUC without it" not in text
