"""A stage whose validation ROC AUC collapses to chance starts again from the best weights at 0.3
of its rate (fine-tuning with frozen batch norm on 18,226 vessel slices: examples/README.md)."""

import copy

import pytest
import torch

from medcls.core.engine import EpochResult, Stage, collapsed, fit
from medcls.core.execution import choose_execution
from tests.helpers import Tiny, plain_sgd


def history(*aucs):
    return [EpochResult("s", i + 1, 0.5, 0.5, 0.5, {"roc_auc": auc}, 1e-3, 1.0) for i, auc in enumerate(aucs)]


@pytest.mark.parametrize("auc, earlier, expected", [
    (0.49, (0.62, 0.71), True),  # at chance after 0.71: collapsed
    (0.473, (0.787,), True),  # vessel slices, seed 1, stage 2's second epoch
    (0.51, (0.60, 0.64), False),  # never reached 0.65: a model still learning, not one that fell
    (0.60, (0.90,), False),  # worse, but not at chance
    (0.50, (), False),  # the first epoch has nothing to fall from
    (float("nan"), (0.9,), False),  # AUC undefined (one class in validation)
])
def test_collapse_is_a_fall_to_chance_from_a_model_that_worked(auc, earlier, expected):
    assert collapsed({"roc_auc": auc}, history(*earlier)) is expected


def test_without_a_roc_auc_nothing_is_called_a_collapse():
    assert collapsed({"loss": 0.7}, history(0.9)) is False


def scripted(aucs: list[float], stages: list[int], restarts: int, resume=None, states=None):
    """fit() over stages of the given lengths whose validation ROC AUCs follow `aucs`; returns the
    result and, per epoch, the mark of the weights it started from (each epoch's weights carry
    their epoch number in the head's bias)."""
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(32, 4)
    batches = [(x, (x[:, 0] > 0).long())]
    started_from = []
    done = [] if resume is None else [h["epoch"] for h in resume.history]

    def evaluate():
        done.append(len(done) + 1)
        with torch.no_grad():
            started_from.append(round(float(model.head.bias[0])))
            model.head.bias.fill_(len(done))  # a mark of the epoch these weights belong to
        auc = aucs[len(done) - 1]
        return 1.0 - auc, {"roc_auc": auc}, auc

    result = fit(model, [Stage(f"stage{i}", n, 0.01, -1) for i, n in enumerate(stages)], train_loader=batches,
                 evaluate_val=evaluate, loss_fn=torch.nn.CrossEntropyLoss(),
                 execution=choose_execution(torch.device("cpu"), model, "fp32", False),
                 optimisation=plain_sgd(patience=3, collapse_restarts=restarts), resume=resume,
                 checkpoint=None if states is None else (lambda s: states.append(copy.deepcopy(s))))
    return result, started_from


def test_a_collapsed_stage_starts_again_from_the_best_weights_at_0_3_of_the_rate():
    result, started_from = scripted([0.6, 0.8, 0.5, 0.7, 0.85, 0.84], [2, 3], restarts=1)
    assert [h.epoch for h in result.history] == [1, 2, 3, 4, 5, 6]  # the restarted stage has its 3 epochs again
    assert [h.lr for h in result.history] == pytest.approx([0.01, 0.01, 0.01, 0.003, 0.003, 0.003])
    assert started_from[3] == 2  # epoch 4 trained on from epoch 2's weights (the best), not epoch 3's
    assert result.best_epoch == 5
    assert result.restarts == ["stage 'stage1' collapsed in epoch 3 (validation ROC AUC 0.500, at chance) and "
                               "started again from epoch 2's weights at lr 3.0e-03"]


def test_collapse_restarts_0_lets_the_collapsed_stage_run_on():
    result, started_from = scripted([0.6, 0.8, 0.5, 0.7, 0.85], [2, 3], restarts=0)
    assert [h.lr for h in result.history] == pytest.approx([0.01] * 5)
    assert started_from[3] == 3 and result.restarts == []


def test_a_stage_restarts_at_most_collapse_restarts_times():
    result, _ = scripted([0.6, 0.8, 0.5, 0.5, 0.5, 0.5, 0.5], [2, 5], restarts=1)
    assert len(result.restarts) == 1 and result.stopped_early == ["stage1"]  # then patience ends it
    assert result.best_epoch == 2


def test_by_default_a_stage_that_collapses_again_starts_a_third_time_more_gently():
    from medcls.config import make_config

    restarts = make_config({}).collapse_restarts
    assert restarts == 2
    result, started_from = scripted([0.6, 0.8, 0.5, 0.5, 0.7, 0.85, 0.84], [2, 3], restarts=restarts)
    assert [h.lr for h in result.history] == pytest.approx([0.01, 0.01, 0.01, 0.003, 0.0009, 0.0009, 0.0009])
    assert started_from[3] == started_from[4] == 2  # both restarts from the best weights, epoch 2's
    assert len(result.restarts) == 2 and result.restarts[1].endswith("at lr 9.0e-04")


def test_a_run_resumed_after_a_restart_keeps_the_lower_rate(tmp_path):
    """The checkpoint (through its safetensors file) records the restart: the resumed stage goes
    on at the lowered rate with the restart in its record."""
    from medcls.core.checkpoint import load_checkpoint, save_checkpoint

    aucs = [0.6, 0.8, 0.5, 0.7, 0.85, 0.84]
    states = []
    whole, _ = scripted(aucs, [2, 3], restarts=1, states=states)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, states[3], torch.Generator(), None)  # after epoch 4, the first one restarted
    resumed, _ = scripted(aucs, [2, 3], restarts=1, resume=load_checkpoint(path, torch.Generator(), None))
    assert [h.lr for h in resumed.history] == pytest.approx([h.lr for h in whole.history])
    assert resumed.restarts == whole.restarts and resumed.best_epoch == whole.best_epoch == 5


@pytest.mark.slow
def test_a_training_run_reports_its_restart(tmp_path, monkeypatch):
    """The run's reading and metrics.json say which stage started again, from which epoch and at
    what rate (the collapse itself is forced: a tiny model on synthetic data does not collapse)."""
    import json
    import re

    import medcls
    from medcls.core import engine

    monkeypatch.setattr(engine, "collapsed", lambda metrics, history: len(history) == 1)  # stage 2's first epoch
    run = medcls.train(backbone="test_resnet", pretrained=False, epochs=1, finetune_epochs=2, image_size=32,
                       bootstrap=50, figures=False, out=tmp_path / "run")
    restarts = json.loads((tmp_path / "run" / "metrics.json").read_text())["restarts"]
    assert len(restarts) == 1 and restarts[0].startswith("stage 'finetune' collapsed in epoch 2 ")
    assert re.search(r"from epoch [12]'s weights at lr \d", restarts[0])  # the best before the collapse
    assert "Stage 'finetune' collapsed in epoch 2" in run.metrics_json["reading"]
    assert len(run.history) == 4  # 1 + the collapsed epoch + 2 again
