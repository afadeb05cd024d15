"""Test-time augmentation: class probabilities averaged over deterministic views of each image.

`flip`: the image and its left-right mirror. `crops`: the classic 10-crop scheme (Krizhevsky et
al. 2012): four corner crops and the centre crop, each 87.5 % of the side and resized back, plus
their mirrors. Mirrors are left out for laterality-sensitive data (a left lung is not a right one).
"""

from __future__ import annotations

import torch

from medcls.errors import ConfigError

SCHEMES = ("none", "flip", "crops")
CROP_FRACTION = 0.875


def views(images: torch.Tensor, scheme: str, mirrors: bool) -> list[torch.Tensor]:
    """The views of a (B, C, H, W) or (B, C, D, H, W) batch that `scheme` averages over."""
    if scheme not in SCHEMES:
        raise ConfigError(f"test-time augmentation {scheme!r} is not one of {', '.join(SCHEMES)}")
    if scheme == "none":
        return [images]
    if scheme == "flip":
        if not mirrors:
            raise ConfigError("--tta flip mirrors images left-right, which this laterality-sensitive run forbids: "
                              "use --tta crops (its mirrors are left out) or none")
        return [images, images.flip(-1)]
    if images.dim() != 4:
        raise ConfigError("--tta crops is for 2D images; use --tta flip for volumes")
    height, width = images.shape[-2:]
    crop_h, crop_w = round(height * CROP_FRACTION), round(width * CROP_FRACTION)
    starts = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w),
              ((height - crop_h) // 2, (width - crop_w) // 2)]
    crops = [torch.nn.functional.interpolate(images[..., y:y + crop_h, x:x + crop_w], size=(height, width),
                                             mode="bilinear", align_corners=False) for y, x in starts]
    return crops + [crop.flip(-1) for crop in crops] if mirrors else crops
