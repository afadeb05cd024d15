"""Multi-label findings: uncertain and blank policies, manifests and npz arrays with several
findings, iterative stratification by patient, the masked loss, per-finding thresholds from
validation, per-finding figures equal to the binary code's, predict and ONNX per finding."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.data.findings import parse_policies, targets
from medcls.errors import ConfigError
from tests.helpers import assert_one_line_error, save_png

NAMES = ["Edema", "Effusion"]


def test_uncertain_policies_set_the_targets_as_stated():
    findings = [{"Edema": -1.0, "Effusion": 1.0}, {"Edema": 0.0, "Effusion": math.nan}, {"Edema": 1.0, "Effusion": -1.0}]
    ignore = targets(findings, NAMES, "ignore", "negative")
    assert np.isnan(ignore[0, 0]) and np.isnan(ignore[2, 1])  # uncertain: out of loss and metrics
    assert ignore[1, 1] == 0  # blank: not mentioned, negative (CheXpert practice)
    ones = targets(findings, NAMES, "positive", "ignore")
    assert ones[0, 0] == 1 and ones[2, 1] == 1 and np.isnan(ones[1, 1])
    zeros = targets(findings, NAMES, "negative", "negative")
    assert zeros[0, 0] == 0 and zeros[2, 1] == 0
    mixed = targets(findings, NAMES, "ignore, Edema=positive", "negative")
    assert mixed[0, 0] == 1 and np.isnan(mixed[2, 1])  # U-Ones for Edema, U-Ignore for the rest
    np.testing.assert_array_equal(ignore[:, :][~np.isnan(ignore)], [1, 0, 0, 1])


@pytest.mark.parametrize("spec, message", [
    ("maybe", "'maybe' is not one of positive, negative, ignore"),
    ("ignore, Oedema=positive", "names finding 'Oedema', which the data does not have"),
    ("Edema=positive", "gives no policy for every other finding"),
])
def test_bad_policies_are_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_policies(spec, NAMES)


def test_ignored_findings_leave_the_loss_and_its_gradient():
    from medcls.core.engine import MultiLabelLoss

    logits = torch.randn(6, 3, requires_grad=True)
    target = torch.tensor([[1, 0, float("nan")], [0, float("nan"), 1], [1, 1, 0],
                           [0, 0, 0], [float("nan"), 1, 1], [1, 0, 1]], dtype=torch.float32)
    loss = MultiLabelLoss()(logits, target)
    known = ~torch.isnan(target)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], target[known])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad[~known] == 0).all() and (logits.grad[known] != 0).all()
    weighted = MultiLabelLoss(pos_weight=torch.tensor([3.0, 1.0, 1.0]))(logits.detach(), target)
    assert weighted > loss.detach()  # finding 0's positives count three times


def test_positive_weights_are_negatives_per_positive_among_known_cases():
    from medcls.core.loader import positive_weights

    y = np.array([[1, 0], [0, np.nan], [0, 1], [0, 0]], dtype=np.float32)
    np.testing.assert_allclose(positive_weights(y), [3.0, 2.0])


def write_chexpert(tmp_path, n_patients=40):
    """A CheXpert-style manifest: two images per patient, findings 1/0/-1/blank; Edema is a bright
    square, Effusion a dark band at the bottom."""
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(n_patients):
        edema, effusion = rng.random() < 0.45, rng.random() < 0.35
        for view in range(2):
            image = (rng.random((32, 32)) * 80 + 60).astype(np.uint8)
            if edema:
                image[6:16, 8:20] = 240
            if effusion:
                image[24:30, :] = 10
            name = f"p{patient:03d}_{view}.png"
            save_png(tmp_path / "img" / name, image)
            uncertain = patient % 7 == 3
            rows.append({"path": f"img/{name}", "patient_id": f"P{patient}",
                         "Edema": "-1" if uncertain else str(int(edema)),
                         "Effusion": "" if patient % 5 == 4 and not effusion else str(int(effusion)) + ".0"})
    manifest = tmp_path / "chexpert.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "patient_id", "Edema", "Effusion"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_manifest_label_columns_read_with_the_chexpert_convention(tmp_path, registries):
    from medcls.config import make_config
    from medcls.data.loading import load_cases

    manifest = write_chexpert(tmp_path)
    config = make_config(overrides={"data": str(manifest), "label_columns": "Edema,Effusion"})
    cases, name, _ = load_cases(config, registries)
    assert name == "csv" and cases[0].findings is not None and set(cases[0].findings) == set(NAMES)
    uncertain = [c for c in cases if c.findings["Edema"] == -1]
    assert uncertain and all(c.label.startswith("Edema?") or "Edema?" in c.label for c in uncertain)
    assert any(math.isnan(c.findings["Effusion"]) for c in cases)  # blank cells stay blank until the policy


def test_pipe_separated_findings_column(tmp_path, registries):
    from medcls.config import make_config
    from medcls.data.loading import load_cases

    for i, text in enumerate(["Effusion|Mass", "No Finding", "Mass", ""]):
        save_png(tmp_path / f"{i}.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "m.csv").write_text("path,Finding Labels\n0.png,Effusion|Mass\n1.png,No Finding\n2.png,Mass\n3.png,\n")
    config = make_config(overrides={"data": str(tmp_path / "m.csv"), "label_column": "Finding Labels",
                                    "multi_label": True})
    cases, _, _ = load_cases(config, registries)
    assert [c.findings for c in cases] == [{"Effusion": 1.0, "Mass": 1.0}, {"Effusion": 0.0, "Mass": 0.0},
                                           {"Effusion": 0.0, "Mass": 1.0}, {"Effusion": 0.0, "Mass": 0.0}]


def test_bad_finding_value_is_one_line(tmp_path):
    save_png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "m.csv").write_text("path,Edema\na.png,2\n")
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "m.csv"), "--label-columns", "Edema"])
    assert_one_line_error(result, "line 2 column 'Edema': finding value '2' is not 1, 0, -1 (uncertain) or blank")


def test_npz_with_label_matrix_is_multi_label(tmp_path, registries):
    from medcls.config import make_config
    from medcls.data.loading import load_cases

    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": rng.integers(0, 2, (6, 3)) for s in ("train", "val", "test")})
    np.savez(tmp_path / "chest.npz", **arrays, class_names=np.array(["a", "b", "c"]))
    cases, _, _ = load_cases(make_config(overrides={"data": str(tmp_path / "chest.npz")}), registries)
    assert len(cases) == 18 and list(cases[0].findings) == ["a", "b", "c"]
    np.testing.assert_array_equal([list(c.findings.values()) for c in cases[:6]], arrays["train_labels"])


def test_iterative_stratification_keeps_every_finding_in_every_fold_and_patients_whole():
    from medcls.data.splits import multilabel_group_folds

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(120), 2)
    per_patient = (rng.random((120, 4)) < [0.5, 0.2, 0.08, 0.05]).astype(np.float32)
    labels = per_patient[groups]
    for rest, fold in multilabel_group_folds(labels, groups, 5, seed=0):
        assert not set(groups[rest]) & set(groups[fold])  # no patient on both sides
        assert (labels[fold].sum(0) > 0).all() and (labels[rest].sum(0) > 0).all()


def test_per_finding_auc_and_intervals_equal_the_binary_code_label_by_label(registries):
    from sklearn.metrics import roc_auc_score

    from medcls.stats.assess import assess
    from medcls.stats.multilabel import assess_findings

    rng = np.random.default_rng(2)
    y = (rng.random((150, 3)) < [0.5, 0.3, 0.2]).astype(np.float32)
    probs = np.clip(0.3 * y + rng.random((150, 3)) * 0.7, 0, 1)
    y[rng.random((150, 3)) < 0.1] = np.nan  # uncertain, ignored
    metrics = list(registries["metrics"])
    found = assess_findings(probs, y, [0.5, 0.4, 0.45], metrics, ["a", "b", "c"], n_resamples=200, seed=3)
    for j, name in enumerate("abc"):
        known = ~np.isnan(y[:, j])
        assert found["findings"][name]["values"]["roc_auc"] == pytest.approx(roc_auc_score(y[known, j], probs[known, j]))
        alone = assess(np.stack([1 - probs[known, j], probs[known, j]], 1), y[known, j].astype(int), [0.5, 0.4, 0.45][j],
                       metrics, n_resamples=200, seed=3)
        assert found["findings"][name]["intervals"] == alone["intervals"]
        assert found["findings"][name]["known"] == int(known.sum())
    aucs = [found["findings"][n]["values"]["roc_auc"] for n in "abc"]
    assert found["summary"]["macro_roc_auc"] == pytest.approx(np.mean(aucs))
    known = ~np.isnan(y)
    assert found["summary"]["micro_roc_auc"] == pytest.approx(roc_auc_score(y[known], probs[known]))
    low, high = (found["summary_intervals"]["macro_roc_auc"][k] for k in ("low", "high"))
    assert low < found["summary"]["macro_roc_auc"] < high


@pytest.mark.parametrize("groups", [None, "patients"])
@pytest.mark.slow
def test_summary_intervals_equal_the_summary_figures_of_every_resample(groups, monkeypatch):
    """The vectorised macro/micro bootstrap gives the intervals of summary_figures computed on each
    resample's repeated cases (the definition), with uncertain entries, a finding known in no case,
    one with a single class, patient resampling and the micro AUC taken in blocks."""
    from medcls.stats import multilabel
    from medcls.stats.bootstrap import bootstrap_figures

    rng = np.random.default_rng(5)
    y = (rng.random((90, 5)) < [0.5, 0.3, 0.2, 0.4, 0.3]).astype(np.float64)
    probs = np.clip(0.3 * y + rng.random((90, 5)) * 0.7, 0, 1).astype(np.float32)
    y[rng.random((90, 5)) < 0.15] = np.nan
    y[:, 3], y[:, 4] = np.nan, np.where(np.isnan(y[:, 4]), np.nan, 0.0)
    patients = rng.integers(0, 30, 90) if groups else None
    predicted = multilabel.decisions(probs, [0.4, 0.5, 0.45, 0.5, 0.5])
    monkeypatch.setattr(multilabel, "POOLED_WEIGHTS", 1000)  # micro AUC over several blocks of resamples
    found = multilabel.summary_intervals(probs, y, predicted, groups=patients, n_resamples=300, seed=7)
    expected = bootstrap_figures(lambda rows: multilabel.summary_figures(probs[rows], y[rows], predicted[rows]), 90,
                                 groups=patients, n_resamples=300, seed=7)
    assert set(found) == set(expected) == set(multilabel.SUMMARY_FIGURES)
    for name, interval in expected.items():
        assert found[name]["low"] == pytest.approx(interval["low"], abs=1e-6)
        assert found[name]["high"] == pytest.approx(interval["high"], abs=1e-6)
        assert found[name]["method"] == interval["method"]


def test_summary_intervals_of_findings_never_known_are_left_out():
    from medcls.stats import multilabel

    y = np.full((20, 2), np.nan)
    probs = np.full((20, 2), 0.5)
    assert multilabel.summary_intervals(probs, y, multilabel.decisions(probs, [0.5, 0.5]), n_resamples=50) == {}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("multilabel") / "run"
    result = CliRunner().invoke(cli, ["train", "--data", "synthetic-multilabel", "--backbone", "test_resnet",
                                      "--no-pretrained", "--image-size", "32", "--epochs", "2", "--finetune-epochs", "0",
                                      "--out", str(out), "--set", "bootstrap=50", "--set", "figures=false",
                                      "--set", "precision=fp32"])  # predict is compared with the model's own fp32 outputs
    assert result.exit_code == 0, result.output
    assert "Per finding (test)" in result.output and "midline_shift" in result.output
    return out


def test_thresholds_per_finding_come_from_validation(run):
    from medcls.stats.multilabel import choose_thresholds

    info = json.loads((run / "model.json").read_text())
    assert info["multi_label"] and info["classes"] == ["lesion", "calcification", "midline_shift"]
    with open(run / "predictions.csv", newline="") as fh:
        val = [r for r in csv.DictReader(fh) if r["split"] == "val"]
    probs = np.array([[float(r[f"p_{c}"]) for c in info["classes"]] for r in val])
    y = np.array([[float(r[f"y_{c}"]) if r[f"y_{c}"] else np.nan for c in info["classes"]] for r in val])
    expected = choose_thresholds("youden", probs, y, target=0.95, fixed=0.5)
    np.testing.assert_allclose(info["threshold"], expected, atol=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["findings"]["test"]["findings"]) == set(info["classes"])
    assert "macro_roc_auc" in metrics["findings"]["test"]["summary_intervals"]
    report = (run / "report.md").read_text()
    assert "| finding | known | positive | roc_auc" in report and "micro roc auc" in report
    assert "One per finding" in (run / "MODEL_CARD.md").read_text()


def test_run_predicts_a_probability_and_a_decision_per_finding(run, registries):
    import medcls
    from medcls.data.synthetic import synthetic_multilabel_cases

    loaded = medcls.load_run(run, device="cpu")
    images = np.stack([c.array for c in synthetic_multilabel_cases(6, 32, seed=5)])
    probs = loaded.predict(images)
    assert probs.shape == (6, 3) and loaded.multi_label
    with torch.no_grad():
        expected = loaded.model(torch.as_tensor(images)).float().sigmoid().numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)  # predict runs channels_last: float32 rounding
    decided = loaded.decide(images)
    np.testing.assert_array_equal(decided, probs >= np.array(loaded.threshold))
    rows = loaded.predictions(images).rows()
    assert {"present_lesion", "present_calcification", "present_midline_shift"} <= set(rows[0])


def test_multilabel_onnx_export_matches_pytorch(run, tmp_path, registries):
    import onnxruntime

    from medcls.core.runs import load_model

    result = CliRunner().invoke(cli, ["export", str(run), "--format", "onnx", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    description = json.loads((tmp_path / "export.json").read_text())
    assert description["multi_label"] and len(description["threshold"]) == 3
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    got = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"images": images.numpy()})[0]
    model, _ = load_model(run, registries)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(images).float().sigmoid().numpy(), atol=1e-4)


def test_single_label_options_are_refused_for_multi_label():
    result = CliRunner().invoke(cli, ["train", "--data", "synthetic-multilabel", "--backbone", "test_resnet",
                                      "--no-pretrained", "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0",
                                      "--set", "calibration=temperature"])
    assert_one_line_error(result, "calibration = 'temperature' is not available for multi-label data")


def test_multilabel_training_learns_the_manifest_findings(tmp_path):
    manifest = write_chexpert(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(manifest), "--set", "label_columns=Edema,Effusion",
                                      "--backbone", "test_resnet", "--no-pretrained", "--image-size", "32",
                                      "--epochs", "6", "--finetune-epochs", "0", "--lr", "0.01", "--out", str(out),
                                      "--set", "bootstrap=50", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    found = json.loads((out / "metrics.json").read_text())["findings"]["val"]["findings"]
    assert found["Edema"]["uncertain_ignored"] > 0  # -1 under the default 'ignore' policy
    assert all(found[n]["values"]["roc_auc"] > 0.8 for n in NAMES), {n: found[n]["values"]["roc_auc"] for n in NAMES}


def test_a_metric_registered_without_per_label_meaning_is_left_out_of_findings(registries):
    from types import SimpleNamespace

    from medcls.stats.multilabel import results

    metrics = [*registries["metrics"], SimpleNamespace(name="case_level", obj=lambda y, p, yhat: 1.0,
                                                       metadata={"per_label": False})]
    rng = np.random.default_rng(0)
    y = (rng.random((40, 2)) < 0.5).astype(np.float32)
    values = results(rng.random((40, 2)), y, [0.5, 0.5], metrics)
    assert "roc_auc" in values and "case_level" not in values


def test_evaluate_rescores_the_test_split_as_training_did(run, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(run), "-o", str(tmp_path), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    trained = json.loads((run / "metrics.json").read_text())["findings"]["test"]["findings"]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())["findings"]["test"]["findings"]
    for name in trained:
        for metric in ("roc_auc", "sensitivity", "specificity"):
            assert evaluated[name]["values"][metric] == pytest.approx(trained[name]["values"][metric], abs=1e-9)
    assert "| finding | known | positive" in (tmp_path / "report.md").read_text()


def test_evaluate_with_tta_reports_both(run, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(run), "-o", str(tmp_path), "--bootstrap", "100", "--tta", "flip"])
    assert result.exit_code == 0, result.output
    assert "single view" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["without_tta"]["findings"]["findings"]


@pytest.mark.slow
def test_compare_two_multilabel_runs_finding_by_finding(run, tmp_path):
    other = tmp_path / "other"
    trained = CliRunner().invoke(cli, ["train", "--data", "synthetic-multilabel", "--backbone", "test_resnet",
                                       "--no-pretrained", "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0",
                                       "--out", str(other), "--set", "bootstrap=50", "--set", "figures=false", "--seed", "1", "--set", "split_seed=0"])
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(cli, ["compare", str(run), str(other), "-o", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    compared = json.loads((tmp_path / "c.json").read_text())
    assert set(compared["findings"]) == {"lesion", "calcification", "midline_shift"}
    assert all(f["auc"]["p_holm"] >= f["auc"]["p_value"] for f in compared["findings"].values())
    assert "midline_shift (Holm-adjusted" in result.output


def test_gradcam_per_finding(run, tmp_path):
    from PIL import Image

    from medcls.data.synthetic import synthetic_multilabel_cases

    case = synthetic_multilabel_cases(2, 64, seed=4)[0]
    Image.fromarray((case.array[0] * 255).astype(np.uint8)).save(tmp_path / "a.png")
    for finding in ("lesion", "midline_shift"):
        result = CliRunner().invoke(cli, ["explain", str(run), str(tmp_path / "a.png"), "--class", finding,
                                          "-o", str(tmp_path / finding)])
        assert result.exit_code == 0, result.output
        assert list((tmp_path / finding).glob("*-gradcam.png"))


@pytest.mark.slow
def test_cross_validation_folds_keep_every_finding_and_pool_out_of_fold(tmp_path):
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "cv"
    result = CliRunner().invoke(cli, ["train", "--data", "synthetic-multilabel", "--backbone", "test_resnet",
                                      "--no-pretrained", "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0",
                                      "--folds", "3", "--out", str(out), "--set", "bootstrap=50", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    with open(out / "oof_predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400 and len({r["case"] for r in rows}) == 400  # every case once, out of fold
    for fold in ("1", "2", "3"):
        in_fold = [r for r in rows if r["fold"] == fold]
        assert all(any(r[f"y_{name}"] == "1" for r in in_fold) for name in ("lesion", "calcification", "midline_shift"))
    pooled = json.loads((out / "cv_metrics.json").read_text())["pooled_findings"]["findings"]
    y = [int(r["y_lesion"]) for r in rows]
    p = [float(r["prob_lesion"]) for r in rows]
    assert pooled["lesion"]["values"]["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)  # CSV: 6 digits


@pytest.mark.slow
def test_multilabel_ensemble_averages_the_members_sigmoid_probabilities(tmp_path, registries):
    from medcls.core.runs import load_model

    out = tmp_path / "ensemble"
    result = CliRunner().invoke(cli, ["train", "--data", "synthetic-multilabel", "--backbone", "test_resnet",
                                      "--no-pretrained", "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0",
                                      "--ensemble", "2", "--out", str(out), "--set", "bootstrap=50", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        members = [load_model(out / f"member-{i}", registries)[0](images).sigmoid() for i in (1, 2)]
        ensemble = load_model(out, registries)[0](images).sigmoid()
    torch.testing.assert_close(ensemble, (members[0] + members[1]) / 2, atol=1e-5, rtol=1e-4)
    assert json.loads((out / "model.json").read_text())["multi_label"]


def test_python_api_trains_on_arrays_with_a_label_matrix(tmp_path):
    import medcls
    from medcls.data.synthetic import synthetic_multilabel_cases

    cases = synthetic_multilabel_cases(160, 32, seed=1)
    images = np.stack([c.array for c in cases])
    labels = {name: np.array([c.findings[name] for c in cases]) for name in ("lesion", "calcification")}
    labels["lesion"][:4] = -1  # uncertain, ignored by default
    run = medcls.train(images=images, labels=labels, patients=[c.patient_id for c in cases], backbone="test_resnet",
                       pretrained=False, image_size=32, epochs=1, finetune_epochs=0, bootstrap=50, figures=False,
                       out=str(tmp_path / "run"))
    assert run.multi_label and run.classes == ["lesion", "calcification"]
    assert run.predict(images[:3]).shape == (3, 2)
    with pytest.raises(medcls.DataError, match=r"labels\[0, 1\] = 3.0: multi-label arrays hold 1"):
        medcls.train(images=images[:2], labels=np.array([[1, 3], [0, 1]]), backbone="test_resnet")
