"""The built-in augmentation policy: random rotation, shift, shear, zoom, flips and intensity, drawn
per image and applied to a whole batch on its device as one MONAI affine resample.

A MONAI `RandomizableTransform`, registered by the built-in policies plugin; `medcls.core.augment`
makes policies from the registry and holds their contract.
Shifts are fractions of the image size (as in Keras's ImageDataGenerator), so one policy works at
any resolution; pixels from outside the field of view are zero (no invented anatomy).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.layers import AffineTransform
from monai.networks.utils import to_norm_affine
from monai.transforms import RandomizableTransform

from medcls.core.augment import to_unit_float


class GeometryIntensityPolicy(RandomizableTransform):
    """Random rotation (degrees), shift (fraction of size), shear (factor), isotropic zoom, left-right
    and up-down flips, brightness (multiplicative), gamma and Gaussian noise, drawn per image."""

    def __init__(self, *, rotate_deg=0.0, shift=0.0, shear=0.0, zoom=0.0, lr_flip=0.0, ud_flip=0.0,
                 brightness=0.0, gamma=0.0, noise_std=0.0):
        super().__init__(prob=1.0)
        self.rotate_deg, self.shift, self.shear, self.zoom = rotate_deg, shift, shear, zoom
        self.lr_flip, self.ud_flip = lr_flip, ud_flip
        self.brightness, self.gamma, self.noise_std = brightness, gamma, noise_std
        # The matrices reach it normalised and in grid_sample's axis order (see `grid_matrices`).
        self.resample = AffineTransform(normalized=True, reverse_indexing=False, align_corners=True,
                                        padding_mode="zeros", mode="bilinear")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.batch(to_unit_float(image)[None])[0]

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a (B, C, H, W) or (B, C, D, H, W) float batch in [0, 1] where it lies.

        Everything per pixel runs on the batch's device (the noise too), and the intensity steps
        work in place on the resampled copy: on a GPU the host only draws a few numbers per image, and
        hands them over without waiting for the GPU (no synchronisation, so the host can queue the
        next step while the GPU works)."""
        images = to_unit_float(images)  # a copy: the caller's batch is never changed
        count, dims, device = images.shape[0], images.ndim - 2, images.device
        if self.rotate_deg or self.shift or self.shear or self.zoom:
            theta = self.grid_matrices(self.random_affines(count, dims, images.shape[2:]), images.shape[2:])
            images = self.resample(images, theta.to(device, non_blocking=True))
        for probability, axis in ((self.lr_flip, -1), (self.ud_flip, -2)):
            if probability:
                flip = self.per_image(torch.as_tensor(self.R.random(count) < probability), dims, device)
                images = torch.where(flip, images.flip(axis), images)
        if self.brightness:
            factor = 1 + self.R.uniform(-self.brightness, self.brightness, count)
            images.mul_(self.per_image(torch.as_tensor(factor, dtype=torch.float32), dims, device))
        if self.gamma:
            exponent = self.R.uniform(1 - self.gamma, 1 + self.gamma, count)
            images.clamp_(min=0).pow_(self.per_image(torch.as_tensor(exponent, dtype=torch.float32), dims, device))
        if self.noise_std:
            noisy = self.per_image(torch.as_tensor(self.R.random(count) < 0.5, dtype=torch.float32), dims, device)
            generator = torch.Generator(device=device).manual_seed(int(self.R.randint(2**31)))
            noise = torch.randn(images.shape, generator=generator, device=device)
            images.add_(noise.mul_(noisy * self.noise_std))
        return images.clamp_(0.0, 1.0)

    @staticmethod
    def per_image(values: torch.Tensor, dims: int, device) -> torch.Tensor:
        """One value per image, shaped to broadcast over a batch; copied without a synchronisation
        (from pageable memory the copy is staged at once, so the host may drop its tensor)."""
        return values.view(-1, *([1] * (dims + 1))).to(device, non_blocking=True)

    @staticmethod
    def grid_matrices(matrices: np.ndarray, spatial) -> torch.Tensor:
        """Voxel-space matrices as `grid_sample` reads them: normalised to [-1, 1] about the centre
        and with the axes reversed, which is what MONAI's AffineTransform does inside; done here, on
        the host in float32, because on a GPU those steps stop the host (a boolean-mask assignment
        and two blocking copies per batch)."""
        theta = to_norm_affine(torch.from_numpy(matrices).float(), src_size=tuple(spatial), dst_size=tuple(spatial),
                               align_corners=True, zero_centered=True)
        axes = torch.arange(len(spatial) - 1, -1, -1)
        theta[:, :len(spatial)] = theta[:, axes]
        theta[:, :, :len(spatial)] = theta[:, :, axes]
        return theta

    def random_affines(self, count: int, dims: int, spatial) -> np.ndarray:
        """`count` (dims+1) x (dims+1) matrices, float64, composed in MONAI Affine's order (rotate,
        shear, translate, scale) from MONAI's elementary matrices (`create_rotate` with its intrinsic
        XYZ order, the composed determinant-1 `create_shear`), built for the whole batch at once.
        The numbers are drawn image by image, in the order one image at a time would draw them."""
        u = lambda bound, n: self.R.uniform(-bound, bound, n) if bound else np.zeros(n)  # noqa: E731
        draws = [np.concatenate([u(self.rotate_deg, 1 if dims == 2 else 3), u(self.shear, 2 if dims == 2 else 6),
                                 u(self.shift, dims), u(self.zoom, 1)]) for _ in range(count)]
        draws = np.asarray(draws, dtype=np.float64).reshape(count, -1)
        turns = 1 if dims == 2 else 3
        angles, shear = np.radians(draws[:, :turns]), draws[:, turns:-dims - 1]
        shifts = draws[:, -dims - 1:-1] * np.asarray(spatial[:dims], dtype=np.float64)
        rank = dims + 1
        eye = lambda: np.tile(np.eye(rank), (count, 1, 1))  # noqa: E731
        if dims == 2:
            rotate = elementary_rotation(eye(), angles[:, 0], 0, 1)
            shear_steps = [(0, 1), (1, 0)]
        else:  # intrinsic x, then y, then z: each rotation post-multiplies
            rotate = eye()
            for column, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):
                rotate = rotate @ elementary_rotation(eye(), angles[:, column], i, j)
            shear_steps = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
        sheared = eye()
        for column, (i, j) in enumerate(shear_steps):  # each elementary shear pre-multiplies
            step = eye()
            step[:, i, j] = shear[:, column]
            sheared = step @ sheared
        translate = eye()
        translate[:, :dims, dims] = shifts
        scale = eye()
        scale[:, np.arange(dims), np.arange(dims)] = (1.0 + draws[:, -1])[:, None]  # isotropic zoom
        return rotate @ sheared @ translate @ scale


def elementary_rotation(matrices: np.ndarray, radians: np.ndarray, i: int, j: int) -> np.ndarray:
    """Rotations by `radians` in the (i, j) plane, written into identity matrices: [i,i]=[j,j]=cos,
    [i,j]=-sin, [j,i]=sin (MONAI's x, y and z rotations are the planes (1,2), (2,0) and (0,1))."""
    sin, cos = np.sin(radians), np.cos(radians)
    matrices[:, i, i], matrices[:, i, j] = cos, -sin
    matrices[:, j, i], matrices[:, j, j] = sin, cos
    return matrices
