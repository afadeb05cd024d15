"""Multi-task heads: the tasks grammar, targets from manifest columns, the weighted and the learned
(uncertainty) loss, each head scored by the single-task code, predict and export."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.data.tasks import Task, parse_tasks
from medcls.errors import ConfigError
from tests.helpers import assert_one_line_error, save_png


def test_tasks_grammar():
    assert parse_tasks("Age:regression:0.5, Sex:binary") == [Task("Age", "regression", 0.5), Task("Sex", "binary", 1.0)]
    for bad, message in (("Age", "write COLUMN:KIND"), ("Age:ordinal", "write COLUMN:KIND"),
                         ("Age:regression:-1", "must be a number >= 0"), ("Age:regression, Age:binary", "twice")):
        with pytest.raises(ConfigError, match=message):
            parse_tasks(bad)


def test_bad_tasks_key_is_one_line():
    result = CliRunner().invoke(cli, ["train", "--set", "tasks=Age:ordinal"])
    assert_one_line_error(result, "write COLUMN:KIND[:WEIGHT]")


def write_manifest(tmp_path, n_patients=60, blank_every=9):
    """Main label: a bright square (lesion yes/no). Aux: `Size`, the brightness of a band (a
    number), and `Side`, which half a dark dot is in (binary); some Size cells blank."""
    rng = np.random.default_rng(0)
    rows = []
    for patient in range(n_patients):
        lesion, size, side = rng.random() < 0.5, rng.uniform(10, 90), rng.choice(["left", "right"])
        for view in range(2):
            image = (rng.random((32, 32)) * 40 + 40).astype(np.uint8)
            if lesion:
                image[8:18, 10:22] = 230
            image[26:30, :] = int(size * 2.5)
            image[2:6, (3 if side == "left" else 25):(7 if side == "left" else 29)] = 0
            name = f"p{patient:03d}_{view}.png"
            save_png(tmp_path / "img" / name, image)
            rows.append({"path": f"img/{name}", "label": "yes" if lesion else "no", "patient_id": f"P{patient}",
                         "Size": "" if patient % blank_every == 4 else f"{size:.2f}", "Side": side})
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_task_targets_from_columns_and_their_errors(tmp_path, registries):
    from medcls.config import make_config
    from medcls.data.prepared import prepare_data
    from medcls.errors import DataError

    manifest = write_manifest(tmp_path, n_patients=12)
    config = make_config(overrides={"data": str(manifest), "tasks": "Size:regression, Side:binary", "image_size": 32})
    data = prepare_data(config, registries, split=False)
    assert [t.name for t in data.tasks] == ["Size", "Side"] and data.tasks[1].classes == ("left", "right")
    assert np.isnan(data.task_targets[:, 0]).sum() == 2  # one patient's blank cells, two images
    with pytest.raises(DataError, match="has no column 'Age' for tasks"):
        prepare_data(make_config(overrides={"data": str(manifest), "tasks": "Age:regression"}), registries, split=False)
    rows = manifest.read_text().splitlines()
    (tmp_path / "three.csv").write_text("\n".join(rows[:2] + [rows[2].rsplit(",", 1)[0] + ",middle"] + rows[3:]))
    with pytest.raises(DataError, match="column 'Side' has 3 value"):
        prepare_data(make_config(overrides={"data": str(tmp_path / "three.csv"), "tasks": "Side:binary"}), registries,
                     split=False)
    cells = rows[1].split(",")
    cells[3] = "abc"
    (tmp_path / "text.csv").write_text("\n".join([rows[0], ",".join(cells)] + rows[2:]))
    with pytest.raises(DataError, match="p000_0.png': Size = 'abc' is not a number"):
        prepare_data(make_config(overrides={"data": str(tmp_path / "text.csv"), "tasks": "Size:regression"}),
                     registries, split=False)


def test_fixed_weighting_is_main_plus_weighted_head_losses_on_known_targets():
    from medcls.core.engine import MultiTaskLoss

    tasks = [Task("Size", "regression", 0.5), Task("Side", "binary", 2.0, ("left", "right"))]
    loss_fn = MultiTaskLoss(torch.nn.CrossEntropyLoss(), 2, tasks)
    logits = torch.randn(5, 5)
    targets = torch.tensor([[0, 0.3, 1], [1, float("nan"), 0], [1, -1.2, float("nan")], [0, 0.1, 0], [1, 2.0, 1]])
    expected = torch.nn.functional.cross_entropy(logits[:, :2], targets[:, 0].long())
    known = ~torch.isnan(targets[:, 1])
    expected += 0.5 * torch.nn.functional.mse_loss(logits[known, 2], targets[known, 1])
    known = ~torch.isnan(targets[:, 2])
    expected += 2.0 * torch.nn.functional.cross_entropy(logits[known, 3:5], targets[known, 2].long())
    torch.testing.assert_close(loss_fn(logits, targets), expected)
    learned = MultiTaskLoss(torch.nn.CrossEntropyLoss(), 2, tasks, uncertainty=True)
    with torch.no_grad():
        learned.log_variance.copy_(torch.tensor([0.0, 1.0, -0.5]))
    heads = learned.head_losses(logits, targets)
    s = [0.0, 1.0, -0.5]
    want = sum(np.exp(-si) * h.item() + si for si, h in zip(s, heads))
    assert learned(logits, targets).item() == pytest.approx(want, rel=1e-5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multitask")
    manifest = write_manifest(root)
    out = root / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(manifest), "--backbone", "test_resnet", "--no-pretrained",
                                      "--image-size", "32", "--epochs", "8", "--finetune-epochs", "0", "--lr", "0.01",
                                      "--set", "tasks=Size:regression:0.5, Side:binary",
                                      "--set", "task_weighting=uncertainty", "--out", str(out),
                                      "--set", "bootstrap=100", "--set", "figures=false",
                                      "--set", "precision=fp32"])  # predict is compared with the model's own fp32 outputs
    assert result.exit_code == 0, result.output
    assert "Auxiliary heads" in result.output and "| Size | regression | test |" in result.output
    return out


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_each_head_equals_the_single_task_metrics_code(run, registries):
    from medcls.stats.assess import assess
    from medcls.stats.multitask import regression_figures

    metrics = json.loads((run / "metrics.json").read_text())
    test = [r for r in read_rows(run / "task_predictions.csv") if r["split"] == "test"]
    known = [r for r in test if r["y_Size"]]
    figures = regression_figures(np.array([float(r["y_Size"]) for r in known]),
                                 np.array([float(r["pred_Size"]) for r in known]))
    size = metrics["tasks"]["test"]["Size"]
    assert size["values"]["n"] == len(known) < len(test) and size["unknown"] == len(test) - len(known)
    for name in ("mae", "rmse", "r2", "pearson_r"):
        assert size["values"][name] == pytest.approx(figures[name], rel=1e-5)
    assert size["intervals"]["mae"]["low"] < size["values"]["mae"] < size["intervals"]["mae"]["high"]
    side = metrics["tasks"]["test"]["Side"]
    probs = np.array([[float(r["p_Side_left"]), float(r["p_Side_right"])] for r in test])
    y = np.array([0 if r["y_Side"] == "left" else 1 for r in test])
    alone = assess(probs, y, side["threshold"], list(registries["metrics"]), n_resamples=100)
    for name in ("roc_auc", "sensitivity", "specificity"):
        assert side["values"][name] == pytest.approx(alone["values"][name], abs=1e-6)
    main = [r for r in read_rows(run / "predictions.csv") if r["split"] == "test"]
    main_probs = np.array([[float(r["p_no"]), float(r["p_yes"])] for r in main])
    main_alone = assess(main_probs, np.array([r["label"] == "yes" for r in main], dtype=int),
                        metrics["threshold"], list(registries["metrics"]), n_resamples=100)
    assert metrics["test"]["roc_auc"] == pytest.approx(main_alone["values"]["roc_auc"], abs=1e-6)
    assert metrics["test"]["roc_auc"] > 0.85  # the main task is learnt beside the others
    learned = metrics["task_weights"]
    assert len(learned) == 3 and learned != [1.0, 1.0, 1.0]  # the log-variances trained


def test_predict_gives_every_head_in_the_column_units(run):
    import medcls

    loaded = medcls.load_run(run, device="cpu")
    files = sorted((run.parent / "img").glob("*.png"))[:4]
    rows = loaded.predictions([str(f) for f in files]).rows()
    assert {"prob_yes", "Size", "prob_Side_left", "prob_Side_right", "Side"} <= set(rows[0])
    tasks = {t["name"]: t for t in json.loads((run / "model.json").read_text())["tasks"]}
    images = loaded.read([str(f) for f in files]).stacked()
    with torch.no_grad():
        logits = loaded.model(images).float()
    expected = logits[:, 2] * tasks["Size"]["std"] + tasks["Size"]["mean"]
    np.testing.assert_allclose([float(r["Size"]) for r in rows], expected.numpy(), rtol=1e-4)
    np.testing.assert_allclose(loaded.predict([str(f) for f in files]), logits[:, :2].softmax(1).numpy(), atol=1e-5)


def test_export_holds_the_main_task_and_hf_is_refused(run, tmp_path, registries):
    import onnxruntime

    result = CliRunner().invoke(cli, ["export", str(run), "--format", "onnx", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    images = torch.rand(3, 1, 32, 32)
    got = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"images": images.numpy()})[0]
    import medcls

    np.testing.assert_allclose(got, medcls.load_run(run, device="cpu").predictor.probabilities(images), atol=1e-4)
    refused = CliRunner().invoke(cli, ["export", str(run), "--format", "hf", "-o", str(tmp_path / "hf")])
    assert_one_line_error(refused, "has auxiliary heads (tasks), which a timm-style folder cannot hold")


def test_tasks_with_an_ensemble_are_refused(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, n_patients=30)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--data", str(manifest), "--backbone", "test_resnet", "--no-pretrained",
                                      "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0", "--ensemble", "2",
                                      "--set", "tasks=Size:regression"])
    assert_one_line_error(result, "tasks (multi-task heads) cannot be combined with ensembles yet")
    assert not list((tmp_path / "runs").iterdir())  # no runs/<name> with a config.yaml of a run that never ran


def test_evaluate_scores_every_head_as_training_did(run, tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(run), "-o", str(tmp_path), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    trained = json.loads((run / "metrics.json").read_text())["tasks"]["test"]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["test"]
    assert evaluated["Size"]["values"]["mae"] == pytest.approx(trained["Size"]["values"]["mae"], rel=1e-6)
    assert evaluated["Side"]["values"]["roc_auc"] == pytest.approx(trained["Side"]["values"]["roc_auc"], abs=1e-9)
    assert evaluated["Side"]["threshold"] == trained["Side"]["threshold"]
    assert "Auxiliary heads" in (tmp_path / "report.md").read_text()


def test_resume_restores_the_learned_task_weights(tmp_path):
    """A resumed multi-task run continues with the log-variances it had learned, through the
    checkpoint file, and ends where the uninterrupted run ends."""
    import copy

    import medcls
    from medcls.core.checkpoint import load_checkpoint, save_checkpoint
    from medcls.core.engine import MultiTaskLoss, Stage, fit
    from medcls.core.execution import choose_execution

    torch.manual_seed(0)
    model = medcls.create_classifier("test_resnet", 3, in_chans=1)
    start = copy.deepcopy(model.state_dict())
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[i % 2, (i - 4) / 3.0] for i in range(8)], dtype=torch.float32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=4)
    tasks = [Task("Size", "regression", 1.0)]
    options = {"optimizer": "adamw", "momentum": 0.9, "weight_decay": 0.0, "schedule": "none", "patience": 0}
    execution = choose_execution(torch.device("cpu"), model, "fp32", False)

    def run(loss_fn, resume=None):
        def after_epoch(state):  # as training does: the file is written when the epoch ends
            if state.epoch_number == 1:
                save_checkpoint(tmp_path / "c.safetensors", state, torch.Generator(), None)

        fit(model, [Stage("scratch", 3, 0.05, -1)], train_loader=loader, evaluate_val=lambda: (1.0, {}, 0.5),
            loss_fn=loss_fn, execution=execution, optimisation=options, resume=resume,
            checkpoint=None if resume is not None else after_epoch)

    whole = MultiTaskLoss(torch.nn.CrossEntropyLoss(), 2, tasks, uncertainty=True)
    run(whole)
    state = load_checkpoint(tmp_path / "c.safetensors", torch.Generator(), None)
    assert state.loss is not None and not torch.equal(state.loss["log_variance"], torch.zeros(2))
    model.load_state_dict(start)
    resumed = MultiTaskLoss(torch.nn.CrossEntropyLoss(), 2, tasks, uncertainty=True)
    run(resumed, resume=state)
    torch.testing.assert_close(resumed.log_variance, whole.log_variance)
