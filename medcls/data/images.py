"""Decode every image once, resize it and keep it as uint16: in RAM when it fits, else in a
memory-mapped file; each decoded image is also kept in a disk store keyed by file content and
preprocessing settings, so later runs (and other runs on the same files) never decode again."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medcls.logs import logger

SCALE = 65535.0  # uint16 keeps 16-bit radiographs and windowed CT without visible banding
# Mean distance of the colour channels from their average below which an RGB file is greyscale
# content (JPEG chroma noise, a tinted scan, a small coloured annotation); H&E patches are ~0.1.
GREY_TOLERANCE = 0.02
STORE_FORMAT = "medcls-images-2"  # bump when decoding or resizing changes what is stored


@dataclass
class ImageCache:
    """Preprocessed images `(N, C, S, S)` uint16, one slot per case (unreadable ones stay empty),
    in RAM or in a memory-mapped file, plus what was skipped and why. While `filling` (images
    still decoding in the background), `kept` lists every case and `batch()` waits for its rows."""

    images: torch.Tensor
    kept: np.ndarray  # indices into the case list of the readable images
    failures: list[tuple[str, str]]  # (case key, one-line reason) for skipped cases
    channels: int
    decoded: int = 0  # images decoded by the readers (the rest came from the disk store), once complete
    filling: object = None  # medcls.data.decoding.Filling until complete()

    def batch(self, rows) -> torch.Tensor:
        """Float images in [0, 1] for positions `rows` of the readable images."""
        index = self.kept[np.asarray(rows)]
        if self.filling is not None:
            return self.filling.batch(index).float().div_(SCALE)
        return self.images[torch.from_numpy(index)].float().div_(SCALE)

    def prioritise(self, rows) -> None:
        """The order the caller will ask for `rows` in: images still decoding follow it."""
        if self.filling is not None:
            self.filling.prioritise(self.kept[np.asarray(rows)])

    def complete(self) -> list[tuple[str, str]]:
        """Wait for the images still decoding; unreadable ones leave `kept`. Returns the failures."""
        if self.filling is not None:
            self.kept, self.failures = self.filling.results()
            self.images, self.channels = self.filling.storage, self.filling.channels
            self.decoded, self.filling = self.filling.decoded, None
        return self.failures


class ImageStore:
    """Decoded, resized images on disk, one file per file content, reader and preprocessing
    setting. Each entry carries its shape, dtype, reader, settings and a SHA-256 of its pixels and
    is verified when read: a damaged or foreign entry is discarded (with a warning) and the image
    decoded again, so the store can never change which images or pixels a run uses. Writes go to a
    temporary file renamed into place, so concurrent runs can share a store."""

    MAGIC = b"MEDCLS-IMAGE\n"

    def __init__(self, root: str | Path, settings: dict) -> None:
        self.key = hashlib.sha256(repr((STORE_FORMAT, sorted(settings.items()))).encode()).hexdigest()[:16]
        self.root = Path(root).expanduser() / self.key
        self.writer = None  # the thread decoding (and writing) images, overlapped with training

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.join()
            self.writer = None

    def path(self, content_hash: str, reader: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in reader)
        return self.root / content_hash[:2] / f"{content_hash}-{safe}.img"

    def get(self, content_hash: str, reader: str, spatial: tuple | None = None) -> np.ndarray | None:
        """The stored image of this content as `reader` decoded it, verified; None when absent or bad."""
        path = self.path(content_hash, reader)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return self.verified(data, reader, spatial)
        except (ValueError, KeyError, TypeError) as why:
            logger.warning(f"image cache entry '{path}' is damaged ({why}): discarded; the image is decoded again")
            try:
                path.unlink()
            except OSError:
                pass
            return None

    def verified(self, data: bytes, reader: str, spatial: tuple | None) -> np.ndarray:
        if not data.startswith(self.MAGIC):
            raise ValueError("not a medcls cache entry")
        line_end = data.index(b"\n", len(self.MAGIC))
        header = json.loads(data[len(self.MAGIC):line_end])
        payload = data[line_end + 1:]
        if header["settings"] != self.key or header["reader"] != reader:
            raise ValueError("written for other settings or another reader")
        if hashlib.sha256(payload).hexdigest() != header["sha256"]:
            raise ValueError("its pixels do not match their checksum")
        shape = tuple(header["shape"])
        if header["dtype"] != "uint16" or len(shape) < 3 or shape[0] not in (1, 3) or \
                (spatial is not None and shape[1:] != tuple(spatial)):
            raise ValueError(f"shape {shape} does not fit the grid {spatial}")
        return np.frombuffer(payload, dtype=np.uint16).reshape(shape).copy()

    def put(self, content_hash: str, reader: str, image: np.ndarray) -> None:
        target = self.path(content_hash, reader)
        pixels = np.ascontiguousarray(image, dtype=np.uint16)
        header = {"shape": list(pixels.shape), "dtype": "uint16", "reader": reader, "settings": self.key,
                  "sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as fh:
                fh.write(self.MAGIC + json.dumps(header).encode() + b"\n")
                fh.write(pixels.tobytes())
            os.replace(temporary, target)
        except OSError:
            pass  # a full or read-only disk only costs decoding again next time


def default_store_root() -> Path:
    """$MEDCLS_CACHE_DIR, else $XDG_CACHE_HOME/medcls, else ~/.cache/medcls."""
    if os.environ.get("MEDCLS_CACHE_DIR"):
        return Path(os.environ["MEDCLS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medcls"


def available_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def foreground_box(image: torch.Tensor, level: float = 0.1, line: float = 0.1, margin: float = 0.02,
                   smallest: float = 0.125) -> list[int]:
    """[top, bottom, left, right] of the object in a (C, H, W) image in [0, 1], for crop_foreground.
    A pixel is foreground above `level` of the image's range (channels averaged); a row or column
    belongs to the object when its share of foreground pixels is at least `line` of the fullest
    row's (column's), so a burnt-in marker or a few noisy background pixels do not widen the box
    (and an oval object loses only its outermost rim, which the margin restores); `margin` of each
    side is kept around the box. The whole image when nothing stands out: a blank image, an
    object filling the frame, or a box narrower than `smallest` of a side (not trusted).
    TorchScript-compatible: exported bundles crop with this same function."""
    grey = image.float().mean(dim=0)
    height, width = grey.shape[0], grey.shape[1]
    whole = [0, height, 0, width]
    low, high = float(grey.min()), float(grey.max())
    if high - low <= 1e-6:
        return whole
    mask = (grey > low + level * (high - low)).float()
    row_share, column_share = mask.mean(dim=1), mask.mean(dim=0)
    rows = torch.nonzero(row_share >= line * row_share.max()).flatten()
    columns = torch.nonzero(column_share >= line * column_share.max()).flatten()
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(columns[0]), int(columns[-1]) + 1
    if bottom - top < smallest * height or right - left < smallest * width:
        return whole
    pad_y, pad_x = int(round(margin * height)), int(round(margin * width))
    return [max(0, top - pad_y), min(height, bottom + pad_y), max(0, left - pad_x), min(width, right + pad_x)]


def crop_to_foreground(image: torch.Tensor) -> torch.Tensor:
    """A (C, H, W) image cut to its foreground_box (a view, no copy)."""
    box = foreground_box(image)
    return image[:, box[0]:box[1], box[2]:box[3]]


INTERPOLATIONS = ("bilinear", "bicubic")


def resize(image: np.ndarray, size: int, interpolation: str = "bilinear", crop_foreground: bool = False) -> torch.Tensor:
    """(C, H, W) float32 -> (C, size, size), antialiased so large radiographs do not alias, by the
    interpolation the backbone was pretrained with (timm's `pretrained_cfg`); clamped to [0, 1].
    With `crop_foreground` the image is first cut to its foreground_box."""
    # Channels-first views of (H, W, C) pixels are read in place: the same numbers as a copy.
    tensor = torch.from_numpy(image if min(image.strides) >= 0 else np.ascontiguousarray(image))
    tensor = (crop_to_foreground(tensor) if crop_foreground else tensor)[None]
    if tensor.shape[-2:] != (size, size):
        mode = interpolation if interpolation in INTERPOLATIONS else "bilinear"
        tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode=mode,
                                                 antialias=True, align_corners=False)
    return tensor[0].clamp_(0.0, 1.0)


def prepare_one(image, size, interpolation: str = "bilinear", crop_foreground: bool = False) -> torch.Tensor:
    """A reader's output on the training grid: a 2D image (cut to its foreground first with
    `crop_foreground`) resized to `size` pixels square, or a volume (`size` a volumes.VolumeGrid)
    cropped, resampled and scaled to its grid."""
    if isinstance(size, int):
        return resize(image, size, interpolation, crop_foreground)
    from medcls.data.volumes import to_grid

    return to_grid(image, size)


def spatial_shape(size) -> tuple:
    return (size, size) if isinstance(size, int) else tuple(size.shape)


def to_uint16(image: torch.Tensor) -> np.ndarray:
    return (image * SCALE).round_().to(torch.int32).numpy().astype(np.uint16)


def is_grey(image: torch.Tensor) -> bool:
    return image.shape[0] == 1 or float((image - image.mean(0, keepdim=True)).abs().mean()) <= GREY_TOLERANCE


def allocate(shape: tuple, memory_budget: int | None, spill_dir: Path | None) -> torch.Tensor:
    """A uint16 tensor in RAM, or backed by a memory-mapped file when it would not fit."""
    size = int(np.prod(shape)) * 2
    budget = available_memory() // 2 if memory_budget is None else memory_budget
    if size <= budget or spill_dir is None:
        return torch.zeros(shape, dtype=torch.uint16)
    spill_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=spill_dir, suffix=".u16")
    os.close(handle)
    array = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint16, shape=shape)
    os.unlink(name)  # the mapping lives until the process ends; nothing is left behind
    return torch.from_numpy(array)


def fit_width(image: torch.Tensor, width: int) -> torch.Tensor:
    """A stored uint16 image (C, ...) with `width` channels: grey copied into colour slots, colour
    averaged into a grey slot."""
    if image.shape[0] == width:
        return image
    if width == 3:
        return image.expand(3, *image.shape[1:])
    return grey_average(image[None])[0]


def as_stored(image: torch.Tensor, channels: int) -> torch.Tensor:
    """A preprocessed image exactly as the image cache hands it to training: 16-bit quantised and
    brought to `channels` the same way, so that predicting a file gives the pixels evaluating it does."""
    stored = fit_width(torch.from_numpy(to_uint16(image)), channels)
    return stored.float().div_(SCALE)


def grey_average(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, ...) uint16 -> (N, 1, ...): elementwise, so one image and a whole cache round alike."""
    total = images[:, 0].float()
    total += images[:, 1]
    total += images[:, 2]
    return total.div_(3).round_().to(torch.uint16)[:, None]


def mean_channel(storage: torch.Tensor, memory_budget: int | None, spill: Path | None) -> torch.Tensor:
    single = allocate((storage.shape[0], 1, *storage.shape[2:]), memory_budget, spill)
    for start in range(0, storage.shape[0], 256):
        single[start:start + 256] = grey_average(storage[start:start + 256])
    return single
