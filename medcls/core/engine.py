"""The training loop, in the shape of the PyTorch ImageNet example: train_one_epoch, evaluate, fit."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
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

logger = logging.getLogger("medcls")


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
    best_loss: float = math.inf  # the validation loss at the best epoch: it breaks ties of the score
    stopped_early: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)  # a sentence per stage restarted after a collapse


class MultiLabelLoss(nn.Module):
    """Binary cross-entropy per finding on sigmoid outputs, for multi-label tasks: targets are
    (B, L) floats, 1 present, 0 absent and NaN ignored (an uncertain finding under the 'ignore'
    policy adds nothing to the loss or its gradient); `pos_weight` per finding weighs rare
    positives up; `label_smoothing` pulls targets towards 0.5. The mean is over known entries."""

    def __init__(self, pos_weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)
        self.label_smoothing = label_smoothing

    @staticmethod
    def training_scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.sigmoid(), targets

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        targets = torch.where(known, targets, torch.zeros_like(targets))
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        losses = nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight,
                                                                 reduction="none")
        return (losses * known).sum() / known.sum().clamp(min=1)


class MultiTaskLoss(nn.Module):
    """The main label's loss plus each auxiliary head's (multi-task learning, one backbone): cross-
    entropy for a classification head, mean squared error of standardised values for a regression
    head, each on the cases where its target is known. Fixed weighting: main + sum of weight x loss;
    uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018): sum of exp(-s) x loss + s, with one
    learned log-variance s per head, the main one included (they train with the head).

    Logits are (B, K + outputs of the tasks) in the order main, task 1, ...; targets are (B, 1 + T)
    float: the main class index, then each task's target (NaN: unknown)."""

    def __init__(self, main_loss: nn.Module, n_classes: int, tasks: list, uncertainty: bool = False) -> None:
        super().__init__()
        self.main_loss, self.n_classes = main_loss, n_classes
        self.kinds = [task.kind for task in tasks]
        self.weights = [task.weight for task in tasks]
        ends = list(torch.cumsum(torch.tensor([n_classes] + [task.outputs for task in tasks]), 0).tolist())
        self.slices = list(zip(ends[:-1], ends[1:]))
        self.log_variance = nn.Parameter(torch.zeros(1 + len(tasks))) if uncertainty else None

    def head_losses(self, logits: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
        losses = [self.main_loss(logits[:, :self.n_classes], targets[:, 0].long())]
        for j, (kind, (start, end)) in enumerate(zip(self.kinds, self.slices)):
            target = targets[:, 1 + j]
            known = ~torch.isnan(target)
            out = logits[known, start:end]
            if not known.any():
                losses.append(logits[:, start:end].sum() * 0.0)  # keeps the head in the graph
            elif kind == "regression":
                losses.append(nn.functional.mse_loss(out[:, 0], target[known]))
            else:
                losses.append(nn.functional.cross_entropy(out, target[known].long()))
        return losses

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = self.head_losses(logits, targets)
        if self.log_variance is not None:
            s = self.log_variance
            return sum(torch.exp(-s[i]) * loss + s[i] for i, loss in enumerate(losses))
        return losses[0] + sum(w * loss for w, loss in zip(self.weights, losses[1:]))

    def training_scores(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The main task's probabilities and labels, for the training ROC AUC."""
        return logits[:, :self.n_classes].softmax(1), targets[:, 0].long()


def training_scores(loss_fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities the loss trains and their labels: sigmoid per finding (multi-label), the
    main task's softmax (multi-task), else softmax."""
    if hasattr(loss_fn, "training_scores"):
        return loss_fn.training_scores(logits, targets)
    return logits.softmax(1), targets


class Mixer:
    """Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch: images mixed with a
    shuffled copy, the loss mixed in the same proportion. Seeded; with both on, each batch uses one."""

    def __init__(self, mixup: float, cutmix: float, seed: int) -> None:
        self.mixup, self.cutmix = mixup, cutmix
        self.generator = torch.Generator().manual_seed(seed)

    def __bool__(self) -> bool:
        return bool(self.mixup or self.cutmix)

    @staticmethod
    def beta_from_uniform(alpha: float, uniform: torch.Tensor) -> float:
        """A Beta(alpha, alpha) draw by inverting its CDF at a uniform from medcls's own generator
        (torch.distributions would draw from the global stream)."""
        from scipy.stats import beta

        return float(beta.ppf(float(uniform[0]), alpha, alpha))

    def __call__(self, images: torch.Tensor, targets: torch.Tensor):
        """(mixed images, targets, shuffled targets, weight of the first)."""
        use_cutmix = self.cutmix and (not self.mixup or torch.rand(1, generator=self.generator).item() < 0.5)
        lam = self.beta_from_uniform(self.cutmix if use_cutmix else self.mixup,
                                     torch.rand(1, generator=self.generator))
        order = torch.randperm(len(images), generator=self.generator).to(images.device)
        if use_cutmix:
            height, width = images.shape[-2:]
            cut = math.sqrt(1 - lam)
            h, w = int(height * cut), int(width * cut)
            y = int(torch.randint(0, height - h + 1, (1,), generator=self.generator))
            x = int(torch.randint(0, width - w + 1, (1,), generator=self.generator))
            images = images.clone()
            images[..., y:y + h, x:x + w] = images[order][..., y:y + h, x:x + w]
            lam = 1 - (h * w) / (height * width)
        else:
            images = lam * images + (1 - lam) * images[order]
        return images, targets, targets[order], lam


def train_one_epoch(model, loader, loss_fn, optimizer, execution: Execution, scaler=None, progress=None,
                    augment=None, distributed=SINGLE, mixer: Mixer | None = None, after_step=None):
    """One pass over augmented training batches; returns mean loss and the (augmented) scores.
    `mixer` mixes batches (mixup/cutmix); `after_step()` runs after every optimiser step (EMA)."""
    model.train()
    device = execution.device
    total, count, scores, labels = torch.zeros((), device=device), 0, [], []
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if augment is not None:  # batched, on the device: one resample for the whole batch
            images = augment(images)
        mixed = mixer(images, targets) if mixer else None
        if mixed is not None:
            images = mixed[0]
        images = execution.inputs(images)
        with execution.autocast():
            logits = model(images)
            if mixed is None:
                loss = loss_fn(logits.float(), targets)
            else:
                _, first, second, lam = mixed
                loss = lam * loss_fn(logits.float(), first) + (1 - lam) * loss_fn(logits.float(), second)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16 needs loss scaling; bf16 and fp32 do not
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            with execution.exact():  # fp32 gradients stay fp32 on a GPU (no TF32)
                loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        # Accumulate on the device; one synchronisation per epoch, not per step.
        total += loss.detach() * len(targets)
        count += len(targets)
        scored, scored_labels = training_scores(loss_fn, logits.detach().float(), targets)
        scores.append(scored)
        labels.append(scored_labels)
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
    "sgd": lambda params, lr, momentum, decay: torch.optim.SGD(params, lr=lr, momentum=momentum,
                                                              nesterov=momentum > 0, weight_decay=decay),
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


def make_schedule(name: str, optimizer, epochs: int, warmup: int = 0):
    """The stage's schedule, after `warmup` epochs of linear warm-up from a tenth of the rate."""
    if name not in SCHEDULES:
        raise ConfigError(f"schedule {name!r} is not one of {', '.join(SCHEDULES)}")
    warmup = min(warmup, max(0, epochs - 1))
    if not warmup:
        return SCHEDULES[name](optimizer, epochs)
    if name == "plateau":
        raise ConfigError("warmup_epochs cannot be combined with schedule plateau: choose cosine, step or none")
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
    after = SCHEDULES[name](optimizer, epochs - warmup) or torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, after], milestones=[warmup])


def parameter_groups(model, lr: float, decay: float) -> list[dict]:
    """The trainable parameters in groups: the head (and new pooling) at `lr`, backbone block k from
    the top at lr x decay^k (layer-wise learning-rate decay, as BEiT and timm's fine-tuning use)."""
    trainable = lambda module: [p for p in module.parameters() if p.requires_grad]  # noqa: E731
    if decay >= 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    groups, seen = [], set()
    for depth, block in enumerate(reversed(model.blocks()), start=1):
        params = [p for p in trainable(block) if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": lr * decay ** depth, "name": f"block -{depth}"})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return [{"params": rest, "lr": lr, "name": "head"}] + groups


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, execution: Execution) -> int:
    """Precise BN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): the running statistics
    of every batch norm that trains are recomputed as the plain average over `batches` (an
    iterable of image tensors) with the
    weights as they are now. The moving average kept during training lags weights that change
    fast and, from scratch, can leave evaluation-mode outputs far from training-mode ones (a 3D
    ResNet on VesselMNIST3D: validation loss 4.5 against 0.3 after recalibration). Frozen batch
    norm (a pretrained backbone's) is left alone. Returns how many layers were recalibrated."""
    from torch.nn.modules.batchnorm import _BatchNorm

    model.train()  # medcls's Classifier keeps frozen batch norm in evaluation mode
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if not norms:
        model.eval()
        return 0
    for module in model.modules():
        if not isinstance(module, _BatchNorm):
            module.training = False  # dropout and drop-path off, as when evaluating
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    for images in batches:
        with execution.autocast():
            model(execution.inputs(images.to(execution.device)))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()
    return len(norms)


class WeightAverage:
    """An exponential moving average of a module's weights (and batch-norm statistics), updated
    after every optimiser step: w_avg <- decay w_avg + (1 - decay) w."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.averaged = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.module = module

    @torch.no_grad()
    def update(self) -> None:
        for key, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                self.averaged[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                self.averaged[key].copy_(value)

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.averaged.items()}


def improves(score: float, loss: float, best_score: float, best_loss: float) -> bool:
    """Whether an epoch beats the best so far: a higher monitored score, or the same score with a
    lower validation loss. A saturated score (validation ROC AUC 1.000 on a few dozen images) then
    still tells a fitted model from the barely trained head that first reached it; on a tie of
    both, the earlier (less fitted) weights stay."""
    if score != best_score:
        return score > best_score
    return loss < best_loss


@dataclass
class StageProgress:
    """Where a stage stands: epochs done and its own best. Patience counts from the stage's own
    best, as a Keras EarlyStopping per fit() does: a fine-tuning stage that starts with a dip (newly
    unfrozen blocks) and then climbs keeps going while it climbs; the weights kept are still the
    best of the whole run."""

    done: int = 0
    since_best: int = 0
    best: float = -math.inf
    best_loss: float = math.inf

    def record(self, score: float, loss: float) -> None:
        if improves(score, loss, self.best, self.best_loss):
            self.since_best, self.best, self.best_loss = 0, score, loss
        else:
            self.since_best += 1


def resumed(model: nn.Module, loss_fn, resume: FitState | None) -> tuple[FitResult, dict, int, int]:
    """(result so far, best weights so far, epochs done, first stage to run): a fresh start, or
    where the checkpoint `resume` left off, with the model's and the loss's state restored."""
    if resume is None:
        return FitResult(), copy.deepcopy(model.state_dict()), 0, 0
    model.load_state_dict(resume.model)
    result = FitResult(history=[EpochResult(**h) for h in resume.history], best_epoch=resume.best_epoch,
                       best_score=resume.best_score, best_loss=resume.best_loss,
                       stopped_early=list(resume.stopped_early), restarts=list(resume.restarts))
    if resume.stage_finished:
        model.load_state_dict(resume.best_model)  # the next stage starts from the best weights
    if resume.loss and isinstance(loss_fn, nn.Module):
        loss_fn.load_state_dict(resume.loss)  # learned task weights continue where they were
    first_stage = resume.stage_index + 1 if resume.stage_finished else resume.stage_index
    return result, resume.best_model, resume.epoch_number, first_stage


def stage_optimiser(model: nn.Module, stage: Stage, loss_fn, optimisation, on_features: bool):
    """(optimizer, schedule) for the parameters that train in `stage`, with layer-wise decay
    unless only the head trains on cached features."""
    params = parameter_groups(model, stage.lr, 1.0 if on_features else optimisation.get("lr_decay", 1.0))
    learned = [p for p in loss_fn.parameters() if p.requires_grad] if isinstance(loss_fn, nn.Module) else []
    if learned:  # the loss's own parameters (learned task weights) train with the head
        params.append({"params": learned, "lr": stage.lr, "name": "loss"})
    optimizer = make_optimizer(optimisation["optimizer"], params, stage.lr, optimisation["momentum"],
                               optimisation["weight_decay"])
    return optimizer, make_schedule(optimisation["schedule"], optimizer, stage.epochs,
                                    optimisation.get("warmup_epochs", 0))


def continued_stage(resume: FitState, optimizer, schedule, ema: WeightAverage | None) -> StageProgress:
    """The interrupted stage's progress, with its optimiser, schedule and weight average restored."""
    optimizer.load_state_dict(resume.optimizer)
    if schedule is not None and resume.schedule is not None:
        schedule.load_state_dict(resume.schedule)
    if ema is not None and resume.ema:  # the average goes on where it was, not afresh
        ema.averaged = {k: resume.ema[k].to(v.device, v.dtype) for k, v in ema.averaged.items()}
    return StageProgress(resume.stage_epoch, resume.since_best, resume.stage_best, resume.stage_best_loss)


@contextlib.contextmanager
def averaged_weights(module: nn.Module, ema: WeightAverage | None):
    """Inside, `module` holds the averaged weights (they are the ones evaluated, kept and saved);
    after, the raw ones again, which training continues from."""
    if ema is None:
        yield
        return
    raw = copy.deepcopy(module.state_dict())
    module.load_state_dict(ema.state_dict())
    try:
        yield
    finally:
        module.load_state_dict(raw)


# Collapse: a validation ROC AUC this close to chance (0.5) after an earlier epoch had reached
# COLLAPSE_FROM. A working model on a few hundred validation images moves by a few hundredths
# from epoch to epoch, not from 0.65 or more to 0.5.
COLLAPSE_WINDOW = 0.03
COLLAPSE_FROM = 0.65


def collapsed(val_metrics: dict, history: list[EpochResult]) -> bool:
    """Whether an epoch's validation ROC AUC sits at chance (within COLLAPSE_WINDOW of 0.5) after an
    earlier epoch of the run reached COLLAPSE_FROM: the network's outputs collapsed to nearly one
    value. Fine-tuning a pretrained backbone with frozen batch norm did so on 18,226 vessel slices:
    the pooled features went from 70 % to 99 % exact zeros within 25 steps at lr 1e-4 and not at
    1e-5 (examples/README.md, "When fine-tuning collapses")."""
    auc = val_metrics.get("roc_auc", math.nan)
    earlier = [h.val_metrics.get("roc_auc", math.nan) for h in history]
    earlier = [value for value in earlier if math.isfinite(value)]
    return math.isfinite(auc) and abs(auc - 0.5) < COLLAPSE_WINDOW and bool(earlier) and max(earlier) >= COLLAPSE_FROM


@dataclass
class StageRun:
    """What one (re)start of a stage trains with: the parameters, their optimiser and schedule, the
    weight average, the loader and the (DDP-wrapped) model the steps go through."""

    lr: float
    trained: nn.Module
    step_model: nn.Module
    loader: object
    evaluate: Callable[[], tuple]
    optimizer: torch.optim.Optimizer
    schedule: object
    scaler: object
    ema: WeightAverage | None


# A collapsed stage starts again at 0.3 of its rate, and at 0.09 after a second collapse. On the
# vessel slices (seed 1, stage 2 at 1e-4 collapsed) a restart at 1e-5 learned slowly and was still
# climbing when its schedule ended (test ROC AUC 0.739); at 3e-5 it did not collapse again and
# reached 0.769 (examples/README.md, "Starting a collapsed stage again").
RESTART_LR_FACTOR = 0.3


def start_stage(model: nn.Module, stage: Stage, restarts: int, *, train_loader, evaluate_val, loss_fn,
                execution: Execution, optimisation, frozen: FrozenFeatures | None, distributed) -> StageRun:
    """The stage's parameters set to train and a fresh optimiser over them, at the stage's rate
    times RESTART_LR_FACTOR for every restart after a collapse."""
    model.set_trainable(stage.top_blocks)
    on_features = frozen is not None and stage.top_blocks == 0
    stage = dataclasses.replace(stage, lr=stage.lr * RESTART_LR_FACTOR ** restarts)
    optimizer, schedule = stage_optimiser(model, stage, loss_fn, optimisation, on_features)
    trained, loader, evaluate = ((model.head, frozen.train_loader, frozen.evaluate_val) if on_features
                                 else (model, train_loader, evaluate_val))
    ema = WeightAverage(trained, optimisation["ema"]) if optimisation.get("ema") else None
    # DDP is built over the parameters that train now, so it is wrapped again for every stage.
    return StageRun(stage.lr, trained, wrap(trained, distributed, execution.device), loader, evaluate, optimizer,
                    schedule, execution.grad_scaler(), ema)


def fit(model: nn.Module, stages: list[Stage], *, train_loader, evaluate_val, loss_fn, execution: Execution, optimisation,
        on_epoch=None, progress_factory=None, augment=None, frozen: FrozenFeatures | None = None,
        checkpoint=None, resume=None, distributed=SINGLE, mixer: Mixer | None = None) -> FitResult:
    """Run each stage with early stopping on the monitored validation metric; keep the best weights.
    `optimisation` is the config section of that name (optimizer, schedule, patience,
    collapse_restarts, ...). A stage whose validation ROC AUC collapses to chance (`collapsed`)
    starts again from the best weights at RESTART_LR_FACTOR of its rate, up to `collapse_restarts` times.

    `evaluate_val()` returns (val_loss, val_metrics, score) where a higher score is better;
    `on_epoch(EpochResult, is_best)` reports progress; `checkpoint(FitState)` is called after
    every epoch, and `resume` (a FitState) continues from one.
    """
    import time

    result, best_state, epoch_number, first_stage = resumed(model, loss_fn, resume)
    for stage_index, stage in enumerate(stages):
        if stage.epochs <= 0 or stage_index < first_stage:
            continue
        continuing = resume is not None and stage_index == resume.stage_index and not resume.stage_finished
        restarts = resume.stage_restarts if continuing else 0
        setup = dict(train_loader=train_loader, evaluate_val=evaluate_val, loss_fn=loss_fn, execution=execution,
                     optimisation=optimisation, frozen=frozen, distributed=distributed)
        run = start_stage(model, stage, restarts, **setup)
        on_features = run.trained is not model
        progress = continued_stage(resume, run.optimizer, run.schedule, run.ema) if continuing else StageProgress()
        while progress.done < stage.epochs:
            epoch_number += 1
            progress.done += 1
            if hasattr(getattr(run.loader, "sampler", None), "set_epoch"):
                run.loader.sampler.set_epoch(epoch_number)  # a new shuffle of the shards every epoch
            started = time.perf_counter()
            lr = run.optimizer.param_groups[0]["lr"]
            bar = progress_factory(stage.name, epoch_number) if progress_factory else None
            train_loss, train_scores, train_labels = train_one_epoch(
                run.step_model, run.loader, loss_fn, run.optimizer, execution, run.scaler, bar,
                None if on_features else augment, distributed, None if on_features else mixer,
                None if run.ema is None else run.ema.update)
            if bar is not None:
                bar.close()
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"training diverged: the loss is {train_loss} in epoch {epoch_number} ({stage.name}); "
                    f"lower the learning rate (now {lr:.1e}) or train in fp32 (--set precision=fp32)")
            with averaged_weights(run.trained, run.ema):
                val_loss, val_metrics, score = run.evaluate()
                score = -val_loss if math.isnan(score) else score  # e.g. AUC undefined: fall back to loss
                if improves(score, val_loss, result.best_score, result.best_loss):
                    result.best_score, result.best_loss, result.best_epoch = score, val_loss, epoch_number
                    best_state = copy.deepcopy(model.state_dict())
            if run.schedule is not None:
                run.schedule.step(score) if optimisation["schedule"] == "plateau" else run.schedule.step()
            progress.record(score, val_loss)
            epoch = EpochResult(stage.name, epoch_number, train_loss, roc_auc(train_labels, train_scores, None),
                                val_loss, val_metrics, lr, time.perf_counter() - started)
            restart = restarts < optimisation.get("collapse_restarts", 0) and collapsed(val_metrics, result.history)
            result.history.append(epoch)
            if on_epoch is not None:
                on_epoch(epoch, epoch_number == result.best_epoch)
            stops = bool(optimisation["patience"] and progress.since_best >= optimisation["patience"])
            if restart:
                # The outputs collapsed: the stage starts over from the best weights, more gently.
                restarts += 1
                model.load_state_dict(best_state)
                run = start_stage(model, stage, restarts, **setup)
                progress, stops = StageProgress(), False
                result.restarts.append(
                    f"stage '{stage.name}' collapsed in epoch {epoch_number} (validation ROC AUC "
                    f"{val_metrics['roc_auc']:.3f}, at chance) and started again from epoch {result.best_epoch}'s "
                    f"weights at lr {run.lr:.1e}")
                logger.warning(result.restarts[-1])
            elif stops:
                result.stopped_early.append(stage.name)
            if checkpoint is not None:
                checkpoint(FitState(
                    stage_index=stage_index, stage_epoch=progress.done,
                    stage_finished=stops or progress.done == stage.epochs, epoch_number=epoch_number,
                    since_best=progress.since_best, best_score=result.best_score, best_epoch=result.best_epoch,
                    best_loss=result.best_loss, stage_best=progress.best, stage_best_loss=progress.best_loss,
                    stage_restarts=restarts, history=[dataclasses.asdict(h) for h in result.history],
                    stopped_early=list(result.stopped_early), restarts=list(result.restarts),
                    model=model.state_dict(), best_model=best_state, optimizer=run.optimizer.state_dict(),
                    schedule=None if run.schedule is None else run.schedule.state_dict(),
                    loss=loss_fn.state_dict() if isinstance(loss_fn, nn.Module) else None,
                    ema=None if run.ema is None else run.ema.state_dict()))
            if stops:
                break
        # The next stage starts from the best weights so far, as does the final model.
        model.load_state_dict(best_state)
    return result
