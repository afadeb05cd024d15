"""Decode every image once, resize it and keep it in memory as uint16, so epochs never decode again."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from medcls.data.cases import Case, ReaderTable
from medcls.errors import DataError

SCALE = 65535.0  # uint16 keeps 16-bit radiographs and windowed CT without visible banding
# Mean distance of the colour channels from their average below which an RGB file is greyscale
# content (JPEG chroma noise, a tinted scan, a small coloured annotation); H&E patches are ~0.1.
GREY_TOLERANCE = 0.02


@dataclass
class ImageCache:
    """Preprocessed images `(N, C, S, S)` uint16 for the readable cases, plus what was skipped."""

    images: torch.Tensor
    kept: np.ndarray  # indices into the case list of the images held here
    failures: list[tuple[str, str]]  # (case key, one-line reason) for skipped cases
    channels: int

    def batch(self, rows) -> torch.Tensor:
        return self.images[rows].float().div_(SCALE)


def resize(image: np.ndarray, size: int) -> torch.Tensor:
    """(C, H, W) float32 -> (C, size, size), antialiased so large radiographs do not alias."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
    if tensor.shape[-2:] != (size, size):
        tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear",
                                                 antialias=True, align_corners=False)
    return tensor[0].clamp_(0.0, 1.0)


def is_grey(image: torch.Tensor) -> bool:
    return image.shape[0] == 1 or float((image - image.mean(0, keepdim=True)).abs().mean()) <= GREY_TOLERANCE


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    return image.mean(0, keepdim=True) if channels == 1 else image.expand(channels, -1, -1)


def decode_all(cases: list[Case], readers: ReaderTable, size: int, channels: str = "auto",
               strict: bool = False, threads: int | None = None) -> ImageCache:
    """Read and resize every case (in threads: decoders release the GIL), skipping unreadable ones."""

    def load(case: Case):
        try:
            return resize(readers.read(case), size), None
        except DataError as exc:
            if strict:
                raise
            return None, str(exc)

    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(load, cases))
    failures = [(case.key, error) for case, (_, error) in zip(cases, results) if error is not None]
    kept = np.array([i for i, (image, _) in enumerate(results) if image is not None], dtype=np.int64)
    images = [results[i][0] for i in kept]
    if not images:
        raise DataError(f"none of the {len(cases)} images could be read; first problem: {failures[0][1]}")
    n_channels = int(channels) if channels != "auto" else (1 if all(is_grey(im) for im in images) else 3)
    stacked = torch.stack([to_channels(im, n_channels) for im in images])
    return ImageCache((stacked * SCALE).round_().to(torch.int32).to(torch.uint16), kept, failures, n_channels)
