"""Augmentation policies as MONAI transforms that work on one image or on a whole batch on its device.

One implementation serves both: `policy(image)` for a (C, H, W) or (C, D, H, W) tensor, and
`policy.batch(images)` for (B, C, ...) batches, which the training loop calls after moving the
batch to the GPU (or CPU), so augmentation is one batched resample instead of B small ones.
Shifts are fractions of the image size (as in Keras's ImageDataGenerator), so one policy works at
any resolution; pixels from outside the field of view are zero (no invented anatomy).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from monai.networks.layers import AffineTransform
from monai.transforms import RandomizableTransform
from monai.transforms.utils import (
    create_rotate,
    create_scale,
    create_shear,
    create_translate,
)

from medcls.config import TrainConfig
from medcls.errors import ConfigError, PluginError


class GeometryIntensityPolicy(RandomizableTransform):
    """Random rotation (degrees), shift (fraction of size), shear (factor), isotropic zoom, left-right
    and up-down flips, brightness (multiplicative), gamma and Gaussian noise, drawn per image."""

    def __init__(self, *, rotate_deg=0.0, shift=0.0, shear=0.0, zoom=0.0, lr_flip=0.0, ud_flip=0.0,
                 brightness=0.0, gamma=0.0, noise_std=0.0):
        super().__init__(prob=1.0)
        self.rotate_deg, self.shift, self.shear, self.zoom = rotate_deg, shift, shear, zoom
        self.lr_flip, self.ud_flip = lr_flip, ud_flip
        self.brightness, self.gamma, self.noise_std = brightness, gamma, noise_std
        self.resample = AffineTransform(normalized=False, zero_centered=True, padding_mode="zeros", mode="bilinear")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.batch(to_unit_float(image)[None])[0]

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a (B, C, H, W) or (B, C, D, H, W) float batch in [0, 1] where it lies."""
        images = to_unit_float(images)
        count, dims, device = images.shape[0], images.ndim - 2, images.device
        if self.rotate_deg or self.shift or self.shear or self.zoom:
            theta = torch.stack([self.random_affine(dims, images.shape[2:]) for _ in range(count)]).to(device)
            images = self.resample(images, theta)
        for probability, axis in ((self.lr_flip, -1), (self.ud_flip, -2)):
            if probability:
                flip = self.per_image(torch.as_tensor(self.R.random(count) < probability), dims, device)
                images = torch.where(flip, images.flip(axis), images)
        if self.brightness:
            factor = 1 + self.R.uniform(-self.brightness, self.brightness, count)
            images = images * self.per_image(torch.as_tensor(factor, dtype=torch.float32), dims, device)
        if self.gamma:
            exponent = self.R.uniform(1 - self.gamma, 1 + self.gamma, count)
            images = images.clamp(min=0) ** self.per_image(torch.as_tensor(exponent, dtype=torch.float32), dims, device)
        if self.noise_std:
            noisy = self.per_image(torch.as_tensor(self.R.random(count) < 0.5, dtype=torch.float32), dims, device)
            generator = torch.Generator().manual_seed(int(self.R.randint(2**31)))
            noise = torch.randn(images.shape, generator=generator).to(device)
            images = images + noisy * self.noise_std * noise
        return images.clamp(0.0, 1.0)

    @staticmethod
    def per_image(values: torch.Tensor, dims: int, device) -> torch.Tensor:
        return values.view(-1, *([1] * (dims + 1))).to(device)

    def random_affine(self, dims: int, spatial) -> torch.Tensor:
        """One (dims+1) x (dims+1) matrix, composed in MONAI Affine's order: rotate, shear, translate, scale."""
        u = lambda bound, n: self.R.uniform(-bound, bound, n) if bound else np.zeros(n)  # noqa: E731
        angles = [math.radians(a) for a in u(self.rotate_deg, 1 if dims == 2 else 3)]
        shear = u(self.shear, 2 if dims == 2 else 6)
        shifts = [f * s for f, s in zip(u(self.shift, dims), spatial)]
        scale = [1.0 + float(u(self.zoom, 1)[0])] * dims  # isotropic zoom keeps proportions
        matrix = (create_rotate(dims, angles) @ create_shear(dims, list(shear)) @ create_translate(dims, shifts)
                  @ create_scale(dims, scale))
        return torch.as_tensor(matrix, dtype=torch.float32)


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


def build_policy(**params) -> GeometryIntensityPolicy:
    return GeometryIntensityPolicy(**params)


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
