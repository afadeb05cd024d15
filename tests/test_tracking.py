"""Experiment tracking through the real libraries: a training logged to a local MLflow store and to
TensorBoard event files, read back with MLflow's client and TensorBoard's event reader; a third
party's tracker through the hook; a missing extra is one line."""

import json
import sys

import pytest
from click.testing import CliRunner

import medcls
from medcls.cli import cli


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    pytest.importorskip("mlflow", reason="medcls[mlflow] is not installed")
    pytest.importorskip("tensorboard", reason="medcls[tensorboard] is not installed")
    from tests.helpers import FAST, FIGURES

    runs = tmp_path_factory.mktemp("tracked")
    result = CliRunner().invoke(cli, ["train", *FAST, *FIGURES, "--out", str(runs / "run"), "--log", "tensorboard,mlflow,csv"],
                                env={"MLFLOW_TRACKING_URI": ""})
    assert result.exit_code == 0, result.output
    return runs / "run"


def test_mlflow_store_holds_params_epochs_final_figures_and_files(tracked):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=(tracked.parent / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("medcls")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["backbone"] == "test_resnet" and run.data.params["seed"] == "0"
    history = client.get_metric_history(run.info.run_id, "epoch_val_roc_auc")
    assert [m.step for m in history] == [1, 2, 3]  # one value per epoch
    metrics = json.loads((tracked / "metrics.json").read_text())
    assert run.data.metrics["test_roc_auc"] == pytest.approx(metrics["test"]["roc_auc"])
    assert run.data.metrics["test_roc_auc_low"] == pytest.approx(metrics["intervals"]["test"]["roc_auc"]["low"])
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "MODEL_CARD.md", "roc.png", "model.json", "model.safetensors"} <= files
    assert run.data.tags["backbone"] == "test_resnet" and run.data.tags["data_sha256"]
    assert run.info.status == "FINISHED"


def test_tensorboard_event_files_read_back(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"epoch_train_loss", "epoch_val_loss", "epoch_val_roc_auc", "epoch_lr"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("epoch_val_roc_auc")] == [1, 2, 3]
    assert "roc" in tags["images"] and "calibration" in tags["images"]


class PrintTracker:
    seen = []

    def __init__(self, out):
        self.out = out

    def start(self, params):
        PrintTracker.seen.append(("start", params["backbone"]))

    def epoch(self, step, values):
        PrintTracker.seen.append(("epoch", step, round(values["epoch_train_loss"], 6)))

    def finish(self, values, artefacts):
        PrintTracker.seen.append(("finish", "test_roc_auc" in values, len(artefacts) > 3))


class TrackerPlugin:
    @medcls.hookimpl
    def medcls_register_loggers(register):
        register("print", PrintTracker, description="remembers what it is told")


@pytest.mark.slow
def test_medcls_register_loggers(tmp_path):
    from medcls.plugins.manager import unregister_in_process

    medcls.register_plugin(TrackerPlugin, name="tracker_plugin")
    try:
        run = medcls.train(backbone="test_resnet", pretrained=False, epochs=2, finetune_epochs=0, image_size=32,
                           bootstrap=50, loggers="print", out=tmp_path / "run")
    finally:
        unregister_in_process("tracker_plugin")
    assert PrintTracker.seen[0] == ("start", "test_resnet")
    assert [row[1] for row in PrintTracker.seen if row[0] == "epoch"] == [1, 2]
    assert PrintTracker.seen[-1] == ("finish", True, True)
    assert run.metrics.test.roc_auc.value >= 0


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    from tests.helpers import assert_one_line_error

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if medcls[mlflow] were not installed
    result = CliRunner().invoke(cli, ["train", "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1",
                                      "--finetune-epochs", "0", "--image-size", "32", "--log", "mlflow",
                                      "--out", str(tmp_path / "run")])
    assert_one_line_error(result, "logging to mlflow needs the mlflow package", "pip install 'medcls[mlflow]'")


def test_an_unknown_tracker_name_fails_before_any_data_is_read():
    from tests.helpers import assert_one_line_error

    result = CliRunner().invoke(cli, ["train", "--backbone", "test_resnet", "--log", "tensorbord"])
    assert_one_line_error(result, "tensorbord", "tensorboard")


@pytest.mark.slow
def test_cross_validation_folds_and_experiment_runs_are_nested_mlflow_runs(tmp_path):
    pytest.importorskip("mlflow", reason="medcls[mlflow] is not installed")
    from mlflow import MlflowClient

    small = ["--backbone", "test_resnet", "--no-pretrained", "--epochs", "1", "--finetune-epochs", "0",
             "--image-size", "32", "--set", "bootstrap=50"]
    result = CliRunner().invoke(cli, ["train", *small, "--folds", "2", "--out", str(tmp_path / "cv"),
                                      "--log", "mlflow"], env={"MLFLOW_TRACKING_URI": ""})
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("medcls").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["cv/fold-1", "cv/fold-2"]
    pooled = json.loads((tmp_path / "cv" / "cv_metrics.json").read_text())["pooled"]["roc_auc"]
    assert parent.data.metrics["pooled_roc_auc"] == pytest.approx(pooled)
    assert "cv_metrics.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert all(r.info.status == "FINISHED" for r in runs)

    result = CliRunner().invoke(cli, ["experiment", "--vary", "dropout=0.2,0.5", "--seeds", "0", *small[:2],
                                      "--out", str(tmp_path / "exp"),
                                      "--set", "pretrained=false", "--set", "epochs=1", "--set", "finetune_epochs=0",
                                      "--set", "image_size=32", "--set", "bootstrap=50", "--set", "loggers=mlflow"],
                                env={"MLFLOW_TRACKING_URI": ""})
    assert result.exit_code == 0, result.output
    runs = client.search_runs([client.get_experiment_by_name("medcls").experiment_id],
                              filter_string="attributes.run_name = 'exp'")
    (experiment,) = runs
    nested = client.search_runs([experiment.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{experiment.info.run_id}'")
    assert sorted(r.info.run_name for r in nested) == ["exp/dropout=0.2/seed0", "exp/dropout=0.5/seed0"]
    assert "dropout.0.2.test_roc_auc_mean" in experiment.data.metrics


def test_csv_log_holds_every_epoch_and_the_final_figures(tracked):
    import csv

    with open(tracked / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows if r["name"] == "epoch_val_roc_auc"] == [1, 2, 3]
    metrics = json.loads((tracked / "metrics.json").read_text())
    (final,) = [r for r in rows if r["name"] == "test_roc_auc"]
    assert final["step"] == "0" and float(final["value"]) == pytest.approx(metrics["test"]["roc_auc"], abs=1e-6)


def test_mlflow_takes_any_folder_store_and_names_a_uri_it_refuses(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from medcls.errors import ConfigError
    from medcls.plugins.builtin.loggers import MLflowTracker

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "team-store").as_uri())  # not medcls's default
    tracker = MLflowTracker(tmp_path / "run")
    assert tracker.client.get_run(tracker.run_id).info.run_id == tracker.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    with pytest.raises(ConfigError, match="MLflow cannot use the tracking URI 'nosuchscheme://nowhere'"):
        MLflowTracker(tmp_path / "run2")


def test_a_tracking_uri_mlflow_refuses_stops_training_before_any_data_is_read(tmp_path, monkeypatch):
    """The URI is checked with the names, before the data: the data folder here does not even exist,
    and the error names the URI, not the data; no run folder is left."""
    pytest.importorskip("mlflow")
    from tests.helpers import assert_one_line_error, run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    monkeypatch.chdir(tmp_path)
    result = run("train", "--data", tmp_path / "not-read", "--no-pretrained", "--log", "mlflow")
    assert_one_line_error(result, "MLflow cannot use the tracking URI 'nosuchscheme://nowhere'", code=3)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault, status", [(RuntimeError("disk full"), "FAILED"), (KeyboardInterrupt(), "KILLED")])
def test_a_run_that_fails_or_is_interrupted_ends_so_in_mlflow(tmp_path, monkeypatch, fault, status):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from medcls.workflows import train as training
    from tests.helpers import SMALL

    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)

    def broken(*args, **kwargs):
        raise fault

    monkeypatch.setattr(training, "finish_run", broken)
    with pytest.raises(type(fault)):
        medcls.train("synthetic", out=str(tmp_path / "run"), loggers="mlflow", **{**SMALL, "epochs": 1})
    client = MlflowClient(tracking_uri=store)
    (found,) = client.search_runs([client.get_experiment_by_name("medcls").experiment_id])
    assert found.info.status == status
    assert found.data.tags["mlflow.source.name"] == "medcls" and found.data.tags["mlflow.source.type"] == "LOCAL"
