"""End to end on the built-in synthetic data with a tiny model: run folder, gap report, repeatability,
then evaluate and predict on the saved run."""

import csv
import json
import re
import shutil

import pytest
from click.testing import CliRunner

from medcls.cli import cli
from tests.helpers import FAST, FIGURES

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(cli, ["train", *FAST, *FIGURES, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_run_folder_holds_everything(run_dir):
    out, _ = run_dir
    for name in ("config.yaml", "model.safetensors", "model.json", "history.csv", "metrics.json", "report.md",
                 "report.html", "learning_curves.png", "roc.png", "pr.png", "calibration.png", "decision_curve.png",
                 "confusion_matrix.png", "manifest.json", "splits.csv"):
        assert (out / name).is_file(), name
    info = json.loads((out / "model.json").read_text())
    assert info["classes"] == ["normal", "tumour"] and info["in_chans"] == 1 and 0 <= info["threshold"] <= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and set(manifest["split_sha256"]) == {"train", "val", "test"}
    assert manifest["versions"]["torch"]
    assert len(list(csv.DictReader(open(out / "history.csv")))) == 3


def test_metrics_json_has_the_gap_report(run_dir):
    metrics = json.loads((run_dir[0] / "metrics.json").read_text())
    for split in ("train", "val", "test", "gap"):
        for name in ("loss", "accuracy", "roc_auc", "sensitivity", "specificity"):
            assert name in metrics[split], (split, name)
    assert metrics["gap"]["roc_auc"] == pytest.approx(metrics["train"]["roc_auc"] - metrics["test"]["roc_auc"])
    # Synthetic patients have two slices each: intervals resample patients, not images.
    # (an AUC of 1 has DeLong variance 0: then Wilson over the patients of the smaller class, said so)
    test = metrics["intervals"]["test"]
    assert re.fullmatch(r"Wilson, clustered \(design effect over \d+ patients, Korn-Graubard df\)",
                        test["sensitivity"]["method"]), test["sensitivity"]
    assert test["roc_auc"].get("refused") or re.match(r"(Obuchowski clustered DeLong|Wilson over \d+ patients)",
                                                       test["roc_auc"]["method"]), test["roc_auc"]
    assert set(metrics["operating"]["test"]["table"]) == {"tp", "fp", "tn", "fn"}


def test_cli_prints_the_side_by_side_table_and_a_reading(run_dir):
    output = run_dir[1].stdout
    assert "| metric | train | val | test | train-test gap |" in output
    assert "Reading:" in output and "Run folder:" in output


@pytest.mark.slow
def test_same_seed_same_results(run_dir, tmp_path):
    result = CliRunner().invoke(cli, ["train", *FAST, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    first = json.loads((run_dir[0] / "metrics.json").read_text())
    second = json.loads((tmp_path / "metrics.json").read_text())
    assert first["test"] == second["test"] and first["train"] == second["train"]


def test_evaluate_reuses_the_stored_test_split(run_dir):
    out, _ = run_dir
    result = CliRunner().invoke(cli, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    trained = json.loads((out / "metrics.json").read_text())["test"]
    assert payload["split"] == "test" and payload["n"] == trained["n"]
    assert payload["metrics"]["roc_auc"] == pytest.approx(trained["roc_auc"])
    assert (out / "evaluation" / "metrics.json").is_file()


def test_predict_writes_probabilities_and_an_error_column(run_dir, image_folder, tmp_path):
    out, _ = run_dir
    (image_folder / "no" / "broken.png").write_bytes(b"not a png")
    csv_path = tmp_path / "p.csv"
    result = CliRunner().invoke(cli, ["predict", str(out), str(image_folder), "-o", str(csv_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 25
    good = [r for r in rows if not r["error"]]
    assert len(good) == 24 and all(r["predicted"] in ("normal", "tumour") for r in good)
    assert abs(float(good[0]["prob_normal"]) + float(good[0]["prob_tumour"]) - 1) < 1e-5
    assert [r for r in rows if r["error"]][0]["file"].endswith("broken.png")
    assert "1 of 25 file(s) could not be read" in result.stderr


def test_corrupt_image_is_skipped_and_listed_or_fatal_with_strict(image_folder, tmp_path):
    (image_folder / "yes" / "corrupt.png").write_bytes(b"\x89PNG broken")
    args = ["train", "--data", str(image_folder), "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1",
            "--finetune-epochs", "0", "--image-size", "32", "--set", "val_fraction=0.25", "--set", "test_fraction=0.25"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image" in result.stderr
    assert "corrupt.png" in (tmp_path / "a" / "report.md").read_text()
    strict = CliRunner().invoke(cli, [*args, "--strict", "--out", str(tmp_path / "b")])
    assert strict.exit_code == 4 and "corrupt.png' cannot be decoded" in strict.stderr
    assert "Traceback" not in strict.output


@pytest.mark.slow
def test_plugin_backbone_trains(tmp_path):
    """The template plugin, pip-installed from plugins/medcls-example, trains end to end."""
    pytest.importorskip("medcls_example", reason="plugins/medcls-example is not installed")
    result = CliRunner().invoke(cli, ["train", "--backbone", "example_tiny_cnn", "--no-pretrained", "--epochs", "1",
                                      "--finetune-epochs", "0", "--image-size", "32", "--out", str(tmp_path),
                                      "--set", "monitor=youden_index"])
    assert result.exit_code == 0, result.output
    assert "youden_index" in json.loads((tmp_path / "metrics.json").read_text())["test"]


@pytest.mark.slow
def test_monitoring_a_lower_is_better_metric_keeps_the_lowest(tmp_path):
    result = CliRunner().invoke(cli, ["train", *FAST, "--set", "monitor=brier", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    history = list(csv.DictReader(open(tmp_path / "history.csv")))
    best = json.loads((tmp_path / "metrics.json").read_text())["best_epoch"]
    assert float(history[best - 1]["val_brier"]) == min(float(h["val_brier"]) for h in history)


def test_multiclass_npz_trains_and_reports_macro_metrics(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 24), ("test", 24)):
        labels = np.arange(n) % 3
        images = rng.integers(0, 60, (n, 24, 24)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 4 + 6 * label:10 + 6 * label, 4:20] = 250  # class = where the bar is
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1)
    np.savez(tmp_path / "bars.npz", **arrays)
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "bars.npz"), *FAST, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["threshold"] is None and metrics["test"]["n"] == 24
    per_class = metrics["per_class"]["test"]
    assert len(per_class["classes"]) == 3 and 0 <= per_class["micro_roc_auc"] <= 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "one-vs-rest per class" in report.lower()
    assert "stage 2 (every block)" in report  # the default depth, in words (not "top -1 blocks")
    assert 0 <= metrics["test"]["roc_auc"] <= 1 and 0 <= metrics["test"]["sensitivity"] <= 1


def test_evaluate_writes_html_subgroups_patient_level_and_refuses_missing_column(run_dir, image_folder, tmp_path):
    out, _ = run_dir
    manifest = tmp_path / "m.csv"
    rows = ["path,label,patient_id,site"]
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))):
        rows.append(f"{path},{'tumour' if path.parent.name == 'yes' else 'normal'},p{i // 2},site{i % 2}")
    manifest.write_text("\n".join(rows) + "\n")
    args = ["evaluate", str(out), "--data", str(manifest), "--bootstrap", "200", "--out", str(tmp_path / "e")]
    result = CliRunner().invoke(cli, [*args, "--by", "site", "--patient-level", "max", "--prevalence", "0.1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(metrics["subgroups"]) == {"site0", "site1"}
    assert metrics["patient_level"]["all"]["values"]["n"] == 12
    assert "ppv_at_prevalence_0.1" in metrics["operating"]["all"]["values"]
    page = (tmp_path / "e" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") >= 4
    assert "Subgroups of the all cases by <code>site</code>" in page
    assert set(metrics["subgroup_differences"]) == {"site0", "site1"}  # each site against the rest
    again = CliRunner().invoke(cli, [*args, "--by", "site"])  # the same --out: its report is kept
    assert again.exit_code == 3 and "--out" in again.stderr and "holds a run (metrics.json)" in again.stderr
    assert json.loads((tmp_path / "e" / "metrics.json").read_text()) == metrics
    missing = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "e2"), "--by", "scanner"])
    assert missing.exit_code == 4 and "--by column 'scanner' does not exist in the data (available: site)" in missing.stderr


def test_evaluate_on_new_data_of_one_class_reports_its_sensitivity(run_dir, image_folder, tmp_path):
    # A set of confirmed tumours only: sensitivity is the question, ROC AUC is not computable.
    out, _ = run_dir
    tumours = sorted((image_folder / "yes").glob("*.png"))
    (tmp_path / "only.csv").write_text("path,label\n" + "".join(f"{p},tumour\n" for p in tumours))
    result = CliRunner().invoke(cli, ["evaluate", str(out), "--data", str(tmp_path / "only.csv"), "--bootstrap", "100",
                                      "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["all"]["n"] == len(tumours) and 0 <= metrics["all"]["sensitivity"] <= 1
    assert metrics["intervals"]["all"]["sensitivity"]["low"] <= metrics["all"]["sensitivity"]
    assert "not computable" in (tmp_path / "e" / "report.md").read_text()
    (tmp_path / "caps.csv").write_text("path,label\n" + "".join(f"{p},Tumour\n" for p in tumours))
    spelled = CliRunner().invoke(cli, ["evaluate", str(out), "--data", str(tmp_path / "caps.csv")])
    assert spelled.exit_code == 4
    assert "has class 'Tumour', which the run was not trained on (normal, tumour) (the run spells it 'tumour'" \
        in spelled.stderr


@pytest.mark.slow
def test_a_second_evaluation_never_replaces_the_first(run_dir, image_folder, tmp_path):
    # Site A's data, then site B's, both with the default folder: two reports side by side.
    run = tmp_path / "run"
    shutil.copytree(run_dir[0], run, ignore=shutil.ignore_patterns("evaluation*"))
    for site, label_of in (("a", {"no": "normal", "yes": "tumour"}), ("b", {"yes": "tumour"})):
        rows = "".join(f"{p},{label_of[p.parent.name]}\n" for p in sorted(image_folder.rglob("*.png"))
                       if p.parent.name in label_of)
        (tmp_path / f"{site}.csv").write_text("path,label\n" + rows)
        result = CliRunner().invoke(cli, ["evaluate", str(run), "--data", str(tmp_path / f"{site}.csv"),
                                          "--bootstrap", "100"])
        assert result.exit_code == 0, result.output
    first = json.loads((run / "evaluation" / "metrics.json").read_text())
    second = json.loads((run / "evaluation-2" / "metrics.json").read_text())
    assert first["all"]["n"] == 24 and second["all"]["n"] == 12


@pytest.mark.slow
def test_evaluate_works_from_another_folder(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    out = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "--data", "images", *FAST, "--epochs", "1", "--finetune-epochs", "0",
                                       "--set", "val_fraction=0.25", "--set", "test_fraction=0.25", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["evaluate", str(out), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["split"] == "test"


@pytest.mark.slow
def test_temperature_calibration_is_fitted_on_validation_and_stored(tmp_path):
    result = CliRunner().invoke(cli, ["train", *FAST, "--set", "calibration=temperature", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["temperature"] > 0 and "temperature" in result.stderr
    evaluated = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--bootstrap", "100"])
    trained = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert json.loads(evaluated.stdout)["metrics"]["brier"] == pytest.approx(trained["brier"])


@pytest.mark.slow
def test_stage_one_on_cached_features_gives_the_same_results(tmp_path):
    """Without augmentation the frozen backbone's features are computed once; every epoch, and
    stage 2 after it, must come out as when the backbone runs on every batch."""
    pytest.importorskip("medcls_efficientnet_lite", reason="plugins/medcls-efficientnet-lite is not installed")
    runs = {}
    for cache in ("true", "false"):
        out = tmp_path / cache
        result = CliRunner().invoke(cli, ["train", "--backbone", "efficientnet_lite0", "--policy", "none",
                                          "--epochs", "3", "--finetune-epochs", "1", "--image-size", "48",
                                          "--set", "bootstrap=100", "--set", f"feature_cache={cache}",
                                          "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert ("features computed once" in result.stderr) == (cache == "true")
        runs[cache] = ([{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(out / "history.csv"))],
                       json.loads((out / "metrics.json").read_text())["test"])
    (history_a, test_a), (history_b, test_b) = runs["true"], runs["false"]
    for row_a, row_b in zip(history_a, history_b):
        for key in row_a:
            if key not in ("stage",):
                assert float(row_a[key]) == pytest.approx(float(row_b[key]), abs=1e-5), key
    for key, value in test_a.items():
        if isinstance(value, float):
            assert value == pytest.approx(test_b[key], abs=1e-5), key


@pytest.mark.slow
def test_cached_features_keep_the_pass_dtype_so_the_head_sees_what_a_full_pass_gives_it(registries):
    """In bf16 (the GPU default) the cache holds the backbone's bf16 features, not fp32 copies, and
    validation scores the head under the same autocast as a full pass: with fp32 copies an H200 run
    showed another training loss (0.789 against 0.747 in the first epoch); on the CPU in bf16 the two
    paths now agree to every printed digit."""
    import numpy as np
    import torch

    from medcls.config import make_config
    from medcls.core.execution import Execution
    from medcls.core.loader import frozen_features
    from medcls.core.models import build_classifier
    from medcls.data.prepared import prepare_data

    config = make_config({"image_size": 32, "policy": "none", "batch_size": 16})
    data = prepare_data(config, registries)
    train_rows, val_rows = data.rows("train"), data.rows("val")
    model, _ = build_classifier(registries, "test_resnet", len(data.classes), data.cache.channels, 0.3, pretrained=False)
    execution = Execution(torch.device("cpu"), torch.bfloat16)
    scored = []
    frozen = frozen_features(model, data, train_rows, val_rows, data.cache_labels(train_rows), config, execution,
                             torch.Generator().manual_seed(0), lambda probs: scored.append(probs) or (0.0, {}, 0.0))
    features, _ = next(iter(frozen.train_loader))
    assert features.dtype == torch.bfloat16

    frozen.evaluate_val()
    model.eval()
    with torch.no_grad(), execution.autocast():
        full = torch.cat([model(batch) for batch in data.batches(val_rows)(16)]).float().softmax(1)
    np.testing.assert_array_equal(scored[0], full.numpy().astype(np.float64))


def test_features_are_not_cached_when_augmenting_or_stochastic(registries):
    from medcls.config import make_config
    from medcls.core.models import build_classifier
    from medcls.core.augment import make_policy
    from medcls.core.loader import can_cache_features

    model, _ = build_classifier(registries, "resnet18", 2, 1, 0.3, pretrained=False)
    none, _ = make_policy(make_config({"policy": "none"}), registries)
    augmenting, _ = make_policy(make_config({"policy": "interpretable"}), registries)
    assert can_cache_features(make_config({"policy": "none", "pretrained": True}), model, none)
    assert not can_cache_features(make_config(), model, augmenting)
    assert can_cache_features(make_config({"stage1_augment": False, "pretrained": True}), model, augmenting)
    assert not can_cache_features(make_config({"pretrained": False}), model, none)
    assert not can_cache_features(make_config({"feature_cache": False, "pretrained": True}), model, none)
    model.backbone.add_module("extra_dropout", __import__("torch").nn.Dropout(0.2))
    assert not can_cache_features(make_config({"policy": "none", "pretrained": True}), model, none)
