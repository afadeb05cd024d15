"""Decode every image once, resize it and keep it as uint16: in RAM when it fits, else in a
memory-mapped file; each decoded image is also kept in a disk store keyed by file content and
preprocessing settings, so later runs (and other runs on the same files) never decode again."""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medcls.data.cases import Case, ReaderTable
from medcls.errors import DataError

SCALE = 65535.0  # uint16 keeps 16-bit radiographs and windowed CT without visible banding
# Mean distance of the colour channels from their average below which an RGB file is greyscale
# content (JPEG chroma noise, a tinted scan, a small coloured annotation); H&E patches are ~0.1.
GREY_TOLERANCE = 0.02
STORE_FORMAT = "medcls-images-1"  # bump when decoding or resizing changes what is stored


@dataclass
class ImageCache:
    """Preprocessed images `(N, C, S, S)` uint16, one slot per case (unreadable ones stay empty),
    in RAM or in a memory-mapped file, plus what was skipped and why."""

    images: torch.Tensor
    kept: np.ndarray  # indices into the case list of the readable images
    failures: list[tuple[str, str]]  # (case key, one-line reason) for skipped cases
    channels: int
    decoded: int = 0  # images decoded by the readers (the rest came from the disk store)

    def batch(self, rows) -> torch.Tensor:
        """Float images in [0, 1] for positions `rows` of the readable images."""
        return self.images[torch.from_numpy(self.kept[np.asarray(rows)])].float().div_(SCALE)


class ImageStore:
    """Decoded, resized images on disk, one `.npy` per file content and preprocessing setting.
    Writes go to a temporary file renamed into place, so concurrent runs can share a store."""

    def __init__(self, root: str | Path, settings: dict) -> None:
        key = hashlib.sha256(repr((STORE_FORMAT, sorted(settings.items()))).encode()).hexdigest()[:16]
        self.root = Path(root).expanduser() / key
        self.writer = None  # the thread writing the last decode's images, overlapped with training

    def put_later(self, entries: list[tuple[str, np.ndarray]]) -> None:
        """Write in a background thread: training starts while the store fills. The process waits
        for it at exit (not a daemon); a killed run only leaves images to decode again."""
        import threading

        self.flush()
        self.writer = threading.Thread(target=lambda: [self.put(h, image) for h, image in entries],
                                       name="medcls-image-store")
        self.writer.start()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.join()
            self.writer = None

    def path(self, content_hash: str) -> Path:
        return self.root / content_hash[:2] / f"{content_hash}.npy"

    def get(self, content_hash: str) -> np.ndarray | None:
        try:
            return np.load(self.path(content_hash), allow_pickle=False)
        except (OSError, ValueError):  # absent, or a half-written file from a killed run
            return None

    def put(self, content_hash: str, image: np.ndarray) -> None:
        target = self.path(content_hash)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as fh:
                np.save(fh, image, allow_pickle=False)
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


def resize(image: np.ndarray, size: int) -> torch.Tensor:
    """(C, H, W) float32 -> (C, size, size), antialiased so large radiographs do not alias."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
    if tensor.shape[-2:] != (size, size):
        tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear",
                                                 antialias=True, align_corners=False)
    return tensor[0].clamp_(0.0, 1.0)


def prepare_one(image, size) -> torch.Tensor:
    """A reader's output on the training grid: a 2D image resized to `size` pixels square, or a
    volume (`size` a volumes.VolumeGrid) cropped, resampled and scaled to its grid."""
    if isinstance(size, int):
        return resize(image, size)
    from medcls.data.volumes import to_grid

    return to_grid(image, size)


def spatial_shape(size) -> tuple:
    return (size, size) if isinstance(size, int) else tuple(size.shape)


def to_uint16(image: torch.Tensor) -> np.ndarray:
    return (image * SCALE).round_().to(torch.int32).numpy().astype(np.uint16)


def is_grey(image: torch.Tensor) -> bool:
    return image.shape[0] == 1 or float((image - image.mean(0, keepdim=True)).abs().mean()) <= GREY_TOLERANCE


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    return image.mean(0, keepdim=True) if channels == 1 else image.expand(channels, -1, -1)


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


def decode_all(cases: list[Case], readers: ReaderTable, size, channels: str = "auto",
               strict: bool = False, threads: int | None = None, hashes: list[str] | None = None,
               store: ImageStore | None = None, memory_budget: int | None = None) -> ImageCache:
    """Read and resize every case, skipping unreadable ones; images already in `store` (by
    content hash) are loaded instead. Files are decoded in worker processes (several decoders,
    OpenJPEG among them, hold the GIL), in-memory arrays in threads."""
    width = 1 if channels == "1" or not isinstance(size, int) else 3
    spill = store.root / "spill" if store is not None else None
    storage = allocate((len(cases), width, *spatial_shape(size)), memory_budget, spill)
    grey = np.zeros(len(cases), dtype=bool)
    errors: list[str | None] = [None] * len(cases)
    use_store = store is not None and hashes is not None
    if use_store:
        store.flush()  # images an earlier decode is still writing are found, not decoded again
    workers = threads or min(8, os.cpu_count() or 1)

    def place(i: int, stored: np.ndarray) -> None:
        image = torch.from_numpy(stored)
        grey[i] = image.shape[0] == 1 or is_grey(image.float() / SCALE)
        if image.shape[0] != width:  # grey into a colour slot is a copy; colour into a grey slot the mean
            image = torch.from_numpy(to_uint16(to_channels(image.float() / SCALE, width)))
        storage[i] = image

    def from_store(i: int) -> bool:
        stored = store.get(hashes[i]) if cases[i].path is not None else None
        if stored is not None:
            place(i, stored)
        return stored is not None

    missing = list(range(len(cases)))
    if use_store:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            missing = [i for i, found in zip(missing, pool.map(from_store, missing)) if not found]
    decoded, to_store = 0, []
    for i, stored, error in decoded_images(cases, missing, readers, size, workers):
        if error is not None:
            if strict:
                raise DataError(error)
            errors[i] = error
            continue
        place(i, stored)
        decoded += 1
        if use_store and cases[i].path is not None:
            to_store.append((hashes[i], stored))
    if to_store:
        store.put_later(to_store)
    failures = [(case.key, error) for case, error in zip(cases, errors) if error is not None]
    kept = np.array([i for i, error in enumerate(errors) if error is None], dtype=np.int64)
    if not len(kept):
        raise DataError(f"none of the {len(cases)} images could be read; first problem: {failures[0][1]}")
    n_channels = int(channels) if channels != "auto" else (1 if grey[kept].all() else 3)
    if n_channels != width:  # greyscale content throughout: keep one channel
        storage = mean_channel(storage, memory_budget, spill)
    return ImageCache(storage, kept, failures, n_channels, decoded)


_JOB: tuple | None = None  # (cases, readers, size) for forked decoding workers


def decode_one(i: int, job: tuple | None = None):
    cases, readers, size = job or _JOB
    try:
        return i, to_uint16(prepare_one(readers.read(cases[i]), size)), None
    except DataError as exc:
        return i, None, str(exc)


def single_threaded_worker() -> None:
    torch.set_num_threads(1)  # each worker process is one decoder; several torch threads would fight


def compressed_dicom(path) -> bool:
    from medcls.data.readers import is_dicom

    try:
        with open(path, "rb") as fh:
            if not is_dicom(fh.read(132)):
                return False
        import pydicom

        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        return bool(syntax.is_compressed)
    except Exception:  # unreadable files are reported when they are decoded
        return False


def decoded_images(cases: list[Case], indices: list[int], readers: ReaderTable, size: int, workers: int):
    """(index, uint16 image or None, error or None) for `indices`, in any order."""
    import multiprocessing

    job = (cases, readers, size)
    files = [cases[i].path for i in indices if cases[i].path is not None]
    # Threads decode Pillow and uncompressed DICOM in parallel (they release the GIL) and start at
    # once; forked processes cost ~0.4 s to start but are the only parallelism for compressed
    # DICOM (OpenJPEG, libjpeg hold the GIL: 100 JPEG 2000 CT slices 3.1 s with threads, 2.1 s
    # with processes on 2 cores) and pay off for any large set.
    use_processes = len(files) >= 512 or (len(files) >= 16 and compressed_dicom(files[0]))
    if workers > 1 and use_processes and "fork" in multiprocessing.get_all_start_methods():
        from concurrent.futures import ProcessPoolExecutor

        global _JOB
        _JOB = job  # inherited by the forked workers: nothing (readers, plugins) needs pickling
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=single_threaded_worker) as pool:
                yield from pool.map(decode_one, indices, chunksize=max(1, len(indices) // (workers * 8)))
        finally:
            _JOB = None
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda i: decode_one(i, job), indices)


def mean_channel(storage: torch.Tensor, memory_budget: int | None, spill: Path | None) -> torch.Tensor:
    single = allocate((storage.shape[0], 1, *storage.shape[2:]), memory_budget, spill)
    for start in range(0, storage.shape[0], 256):
        chunk = storage[start:start + 256].float().mean(1, keepdim=True)
        single[start:start + 256] = chunk.round_().to(torch.int32).to(torch.uint16)
    return single
