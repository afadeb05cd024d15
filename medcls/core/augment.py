"""Augmentation policies: made from the registry, checked against their contract, and `none`.

A policy works on one image or on a whole batch on its device: `policy(image)` for a (C, H, W) or
(C, D, H, W) tensor, and `policy.batch(images)` for (B, C, ...) batches, which the training loop
calls after moving the batch to the GPU (or CPU), so augmentation is one batched resample instead
of B small ones. The built-in geometry and intensity policy is in `medcls.core.affine_augment`
(MONAI transforms; MONAI is imported only when such a policy is built, so scoring, evaluating and
`--policy none` runs start without it).
"""

from __future__ import annotations

import copy

import torch

from medcls.config import TrainConfig
from medcls.errors import ConfigError, PluginError


def to_unit_float(img) -> torch.Tensor:
    """A plain float32 tensor in [0, 1] (MONAI returns MetaTensors)."""
    tensor = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
    return tensor.float().clamp(0.0, 1.0)


class NoAugmentation:
    """The `none` policy: images pass unchanged, one at a time or as a batch."""

    identity = True  # lets stage 1 train on features computed once

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return to_unit_float(image)

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        return to_unit_float(images)


def make_policy(config: TrainConfig, registries):
    entry = registries["policies"].get(config.policy)
    defaults = dict(entry.metadata.get("params", {}))
    unknown = sorted(set(config.aug) - set(defaults))
    if unknown:
        raise ConfigError(
            f"policy {config.policy!r} has no parameter {unknown[0]!r}; its parameters: "
            f"{', '.join(defaults) or 'none'} (see `medcls list policies`)"
        )
    params = {**defaults, **{k: type(defaults[k])(v) for k, v in config.aug.items()}}
    # A policy says whether it flips left-right (`flips_lr=fn(params)` at registration); without
    # it, a parameter named lr_flip is the sign.
    flips = entry.metadata.get("flips_lr")
    flips_lr = bool(flips(params)) if flips is not None else params.get("lr_flip", 0) > 0
    if config.laterality_sensitive and flips_lr and not config.allow_lr_flip:
        raise ConfigError(
            f"policy {config.policy!r} flips images left-right ({params}) but the data set is "
            "marked laterality-sensitive: use --aug lr_flip=0 or another policy, or --set allow_lr_flip=true"
        )
    transform = entry.obj(**params)
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=config.seed)
    return transform, params


def check_policy_output(transform, images: torch.Tensor, name: str, plugin: str) -> None:
    """A policy's contract, checked on the first training images before training starts: the same
    shape, float32, within [0, 1]. A copy is checked, so the run's random stream is untouched."""
    probe = copy.deepcopy(transform)
    given = images.float().clone()
    try:
        out = probe.batch(given.clone()) if callable(getattr(probe, "batch", None)) else \
            torch.stack([torch.as_tensor(probe(image)) for image in given.clone()])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise PluginError(f"policy {name!r} of plugin {plugin!r} fails on the first training images ({first})") \
            from None
    out = torch.as_tensor(out)
    problem = None
    if tuple(out.shape) != tuple(given.shape):
        problem = f"changes their shape {tuple(given.shape)} -> {tuple(out.shape)}"
    elif out.dtype != torch.float32:
        problem = f"returns {out.dtype}, not float32"
    elif not torch.isfinite(out).all() or out.min() < -1e-4 or out.max() > 1 + 1e-4:
        problem = f"leaves [0, 1] (values in [{float(out.min()):.3g}, {float(out.max()):.3g}]): clamp its output"
    if problem:
        raise PluginError(f"policy {name!r} of plugin {plugin!r} breaks the policy contract on the first training "
                          f"images: it {problem} (check it with medcls.testing.check_policy)")
