"""How long a training run will take, told before it starts: a short timed warm-up of the model on
a few real training images (a forward pass, and a forward and backward pass through every layer),
scaled by the run's workload. The warm-up runs in eval mode and leaves no gradients behind, so it
changes no weight, batch-norm statistic or random stream: the run trains exactly as without it."""

from __future__ import annotations

import time
from dataclasses import dataclass

WARMUP_IMAGES = 32  # at most, and at most a batch: each pass is timed twice, the second counts
# Loading, augmentation, the optimiser step and logging on top of the passes timed: measured on the
# synthetic set and the brain set on 2 CPU cores (docs/benchmarks.md, "Time estimates").
OVERHEAD = 1.2


@dataclass(frozen=True)
class Workload:
    """What a run will do: images per epoch and per split, epochs per stage, how stage 1 trains."""

    train_images: int  # per epoch (at most epoch_size)
    val_images: int
    scored_images: int  # train + val + test, scored once at the end
    frozen_epochs: int  # stage 1 with the backbone frozen (0 when training from scratch)
    full_epochs: int  # epochs through every trainable layer (stage 2, or both stages from scratch)
    cached_features: bool  # stage 1 trains the head on features computed once


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    forward_per_s: float  # images a second, forward only
    train_per_s: float  # images a second, forward and backward through every layer
    workload: Workload

    def describe(self) -> str:
        minutes = self.seconds / 60
        told = f"about {minutes:.0f} min" if minutes >= 2 else f"about {self.seconds:.0f} s"
        workload = self.workload
        epochs = workload.frozen_epochs + workload.full_epochs
        return (f"time: {told} on this machine at most (early stopping may end it sooner): "
                f"{workload.train_images} images x {epochs} epochs, measured {self.train_per_s:.0f} img/s training "
                f"and {self.forward_per_s:.0f} img/s scoring")


def per_image_seconds(model, images, execution) -> tuple[float, float]:
    """Seconds per image of a forward pass and of a forward and backward pass through every
    layer, on `images` (a batch of real training images); the model is left as it was."""
    import torch

    mode = model.training
    wanted = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        inputs = execution.inputs(images)
        for p in model.parameters():
            p.requires_grad_(True)

        def timed(backward: bool) -> float:
            started = time.perf_counter()
            with torch.set_grad_enabled(backward), execution.autocast():
                output = model(inputs)
            if backward:
                with execution.exact():
                    output.float().sum().backward()
            if execution.device.type == "cuda":
                torch.cuda.synchronize(execution.device)
            return (time.perf_counter() - started) / len(inputs)

        forward = min(timed(False), timed(False))  # the first pays for allocations and kernel choice
        both = min(timed(True), timed(True))
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in zip(model.parameters(), wanted):
            p.requires_grad_(flag)
        model.train(mode)
    return forward, both


def estimate(model, images, execution, workload: Workload) -> TimeEstimate:
    """The run's time from now to its end: stage 1 (frozen: a forward pass an image, or once with
    cached features), the full-depth epochs, validation every epoch and the final scoring."""
    forward, both = per_image_seconds(model, images, execution)
    frozen = (workload.train_images + workload.val_images) * forward if workload.cached_features else \
        workload.frozen_epochs * (workload.train_images + workload.val_images) * forward
    full = workload.full_epochs * (workload.train_images * both + workload.val_images * forward)
    seconds = OVERHEAD * (frozen + full + workload.scored_images * forward)
    return TimeEstimate(seconds, 1 / max(forward, 1e-9), 1 / max(both, 1e-9), workload)
