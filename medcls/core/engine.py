"""The training loop, in the shape of the PyTorch ImageNet example: train_one_epoch, evaluate, fit."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from medcls.core.checkpoint import FitState
from medcls.core.distributed import SINGLE, gather, wrap
from medcls.core.execution import Execution
from medcls.errors import ConfigError, TrainingDiverged
from medcls.stats.metrics import roc_auc


@dataclass
class Stage:
    """One stage of the two-stage recipe: which blocks train, at what rate, for how long."""

    name: str
    epochs: int
    lr: float
    top_blocks: int  # -1 = all backbone blocks, 0 = head only


@dataclass
class FrozenFeatures:
    """Stage 1 without augmentation: the frozen backbone's features computed once (the classic
    "bottleneck features"), so each epoch trains only the head. The loader yields the same
    batches in the same order as the image loader, so results match training on images."""

    train_loader: object  # (features, labels) batches
    evaluate_val: Callable[[], tuple]


@dataclass
class EpochResult:
    stage: str
    epoch: int
    train_loss: float
    train_auc: float
    val_loss: float
    val_metrics: dict
    lr: float
    seconds: float


@dataclass
class FitResult:
    history: list[EpochResult] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    stopped_early: list[str] = field(default_factory=list)


def train_one_epoch(model, loader, loss_fn, optimizer, execution: Execution, scaler=None, progress=None,
                    augment=None, distributed=SINGLE):
    """One pass over augmented training batches; returns mean loss and the (augmented) scores."""
    model.train()
    device = execution.device
    total, count, scores, labels = torch.zeros((), device=device), 0, [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if augment is not None:  # batched, on the device: one resample for the whole batch
            images = augment(images)
        images = execution.inputs(images)
        with execution.autocast():
            logits = model(images)
            loss = loss_fn(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16 needs loss scaling; bf16 and fp32 do not
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # Accumulate on the device; one synchronisation per epoch, not per step.
        total += loss.detach() * len(targets)
        count += len(targets)
        scores.append(logits.detach().float().softmax(1))
        labels.append(targets)
        if progress is not None:
            progress(len(targets))
    scores, labels = torch.cat(scores).cpu(), torch.cat(labels).cpu()
    if distributed.active:  # every rank's share of the epoch: one loss and one AUC for all of it
        totals = gather(torch.stack([total.detach().cpu(), torch.tensor(float(count))])[None], distributed)
        total, count = totals[:, 0].sum(), int(totals[:, 1].sum())
        scores, labels = gather(scores, distributed), gather(labels, distributed)
    return (total / max(count, 1)).item(), scores.numpy(), labels.numpy()


OPTIMIZERS = {
    "adamw": lambda params, lr, momentum, decay: torch.optim.AdamW(params, lr=lr, weight_decay=decay),
    "sgd": lambda params, lr, momentum, decay: torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                                                              weight_decay=decay),
    "rmsprop": lambda params, lr, momentum, decay: torch.optim.RMSprop(params, lr=lr, momentum=momentum,
                                                                      weight_decay=decay),
}
SCHEDULES = {
    "cosine": lambda optimizer, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs)),
    "step": lambda optimizer, epochs: torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3),
                                                                      gamma=0.1),
    # mode="max": fit() hands the schedule a score where higher is better.
    "plateau": lambda optimizer, epochs: torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max",
                                                                                    factor=0.1, patience=2),
    "none": lambda optimizer, epochs: None,
}


def make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float):
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, momentum, weight_decay)


def make_schedule(name: str, optimizer, epochs: int):
    if name not in SCHEDULES:
        raise ConfigError(f"schedule {name!r} is not one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](optimizer, epochs)


def fit(model: nn.Module, stages: list[Stage], *, train_loader, evaluate_val, loss_fn, execution: Execution, optimisation,
        on_epoch=None, progress_factory=None, augment=None, frozen: FrozenFeatures | None = None,
        checkpoint=None, resume=None, distributed=SINGLE) -> FitResult:
    """Run each stage with early stopping on the monitored validation metric; keep the best weights.
    `optimisation` is the config section of that name (optimizer, schedule, patience, ...).

    `evaluate_val()` returns (val_loss, val_metrics, score) where a higher score is better;
    `on_epoch(EpochResult, is_best)` reports progress; `checkpoint(FitState)` is called after
    every epoch, and `resume` (a FitState) continues from one.
    """
    import time

    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    epoch_number, first_stage = 0, 0
    if resume is not None:
        model.load_state_dict(resume.model)
        best_state = resume.best_model
        result.history = [EpochResult(**h) for h in resume.history]
        result.best_score, result.best_epoch = resume.best_score, resume.best_epoch
        result.stopped_early = list(resume.stopped_early)
        epoch_number = resume.epoch_number
        first_stage = resume.stage_index + 1 if resume.stage_finished else resume.stage_index
        if resume.stage_finished:
            model.load_state_dict(best_state)
    for stage_index, stage in enumerate(stages):
        if stage.epochs <= 0 or stage_index < first_stage:
            continue
        model.set_trainable(stage.top_blocks)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(optimisation["optimizer"], params, stage.lr, optimisation["momentum"],
                                   optimisation["weight_decay"])
        schedule = make_schedule(optimisation["schedule"], optimizer, stage.epochs)
        scaler = execution.grad_scaler()
        since_best, done = 0, 0
        if resume is not None and stage_index == resume.stage_index and not resume.stage_finished:
            optimizer.load_state_dict(resume.optimizer)
            if schedule is not None and resume.schedule is not None:
                schedule.load_state_dict(resume.schedule)
            since_best, done = resume.since_best, resume.stage_epoch
        on_features = frozen is not None and stage.top_blocks == 0
        step_model, loader, evaluate = ((model.head, frozen.train_loader, frozen.evaluate_val) if on_features
                                        else (model, train_loader, evaluate_val))
        # DDP is built over the parameters that train now, so it is wrapped again for every stage.
        step_model = wrap(step_model, distributed, execution.device)
        for stage_epoch in range(done, stage.epochs):
            epoch_number += 1
            if hasattr(getattr(loader, "sampler", None), "set_epoch"):
                loader.sampler.set_epoch(epoch_number)  # a new shuffle of the shards every epoch
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            progress = progress_factory(stage.name, epoch_number) if progress_factory else None
            train_loss, train_scores, train_labels = train_one_epoch(
                step_model, loader, loss_fn, optimizer, execution, scaler, progress, None if on_features else augment,
                distributed)
            if progress is not None:
                progress.close()
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"training diverged: the loss is {train_loss} in epoch {epoch_number} ({stage.name}); "
                    f"lower the learning rate (now {lr:.1e}) or train in fp32 (--set precision=fp32)")
            val_loss, val_metrics, score = evaluate()
            score = -val_loss if math.isnan(score) else score  # e.g. AUC undefined: fall back to loss
            if schedule is not None:
                schedule.step(score) if optimisation["schedule"] == "plateau" else schedule.step()

            epoch = EpochResult(stage.name, epoch_number, train_loss,
                                roc_auc(train_labels, train_scores, None), val_loss, val_metrics, lr,
                                time.perf_counter() - started)
            result.history.append(epoch)
            # Strictly better only: on ties the earlier (less fitted) weights are kept.
            if score > result.best_score:
                result.best_score, result.best_epoch = score, epoch_number
                best_state = copy.deepcopy(model.state_dict())
                since_best = 0
            else:
                since_best += 1
            if on_epoch is not None:
                on_epoch(epoch, epoch_number == result.best_epoch)
            stops = bool(optimisation["patience"] and since_best >= optimisation["patience"])
            if stops:
                result.stopped_early.append(stage.name)
            if checkpoint is not None:
                checkpoint(FitState(
                    stage_index=stage_index, stage_epoch=stage_epoch + 1,
                    stage_finished=stops or stage_epoch + 1 == stage.epochs, epoch_number=epoch_number,
                    since_best=since_best, best_score=result.best_score, best_epoch=result.best_epoch,
                    history=[dataclasses.asdict(h) for h in result.history], stopped_early=list(result.stopped_early),
                    model=model.state_dict(), best_model=best_state, optimizer=optimizer.state_dict(),
                    schedule=None if schedule is None else schedule.state_dict()))
            if stops:
                break
        # The next stage starts from the best weights so far, as does the final model.
        model.load_state_dict(best_state)
    return result
