"""Each training option reaches the model: mixup and cutmix mix, layer-wise learning-rate decay sets
the stated rates, warm-up ramps, and EMA weights (not the raw ones) are evaluated and kept."""

import copy
import math

import pytest
import torch

from medcls.core.engine import Mixer, Stage, fit, make_schedule, parameter_groups
from medcls.core.execution import choose_execution
from tests.helpers import Tiny, plain_sgd


def test_mixup_is_a_convex_combination_with_the_shuffled_batch_and_is_seeded():
    images = torch.rand(8, 1, 6, 6)
    targets = torch.arange(8)
    mixed, first, second, lam = Mixer(0.4, 0.0, seed=3)(images, targets)
    assert 0 < lam < 1 and torch.equal(first, targets) and not torch.equal(second, targets)
    order = [int(t) for t in second]
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[order])
    again = Mixer(0.4, 0.0, seed=3)(images, targets)
    assert torch.equal(again[0], mixed) and again[3] == lam


def test_cutmix_pastes_a_box_and_weighs_the_loss_by_its_area():
    images = torch.zeros(4, 1, 10, 10)
    images[1] = 1.0
    mixed, first, second, lam = Mixer(0.0, 1.0, seed=0)(images, torch.arange(4))
    pasted = (mixed != images).float().mean(dim=(1, 2, 3))
    donors = [int(s) for s in second]
    for i in range(4):
        if (images[donors[i]] != images[i]).any():
            assert math.isclose(float(pasted[i]), 1 - lam, abs_tol=1e-6)


def test_off_means_off():
    assert not Mixer(0.0, 0.0, seed=0)


def test_layer_wise_decay_gives_each_block_its_rate(registries):
    from medcls.core.models import build_classifier

    model, _ = build_classifier(registries, "resnet18", 2, 1, 0.0, pretrained=False)
    model.set_trainable(-1)
    groups = parameter_groups(model, 1e-3, 0.5)
    assert groups[0]["name"] == "head" and groups[0]["lr"] == 1e-3
    blocks = model.blocks()
    assert [g["lr"] for g in groups[1:]] == pytest.approx([1e-3 * 0.5 ** k for k in range(1, len(blocks) + 1)])
    covered = sum(len(g["params"]) for g in groups)
    assert covered == sum(1 for p in model.parameters() if p.requires_grad)
    assert len(parameter_groups(model, 1e-3, 1.0)) == 1  # off: one group


def test_warmup_ramps_from_a_tenth_then_follows_the_schedule():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = make_schedule("cosine", optimizer, epochs=6, warmup=2)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[1] == pytest.approx(0.55) and rates[2] == pytest.approx(1.0)
    assert rates[5] < rates[3] < rates[2]


def fitted_weights(ema: float):
    torch.manual_seed(0)
    model = Tiny()
    start = copy.deepcopy(model.state_dict())
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    execution = choose_execution(torch.device("cpu"), model, "fp32", False)
    optimisation = plain_sgd(momentum=0.5, ema=ema)
    seen = []

    def evaluate():
        seen.append(copy.deepcopy(model.state_dict()))
        return 0.0, {}, float(len(seen))  # every epoch "better": the last evaluated weights are kept

    fit(model, [Stage("all", 2, 0.5, -1)], train_loader=batches, evaluate_val=evaluate,
        loss_fn=torch.nn.CrossEntropyLoss(), execution=execution, optimisation=optimisation)
    return start, seen, model.state_dict()


def test_ema_weights_are_the_ones_evaluated_and_kept():
    start, seen, kept = fitted_weights(ema=0.999999)
    raw_start, raw_seen, raw_kept = fitted_weights(ema=0.0)
    moved = lambda a, b: max(float((a[k] - b[k]).abs().max()) for k in a)  # noqa: E731
    assert moved(raw_kept, raw_start) > 0.05  # plain SGD moves the weights
    assert moved(kept, start) < 1e-4  # an average with decay ~1 barely leaves the start
    assert moved(kept, seen[-1]) == 0  # what was evaluated is what is kept


@pytest.mark.slow
def test_label_smoothing_reaches_the_loss(tmp_path):
    """The same seed, data and batches: smoothing the targets raises the training loss of the
    first epoch (a confident correct prediction is no longer loss-free)."""
    import medcls

    losses = []
    for smoothing in (0.0, 0.3):
        run = medcls.train(backbone="test_resnet", pretrained=False, epochs=1, finetune_epochs=0, image_size=32,
                           bootstrap=50, figures=False, label_smoothing=smoothing, out=tmp_path / f"ls{smoothing}")
        losses.append(run.history[0]["train_loss"])
    assert losses[1] > losses[0] + 0.01


def scripted_fit(stage_scores: list[list[float]], patience: int):
    """fit() over stages whose validation scores follow a script; returns the result, the epochs
    run and the epoch whose weights were kept (each epoch's weights carry their epoch number)."""
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(32, 4)
    batches = [(x, (x[:, 0] > 0).long())]
    execution = choose_execution(torch.device("cpu"), model, "fp32", False)
    optimisation = plain_sgd(patience=patience)
    scores = [s for stage in stage_scores for s in stage]
    run = []

    def evaluate():
        run.append(len(run) + 1)
        with torch.no_grad():
            model.head.bias.fill_(len(run))  # a mark of the epoch these weights belong to
        return 0.0, {}, scores[len(run) - 1]

    stages = [Stage(f"stage{i}", len(s), 0.01, -1) for i, s in enumerate(stage_scores)]
    result = fit(model, stages, train_loader=batches, evaluate_val=evaluate,
                 loss_fn=torch.nn.CrossEntropyLoss(), execution=execution, optimisation=optimisation)
    return result, run, int(model.head.bias[0])


def test_a_fine_tuning_stage_that_dips_then_climbs_is_not_cut_off():
    """Stage 2 starts below stage 1's best (newly unfrozen blocks) and climbs past it: patience
    counts from the stage's own best, so it runs on and its better epoch is kept."""
    result, run, kept = scripted_fit([[0.5, 0.8, 0.7], [0.6, 0.65, 0.7, 0.75, 0.85, 0.84]], patience=2)
    assert run == list(range(1, 10))  # every stage-2 epoch ran (it kept improving on its own best)
    assert result.best_epoch == 8 and result.best_score == 0.85 and kept == 8


def test_a_stage_that_only_falls_stops_after_patience_and_keeps_the_earlier_best():
    result, run, kept = scripted_fit([[0.5, 0.8], [0.6, 0.55, 0.5, 0.45, 0.4]], patience=2)
    assert run == [1, 2, 3, 4, 5] and result.stopped_early == ["stage1"]
    assert result.best_epoch == 2 and kept == 2


def test_sgd_without_momentum_is_plain_sgd_not_an_error():
    """momentum=0 is in the allowed range; Nesterov needs momentum, so it is on only with one."""
    from medcls.core.engine import make_optimizer

    parameter = torch.nn.Parameter(torch.zeros(1))
    plain = make_optimizer("sgd", [parameter], 0.1, 0.0, 0.0)
    assert plain.param_groups[0]["nesterov"] is False
    assert make_optimizer("sgd", [parameter], 0.1, 0.9, 0.0).param_groups[0]["nesterov"] is True


def test_a_resumed_run_goes_on_with_its_moving_average(tmp_path):
    """The checkpoint keeps the EMA: a run resumed after its first epoch (through the safetensors
    file) ends with the weights of the uninterrupted run, where a restarted average would not."""
    import time

    from medcls.core.checkpoint import load_checkpoint, save_checkpoint

    def run(resume=None):
        torch.manual_seed(0)
        model = Tiny()
        x = torch.randn(64, 4)
        y = (x[:, 0] > 0).long()
        batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
        states = []
        fit(model, [Stage("all", 3, 0.5, -1)], train_loader=batches,
            evaluate_val=lambda: (0.0, {}, time.perf_counter()),  # every epoch "better": the last one is kept
            loss_fn=torch.nn.CrossEntropyLoss(), execution=choose_execution(torch.device("cpu"), model, "fp32", False),
            optimisation=plain_sgd(momentum=0.5, ema=0.9), checkpoint=lambda s: states.append(copy.deepcopy(s)),
            resume=resume)
        return model.state_dict(), states

    whole, states = run()
    assert states[0].ema is not None and not torch.equal(states[0].ema["head.weight"], states[0].model["head.weight"])
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, states[0], torch.Generator(), None)
    resumed, _ = run(resume=load_checkpoint(path, torch.Generator(), None))
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-7) for k in whole)
    states[0].ema = None  # what resuming did before: the average started again from the raw weights
    restarted, _ = run(resume=states[0])
    assert not all(torch.allclose(whole[k], restarted[k], atol=1e-7) for k in whole)


@pytest.mark.parametrize("losses, best_epoch, epochs_run", [
    ([0.5, 0.4, 0.3, 0.2, 0.1, 0.05], 6, 6),  # the score saturates, the loss still falls: the last is best
    ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 1, 3),  # a tie of both: the first (least fitted) stays, patience runs out
])
def test_a_saturated_score_is_told_apart_by_the_validation_loss(losses, best_epoch, epochs_run):
    """Validation ROC AUC 1.000 from the first epoch on (a few dozen easy images): the epoch kept,
    and the patience, follow the validation loss instead of the head that first reached 1.000."""
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(32, 4)
    batches = [(x[i:i + 16], (x[i:i + 16, 0] > 0).long()) for i in range(0, 32, 16)]
    seen = iter(losses)
    result = fit(model, [Stage("all", len(losses), 0.1, -1)], train_loader=batches,
                 evaluate_val=lambda: (next(seen), {}, 1.0), loss_fn=torch.nn.CrossEntropyLoss(),
                 execution=choose_execution(torch.device("cpu"), model, "fp32", False),
                 optimisation=plain_sgd(patience=2))
    assert result.best_epoch == best_epoch and len(result.history) == epochs_run


def epoch_orders(epochs: int = 3, n: int = 100, distributed=None, **settings):
    """The indices each epoch of a training loader draws over `n` images."""
    from medcls.config import TrainConfig
    from medcls.core.loader import make_loader

    config = TrainConfig(batch_size=8, **settings)
    dataset = torch.utils.data.TensorDataset(torch.arange(n))
    labels = (torch.arange(n) % 5 == 0).long().numpy()
    loader = make_loader(dataset, labels, config, 2, 0, torch.Generator().manual_seed(0), distributed)
    orders = []
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        orders.append([int(i) for (batch,) in loader for i in batch])
    return loader, orders


def test_epoch_size_gives_each_epoch_a_fresh_share_of_a_larger_set():
    loader, orders = epoch_orders(epoch_size=40)
    assert len(loader) == 5 and all(len(order) == 40 for order in orders)
    assert all(len(set(order)) == 40 for order in orders)  # shuffled: no image twice in an epoch
    assert orders[0] != orders[1] and len(set().union(*orders)) > 60  # a fresh share each epoch


def test_epoch_size_at_or_above_the_set_changes_nothing():
    _, whole = epoch_orders(epoch_size=0)
    _, same = epoch_orders(epoch_size=100)
    _, larger = epoch_orders(epoch_size=500)
    assert whole == same == larger and len(set(whole[0])) == 96  # the last part-batch dropped, as before


def test_epoch_size_smaller_than_a_batch_still_trains():
    loader, orders = epoch_orders(epoch_size=5)
    assert len(loader) == 1 and [len(order) for order in orders] == [5, 5, 5]


def test_epoch_size_caps_the_class_balancing_sampler():
    loader, orders = epoch_orders(epoch_size=48, class_balance="sampler")
    assert len(loader) == 6 and all(len(order) == 48 for order in orders)
    minority = sum(i % 5 == 0 for order in orders for i in order) / (3 * 48)
    assert 0.3 < minority < 0.7  # still balanced: a fifth of the images, about half of the draws


def test_epoch_size_under_ddp_gives_each_process_its_share_and_reshuffles():
    from types import SimpleNamespace

    shares = [epoch_orders(distributed=SimpleNamespace(active=True, world=2, rank=rank), epoch_size=48)[1]
              for rank in (0, 1)]
    assert all(len(order) == 24 for orders in shares for order in orders)
    assert not set(shares[0][0]) & set(shares[1][0])  # the two processes draw different images
    assert shares[0][0] != shares[0][1]  # set_epoch reaches the shuffle through the cap


@pytest.mark.slow
def test_epoch_size_reaches_a_training_run(tmp_path):
    """The same seed and data: a capped epoch takes fewer steps, so the first epoch's weights differ."""
    import medcls

    runs = [medcls.train(backbone="test_resnet", pretrained=False, epochs=1, finetune_epochs=0, image_size=32,
                         batch_size=4, bootstrap=50, figures=False, epoch_size=size, out=tmp_path / f"e{size}") for size in (0, 8)]
    assert runs[0].history[0]["train_loss"] != runs[1].history[0]["train_loss"]
    assert runs[1].config.epoch_size == 8


def test_a_negative_epoch_size_is_refused():
    from medcls.config import TrainConfig
    from medcls.errors import ConfigError

    with pytest.raises(ConfigError, match="epoch_size"):
        TrainConfig(epoch_size=-1)


def test_an_unknown_finetune_batchnorm_names_the_choices():
    from medcls.config import TrainConfig
    from medcls.errors import ConfigError

    with pytest.raises(ConfigError, match="finetune_batchnorm.*frozen.*train"):
        TrainConfig(finetune_batchnorm="sometimes")


@pytest.mark.parametrize("mode", ["frozen", "train"])
@pytest.mark.slow
def test_finetune_batchnorm_keeps_or_trains_the_pretrained_statistics(tmp_path, registries, mode):
    """Stage 2 with `frozen` keeps the ImageNet running statistics of every batch norm; with `train`
    the unfrozen blocks' statistics come from the training images (batch statistics, then precise BN)."""
    pytest.importorskip("medcls_efficientnet_lite", reason="plugins/medcls-efficientnet-lite is not installed")
    import medcls
    from medcls.core.models import build_classifier

    run = medcls.train(backbone="efficientnet_lite0", epochs=1, finetune_epochs=1, image_size=32, policy="none",
                       bootstrap=50, figures=False, finetune_batchnorm=mode, out=tmp_path / mode)
    pretrained, _ = build_classifier(registries, "efficientnet_lite0", 2, run.model.backbone.conv_stem.in_channels,
                                     0.0, pretrained=True)
    start, end = pretrained.state_dict(), run.model.state_dict()
    statistics = [key for key in start if key.endswith("running_mean")]
    changed = [key for key in statistics if not torch.allclose(start[key], end[key])]
    assert changed == [] if mode == "frozen" else len(changed) == len(statistics)
