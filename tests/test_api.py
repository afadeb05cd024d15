"""The public Python API: train from arrays, typed results, predict/decide/evaluate/export/explain on a
Run, reload, in-process plugins, and errors that name the problem."""

import csv
import math
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medcls
from tests.helpers import SMALL, phantoms

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, labels, patients = phantoms()
    run = medcls.train(images=images, labels=labels, patients=patients, out=str(tmp_path_factory.mktemp("api") / "r"),
                       **SMALL)
    return run, images, labels


def test_import_is_cheap_and_lists_the_api():
    code = "import sys, medcls; assert 'torch' not in sys.modules; print(sorted(medcls.__all__))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    for name in ("train", "load_run", "Run", "create_classifier", "list_backbones", "register_plugin"):
        assert name in out


def test_train_from_arrays_returns_a_typed_run(trained):
    run, images, labels = trained
    assert run.classes == ["normal", "tumour"] and run.positive_class == "tumour"
    assert 0 < run.threshold < 1 and run.temperature is None
    test = run.metrics.test
    assert test.n > 0 and isinstance(test.roc_auc, medcls.Estimate)
    if test.roc_auc.low is None:  # a test split of a few patients: refused with its reason, never narrow
        assert "positive and" in test.roc_auc.refused and "no interval" in str(test.roc_auc)
    else:
        assert test.roc_auc.low <= test.roc_auc.value <= test.roc_auc.high and test.roc_auc.method
    assert run.metrics.gap["roc_auc"] == pytest.approx(run.metrics.train.roc_auc.value - test.roc_auc.value)
    assert run.history and run.history[0]["epoch"] == 1 and "val_roc_auc" in run.history[0]
    assert isinstance(run.model, torch.nn.Module) and run.config.backbone == "test_efficientnet"


def test_an_estimate_formats_with_its_interval_unless_given_a_spec():
    estimate = medcls.Estimate(0.9312, 0.9004, 0.9634, "DeLong")
    assert f"{estimate}" == str(estimate) == "0.931 (0.900-0.963)"
    assert f"{estimate:.2f}" == "0.93" and float(estimate) == 0.9312
    assert f"{medcls.Estimate(0.5)}" == "0.500"  # no interval computed


def test_predict_decide_and_reload_give_identical_probabilities(trained):
    run, images, labels = trained
    probs = run.predict(images[:8])
    assert probs.shape == (8, 2) and probs.dtype == np.float64 and np.allclose(probs.sum(1), 1)
    decided = run.decide(images[:8])
    assert list(decided) == [run.classes[int(p[1] >= run.threshold)] for p in probs]
    again = medcls.load_run(run.path)
    assert np.array_equal(again.predict(images[:8]), probs)
    # the same pixels as float in [0, 1], channels last or first, give the same answer
    as_float = images[:8].astype(np.float32) / 255
    np.testing.assert_allclose(run.predict(as_float), probs, atol=1e-6)
    np.testing.assert_allclose(run.predict(as_float[..., None]), probs, atol=1e-6)
    np.testing.assert_allclose(run.predict(torch.from_numpy(as_float[:, None])), probs, atol=1e-6)
    with pytest.raises(medcls.DataError, match="hold no image"):  # an empty selection, not numpy's ValueError
        run.predict(as_float[:0])


def test_a_folder_without_a_model_says_what_to_load_instead(trained, tmp_path):
    run = trained[0]
    with pytest.raises(medcls.DataError, match="give the --out folder of `medcls train`"):
        medcls.load_run(tmp_path)
    for fold in ("fold-1", "fold-2"):
        shutil.copytree(run.path, tmp_path / "cv" / fold)
    with pytest.raises(medcls.DataError, match=f"holds 2 runs \\(fold-1, fold-2\\).*'{tmp_path / 'cv' / 'fold-1'}'"):
        medcls.load_run(tmp_path / "cv")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    with pytest.raises(medcls.DataError, match="interrupted: finish it with `medcls train --resume"):
        medcls.load_run(tmp_path)


def test_predictions_csv_lets_anyone_recompute_the_figures(trained):
    from sklearn.metrics import roc_auc_score

    run, _, _ = trained
    with open(run.path / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"key", "split", "label", "p_normal", "p_tumour", "decision"}
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    test = [r for r in rows if r["split"] == "test"]
    auc = roc_auc_score([r["label"] == "tumour" for r in test], [float(r["p_tumour"]) for r in test])
    assert auc == pytest.approx(run.metrics.test.roc_auc.value, abs=1e-9)
    assert all(r["decision"] == ("tumour" if float(r["p_tumour"]) >= run.threshold else "normal") for r in test)
    # Every figure of metrics.json, recomputed from the file alone, to the last digit (the file's
    # probabilities read back to the floats the run scored, so no case crosses the threshold).
    written = json.loads((run.path / "metrics.json").read_text())
    with open(run.path / "predictions.csv", newline="") as fh:
        everything = list(csv.DictReader(fh))
    for split in ("train", "val", "test"):
        mine = [r for r in everything if r["split"] == split]
        again = medcls.assess(np.array([r["label"] == "tumour" for r in mine], dtype=np.int64),
                              np.array([float(r["p_tumour"]) for r in mine]), threshold=run.threshold, resamples=100)
        for name, value in written[split].items():
            if name not in again or (isinstance(value, float) and math.isnan(value)):
                continue
            if name in ("loss", "brier", "ece"):  # sums of floats: the run summed float32 probabilities
                assert again[name].value == pytest.approx(value, rel=1e-6), (split, name)
            else:  # counts at the threshold and ranks: exactly
                assert again[name].value == value, (split, name)


def test_evaluate_on_new_arrays_and_on_the_own_test_split(trained, tmp_path):
    run, images, labels = trained
    own = run.evaluate(out=tmp_path / "own")
    assert own.split == "test" and own.metrics.roc_auc.value == pytest.approx(run.metrics.test.roc_auc.value)
    assert (tmp_path / "own" / "predictions.csv").is_file() and (tmp_path / "own" / "report.md").is_file()
    new = run.evaluate(images=images[:40], labels=labels[:40], out=tmp_path / "new", bootstrap=100)
    assert new.split == "all" and new.n == 40


def test_export_and_explain_from_the_run(trained, tmp_path):
    import onnxruntime

    run, images, _ = trained
    exported = run.export("onnx", tmp_path / "onnx")
    session = onnxruntime.InferenceSession(exported.path, providers=["CPUExecutionProvider"])
    x = run.read(images[:3]).stacked().numpy()
    np.testing.assert_allclose(session.run(None, {"images": x})[0], run.predict(images[:3]), atol=1e-4)
    explanation = run.explain(images[:2], tmp_path / "cams")
    assert len(explanation.rows) == 2 and Path(explanation.grid).is_file()


def test_unknown_keys_and_bad_values_raise_as_the_cli_does():
    images, labels, _ = phantoms(20)
    with pytest.raises(medcls.ConfigError, match=r"unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        medcls.train(images=images, labels=labels, epoch=3)
    with pytest.raises(medcls.ConfigError, match="optimizer = 'adam' is invalid"):
        medcls.train(images=images, labels=labels, optimizer="adam")
    with pytest.raises(medcls.ConfigError, match="either data"):
        medcls.train("synthetic", images=images, labels=labels)


@pytest.mark.parametrize("images, labels, message", [
    (np.full((4, 8, 8), 1.5, np.float32), [0, 1, 0, 1], r"must lie in \[0, 1\]"),
    (np.full((4, 8, 8), np.nan, np.float32), [0, 1, 0, 1], "NaN"),
    (np.zeros((4, 8, 8), np.int32), [0, 1, 0, 1], "dtype int32"),
    (np.zeros((4, 8, 8, 7), np.uint8), [0, 1, 0, 1], "no channel axis"),
    (np.zeros((4, 8), np.uint8), [0, 1, 0, 1], "give \\(N, H, W\\)"),
    (np.zeros((4, 8, 8), np.uint8), [0, 1, 0], "labels has 3 entries for 4 images"),
    (np.zeros((4, 8, 8), np.uint8), [0.5, 1, 0, 1], "not a class"),
    (np.zeros((0, 8, 8), np.float32), [], r"shape \(0, 8, 8\) hold no image"),
    ([np.zeros((8, 8), np.uint8), np.full((9, 7), 1.5, np.float32)], [0, 1],
     r"images\[1\] \(shape \(9, 7\)\): float images must lie in \[0, 1\]"),
])
def test_bad_arrays_are_one_line_errors(images, labels, message):
    with pytest.raises(medcls.DataError, match=message):
        medcls.train(images=images, labels=labels, **SMALL)


def test_a_list_of_images_of_different_sizes_is_read_one_by_one(trained):
    """Images read one by one from files rarely share a size; a list of them is read image by image
    (before: numpy's "inhomogeneous shape" ValueError)."""
    from medcls.data.arrays import image_arrays

    grey, colour = np.zeros((32, 32), np.uint8), np.zeros((40, 48, 3), np.uint8)
    assert [a.shape for a in image_arrays([grey, colour], volumes=False)] == [(1, 32, 32), (3, 40, 48)]
    run, images, _ = trained
    wider = np.pad(images[1], ((0, 0), (0, 16)))  # 48 x 64
    probabilities = run.predict([images[0], wider])
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities[0], run.predict(images[:1])[0], atol=1e-6)
    np.testing.assert_allclose(probabilities[1], run.predict(wider[None])[0], atol=1e-6)


def test_create_classifier_and_list_backbones():
    assert "test_resnet" in medcls.list_backbones("test_*") and "resnet18" not in medcls.list_backbones("test_*")
    model = medcls.create_classifier("test_resnet", 3, in_chans=1)
    out = model(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 3)
    with pytest.raises(medcls.UnknownNameError, match="did you mean"):
        medcls.create_classifier("test_resnett", 2)


def test_an_in_process_plugin_registers_a_backbone_for_training(tmp_path):
    from torch import nn

    from medcls.plugins.manager import unregister_in_process

    class Tiny(nn.Module):
        num_features = 8

        def __init__(self, in_chans):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())

        def forward(self, x):
            return self.body(x)

    class NotebookPlugin:
        @medcls.hookimpl
        def medcls_register_backbones(self, register):
            register("notebook_tiny", Tiny, description="defined in a notebook", pretrained=False)

    medcls.register_plugin(NotebookPlugin(), name="notebook")
    try:
        assert "notebook_tiny" in medcls.list_backbones("notebook_*")
        images, labels, patients = phantoms(40, 24)
        run = medcls.train(images=images, labels=labels, patients=patients, **{**SMALL, "backbone": "notebook_tiny",
                                                                              "image_size": 24, "epochs": 1})
        assert run.info["backbone"] == "notebook_tiny"
    finally:
        unregister_in_process("notebook")

    class Misspelled:
        @medcls.hookimpl
        def medcls_register_backbone(self, register):
            pass

    with pytest.raises(medcls.PluginError, match="unknown hook"):
        medcls.register_plugin(Misspelled(), name="typo")


def test_running_a_notebook_cell_again_replaces_its_plugin(caplog):
    """A cell that defines and registers a plugin, run twice: the second definition replaces the
    first (before, both stayed registered and every later call failed on their clashing names)."""
    from medcls.api import make_registries

    def cell(value):
        class CellPlugin:
            @medcls.hookimpl
            def medcls_register_metrics(self, register):
                register("cell_metric", lambda y, p: value, higher_is_better=True)

        return medcls.register_plugin(CellPlugin())

    assert cell(0.5) == "CellPlugin"
    try:
        assert cell(0.7) == "CellPlugin"
        assert "plugin 'CellPlugin' registered again in this process" in caplog.text  # said, not silent
        assert make_registries()["metrics"].get("cell_metric").obj(None, None) == 0.7
    finally:
        medcls.unregister_plugin("CellPlugin")
    assert "cell_metric" not in make_registries()["metrics"]
    with pytest.raises(medcls.PluginError, match="no plugin named 'CellPlugin' was registered"):
        medcls.unregister_plugin("CellPlugin")
    with pytest.raises(medcls.PluginError, match="built in or installed"):
        medcls.register_plugin(object(), name="efficientnet_lite")


def test_without_out_the_run_lives_in_a_temporary_folder():
    images, labels, patients = phantoms(40, 24)
    run = medcls.train(images=images, labels=labels, patients=patients, **{**SMALL, "image_size": 24, "epochs": 1})
    folder = run.path
    assert folder.is_dir() and "medcls-run-" in str(folder)
    del run
    import gc

    gc.collect()
    assert not folder.exists()


@pytest.mark.slow
def test_a_temporary_run_writes_nothing_that_vanishes_and_can_be_kept(tmp_path, caplog):
    images, labels, patients = phantoms(40, 24)
    run = medcls.train(images=images, labels=labels, patients=patients, **{**SMALL, "image_size": 24, "epochs": 1})
    scratch = run.path
    for write in (lambda: run.export("onnx"), lambda: run.explain(images[:2])):
        with pytest.raises(medcls.ConfigError, match="temporary folder, removed with the Run: give .* an out= folder"):
            write()
    with caplog.at_level("WARNING", logger="medcls"):
        run.evaluate(images=images, labels=labels, bootstrap=50)
    assert "give out= to keep it" in caplog.text
    probs = run.predict(images[:4])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(medcls.ConfigError, match="exists and is not an empty folder"):
        run.save(tmp_path / "full")
    assert run.save(tmp_path / "kept") is run and run.path == tmp_path / "kept"
    exported = run.export("onnx")  # now into the kept folder
    first, second = run.explain(images[:2]), run.explain(images[2:4])  # each into a folder of its own
    assert Path(first.grid).parent == tmp_path / "kept" / "explain" and Path(first.grid).is_file()
    assert Path(second.grid).parent == tmp_path / "kept" / "explain-2"
    import gc

    gc.collect()
    assert not scratch.exists() and Path(exported.path).is_file()
    again = medcls.load_run(tmp_path / "kept")
    assert np.array_equal(again.predict(images[:4]), probs) and again.config.out == str(tmp_path / "kept")


@pytest.mark.slow
def test_the_notebook_example_runs(tmp_path, monkeypatch, capsys):
    """examples/notebook.py: arrays in, figures, predict, reload with identical probabilities. Run in
    this process as a notebook would (a subprocess would spend most of its time importing)."""
    monkeypatch.setattr(sys, "argv", ["notebook.py", "--out", str(tmp_path / "nb")])
    runpy.run_path(str(ROOT / "examples" / "notebook.py"), run_name="__main__")
    assert "identical probabilities" in capsys.readouterr().out
    assert json.loads((tmp_path / "nb" / "metrics.json").read_text())["test"]["roc_auc"] >= 0.8


@pytest.mark.slow
def test_cross_validate_returns_typed_folds_pooled_figures_and_cases_to_review(tmp_path):
    images, labels, patients = phantoms(90)
    cv = medcls.cross_validate(images=images, labels=labels, patients=patients, folds=3, out=str(tmp_path / "cv"),
                               **{**SMALL, "epochs": 2})
    assert isinstance(cv, medcls.CrossValidation) and cv.path == tmp_path / "cv"
    written = json.loads((cv.path / "cv_metrics.json").read_text())
    assert cv.pooled.n == 90 and isinstance(cv.pooled.roc_auc, medcls.Estimate)
    assert cv.pooled.roc_auc.value == pytest.approx(written["pooled"]["roc_auc"])
    assert cv.pooled.roc_auc.low == pytest.approx(written["pooled_intervals"]["roc_auc"]["low"])
    assert len(cv.folds) == len(cv.thresholds) == 3 and sum(fold.n for fold in cv.folds) == 90
    assert cv.folds[1].roc_auc.value == pytest.approx(written["per_fold"][1]["roc_auc"])
    assert "fold" not in cv.folds[0] and "threshold" not in cv.folds[0]
    assert cv.spread["roc_auc"]["mean"] == pytest.approx(np.mean([f.roc_auc.value for f in cv.folds]))
    first = cv.to_review[0]
    assert isinstance(first, medcls.CaseToReview) and len(cv.to_review) == 10
    assert first.label in ("normal", "tumour") and 1 <= first.fold <= 3 and 0 <= first.p_label <= 1
    assert first.p_label <= cv.to_review[-1].p_label and first.auc_without is not None


def test_predictions_csv_keeps_a_case_at_the_threshold_on_its_side(tmp_path):
    from medcls.core.runs import write_predictions

    threshold = 0.1234567849  # eight significant digits would write 0.12345678, below the threshold
    probs = np.array([[1 - threshold, threshold], [0.9, 0.1]])
    decide = lambda p: (p[:, 1] >= threshold).astype(int)  # noqa: E731
    write_predictions(tmp_path / "p.csv", ["no", "yes"], {"val": (["a", "b"], np.array([1, 0]), probs)}, decide)
    rows = list(csv.DictReader(open(tmp_path / "p.csv", newline="")))
    assert [float(r["p_yes"]) for r in rows] == list(probs[:, 1])
    assert [r["decision"] for r in rows] == ["yes" if float(r["p_yes"]) >= threshold else "no" for r in rows]


@pytest.mark.slow
def test_runs_trained_on_arrays_compare_after_a_restart_as_they_did_before(trained, tmp_path, monkeypatch):
    """In a later Python session the arrays are gone: compare reads the runs' stored predictions and
    patient groups, and gives the figures the live comparison gave (over patients)."""
    from medcls.data import arrays

    run_a, images, labels = trained
    _, _, patients = phantoms()
    run_b = medcls.train(images=images, labels=labels, patients=patients, out=str(tmp_path / "b"),
                         **{**SMALL, "epochs": 2, "seed": 1, "split_seed": 0})
    live = medcls.compare(run_a.path, run_b.path)
    monkeypatch.setattr(arrays, "SOURCES", {})  # what a new session holds
    stored = medcls.compare(run_a.path, run_b.path)
    assert "stored predictions" in stored.pop("source")
    assert stored["patients"] == live["patients"] < stored["n"] == live["n"]
    assert stored["auc"] == pytest.approx(live["auc"], abs=1e-6)
    for name in ("sensitivity", "specificity"):
        assert stored[name] == pytest.approx(live[name], abs=1e-9)
    splits = Path(run_b.path) / "splits.csv"  # a run from before groups were stored
    rows = list(csv.DictReader(splits.open(newline="")))
    with splits.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k in rows[0] if k != "group"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(medcls.DataError, match="has no patient groups"):
        medcls.compare(run_a.path, run_b.path)
