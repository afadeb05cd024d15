"""Augmentation building blocks on MONAI transforms, for 2D (C, H, W) and 3D (C, D, H, W) tensors.

Shifts are fractions of the image size (as in Keras's ImageDataGenerator), so one policy works at
any resolution; the pixel values outside the original field of view are zero (no invented anatomy).
"""

from __future__ import annotations

import math

import torch
from monai.transforms import (
    Affine,
    Compose,
    Flip,
    RandAdjustContrast,
    RandGaussianNoise,
    RandomizableTransform,
    RandScaleIntensity,
)


class RandAffineFraction(RandomizableTransform):
    """Random rotation (degrees), shift (fraction of size), shear (factor) and zoom, in one resample."""

    def __init__(self, rotate_deg=0.0, shift=0.0, shear=0.0, zoom=0.0, prob=1.0):
        super().__init__(prob)
        self.rotate_deg, self.shift, self.shear, self.zoom = rotate_deg, shift, shear, zoom

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        self.randomize(None)
        if not self._do_transform:
            return img
        spatial = img.shape[1:]
        dims = len(spatial)
        u = lambda bound, n: [float(self.R.uniform(-bound, bound)) for _ in range(n)]  # noqa: E731
        rotate = [math.radians(a) for a in u(self.rotate_deg, 1 if dims == 2 else 3)]
        shear = u(self.shear, 2 if dims == 2 else 6)
        translate = [f * s for f, s in zip(u(self.shift, dims), spatial)]
        scale = [1.0 + z for z in u(self.zoom, 1)] * dims  # isotropic zoom keeps proportions
        affine = Affine(rotate_params=rotate, shear_params=shear, translate_params=translate,
                        scale_params=scale, padding_mode="zeros", image_only=True)
        return affine(img)


class RandFlipSide(RandomizableTransform):
    """Flip left-right (`lr`, the last axis) or up-down (`ud`, the one before) with probability `prob`."""

    def __init__(self, axis: str, prob: float):
        super().__init__(prob)
        self.axis = axis

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        self.randomize(None)
        if not self._do_transform:
            return img
        spatial_axis = img.ndim - 2 if self.axis == "lr" else img.ndim - 3
        return Flip(spatial_axis=spatial_axis)(img)


def to_unit_float(img) -> torch.Tensor:
    """Back to a plain float32 tensor in [0, 1] (MONAI returns MetaTensors)."""
    tensor = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
    return tensor.float().clamp_(0.0, 1.0)


def build_policy(*, rotate_deg, shift, shear, zoom, lr_flip, ud_flip, brightness, gamma, noise_std):
    """A MONAI Compose of geometry, flips and intensity changes; zero-valued parameters are skipped."""
    steps = []
    if rotate_deg or shift or shear or zoom:
        steps.append(RandAffineFraction(rotate_deg, shift, shear, zoom, prob=1.0))
    if lr_flip:
        steps.append(RandFlipSide("lr", lr_flip))
    if ud_flip:
        steps.append(RandFlipSide("ud", ud_flip))
    if brightness:
        steps.append(RandScaleIntensity(factors=(-brightness, brightness), prob=1.0))
    if gamma:
        steps.append(RandAdjustContrast(prob=1.0, gamma=(1.0 - gamma, 1.0 + gamma)))
    if noise_std:
        steps.append(RandGaussianNoise(prob=0.5, std=noise_std))
    steps.append(to_unit_float)
    return Compose(steps)


def middle_slice(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) as it is; (C, D, H, W) volumes by their middle slice, for display."""
    return image[:, image.shape[1] // 2] if image.ndim == 4 else image


def preview_grid(images: list[torch.Tensor], transform, views: int, path, titles: list[str] | None = None) -> tuple:
    """A PNG grid: one row per image, the original first, then `views` augmented versions.
    Returns the (width, height) of the written image in pixels."""
    from medcls.evaluation.plots import pyplot

    plt = pyplot()
    rows, cols = len(images), views + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
    for r, image in enumerate(images):
        shown = [image] + [transform(image) for _ in range(views)]
        for c, view in enumerate(shown):
            ax = axes[r][c]
            picture = middle_slice(view).float()
            if picture.shape[0] == 1:
                ax.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"view {c}", fontsize=8)
        if titles:
            axes[r][0].set_ylabel(titles[r], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    size = tuple(int(v) for v in fig.get_size_inches() * 100)
    plt.close(fig)
    return size
