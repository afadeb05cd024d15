"""Decoding every case into the image cache: stored images first, the rest in worker threads or
processes, in a background thread that follows the order training asks for images in, so that
training starts as soon as the images of its first batch are ready."""

from __future__ import annotations

import atexit
import os
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np
import torch

from medcls.data.cases import Case, ReaderTable
from medcls.data.images import (SCALE, ImageCache, ImageStore, allocate, fit_width, grey_average, is_grey,
                                mean_channel, spatial_shape, to_uint16)
from medcls.errors import DataError


# With channels 'auto', decoding in the background guesses greyscale once this many of the images
# that only their content can decide are grey, so that training starts; the rest check the guess.
GUESS_AFTER = 32


class StartAgain(DataError):
    """Decoding in the background found what training could not know when it started (an image
    it needs is unreadable, colour where the first images were grey): training starts again,
    exactly as if every image had been decoded first."""


def decode_all(cases: list[Case], readers: ReaderTable, size, channels: str = "auto", strict: bool = False,
               threads: int | None = None, hashes: list[str] | None = None, store: ImageStore | None = None,
               memory_budget: int | None = None, background: bool = False,
               order: list[int] | None = None, progress=None) -> ImageCache:
    """Read and resize every case, skipping unreadable ones (listed in the cache's failures);
    images already in `store` (by content hash) are loaded instead of decoded.

    With `background`, this returns once the channel count is known, or guessed from the first
    images, and the rest decode while the caller trains: the cache's `kept` is provisional
    (every case), `batch()` waits for the rows it is asked for and raises StartAgain for one that
    failed or when the guess proves wrong, and `complete()` waits for the rest, drops the
    unreadable ones and settles the channel count. `order` is the order to decode in (training
    images first); `ImageCache.prioritise` moves rows to the front. `progress(n)` is told of
    every image decoded (from the decoding thread)."""
    filling = Filling(cases, readers, size, channels, strict, hashes, store, memory_budget, guess=background)
    filling.progress = progress
    workers = threads or min(8, os.cpu_count() or 1)
    filling.load_stored(workers)
    todo = [i for i in (range(len(cases)) if order is None else order) if not filling.done[i]]
    filling.probe_channels(todo, workers, headers=background)  # only worth reading headers to start early
    filling.start(todo, workers)
    filling.wait_for_channels()
    cache = ImageCache(filling.storage, np.arange(len(cases)), [], filling.channels, filling=filling)
    if not background:
        cache.complete()
    return cache


class Filling:
    """The slots of an image cache being filled: which are done, which failed and why, which
    hold greyscale content. A background thread feeds worker threads or processes from a queue
    that callers reorder (`prioritise`) and delivers each image into its slot; callers `wait_for`
    the slots they need."""

    def __init__(self, cases, readers, size, channels, strict, hashes, store, memory_budget, guess=False) -> None:
        self.cases, self.readers, self.size, self.strict = cases, readers, size, strict
        self.store = store if store is not None and hashes is not None else None
        self.hashes = hashes
        self.reader_names: dict[int, str | None] = {}  # case -> the reader its file goes to
        width = 1 if channels == "1" or not isinstance(size, int) else 3
        self.spill = store.root / "spill" if store is not None else None
        self.memory_budget = memory_budget
        self.storage = allocate((len(cases), width, *spatial_shape(size)), memory_budget, self.spill)
        # Volumes and explicit settings fix the channel count; 'auto' 2D needs the images' content.
        self.channels = int(channels) if channels != "auto" else (None if isinstance(size, int) else 1)
        self.guess = guess  # may say 1 channel before every image is checked
        self.guessed = False  # channels is that guess: storage keeps 3 until the last image agrees
        self.changed: str | None = None  # why the guess was wrong
        self.grey = np.zeros(len(cases), dtype=bool)
        self.header_grey = np.zeros(len(cases), dtype=bool)  # a header said one channel, before decoding
        self.errors: list[str | None] = [None] * len(cases)
        self.done = np.zeros(len(cases), dtype=bool)
        self.progress = None  # told of every image decoded (a progress bar's update)
        self.scheduled = np.zeros(len(cases), dtype=bool)
        self.undecided: list[int] = []  # images whose content decides the channel count
        self.undecided_left = 0
        self.remaining = 0  # images not yet decoded (or failed)
        self.queue: deque[int] = deque()
        self.condition = threading.Condition()
        self.fatal: BaseException | None = None
        self.decoded = 0

    # -- before the background thread starts ------------------------------------------------
    def load_stored(self, workers: int) -> None:
        if self.store is None:
            return
        self.store.flush()  # images an earlier decode is still writing are found, not decoded again

        def load(i: int) -> None:
            # The reader is settled first: the same bytes under another name (a JPEG renamed .dcm)
            # go to another reader, whose entry they do not have, so they decode (and fail) as on
            # a cold store.
            reader = self.reader_name(i)
            stored = self.store.get(self.hashes[i], reader, spatial_shape(self.size)) if reader else None
            if stored is not None:
                self.place(i, stored, stored_grey(stored))
                self.done[i] = True
                if self.progress is not None:
                    self.progress(1)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(load, range(len(self.cases))))

    def probe_channels(self, todo: list[int], workers: int, headers: bool) -> None:
        """With channels 'auto', the images whose header cannot say "one channel" (all of them
        without `headers`) decide the count and are decoded first; one in colour decides 3, all
        of them grey decide 1."""
        if self.channels is not None:
            return
        if (self.done & ~self.grey).any():
            self.decide(3)
            return
        single = [False] * len(todo)
        if headers:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                single = list(pool.map(lambda i: self.readers.header_greyscale(self.cases[i]), todo))
        self.header_grey[todo] = single
        # Spread over the data set (layouts list images class by class), so that a guess sees a sample.
        undecided = [i for i, one in zip(todo, single) if not one]
        self.undecided = [undecided[j] for j in np.random.default_rng(0).permutation(len(undecided))]
        self.undecided_left = len(self.undecided)
        if not self.undecided:
            self.decide(1)

    def start(self, todo: list[int], workers: int) -> None:
        self.queue.extend(self.undecided + todo)  # duplicates are skipped when taken
        self.remaining = len(todo)
        if not todo:
            return
        pool, decode = self.worker_pool(todo, workers)
        in_flight = self.submit_more(pool, decode, {}, 2 * workers)  # forks process workers here, from this thread
        # A daemon, so that an interrupted run exits at once; a run that got to decode everything
        # still finishes writing the store at exit.
        thread = threading.Thread(target=self.run, args=(pool, decode, in_flight, 2 * workers),
                                  name="medcls-decoding", daemon=True)
        if self.store is not None:
            self.store.writer = thread  # the store's flush() waits for its writes
        self.thread = thread
        atexit.register(self.finish_writes)
        thread.start()

    def finish_writes(self) -> None:
        if self.remaining == 0:
            self.thread.join()

    def worker_pool(self, todo: list[int], workers: int):
        """Threads decode Pillow and uncompressed DICOM in parallel (they release the GIL) and start
        at once; forked processes cost ~0.4 s to start but are the only parallelism for compressed
        DICOM (OpenJPEG, libjpeg hold the GIL: 100 JPEG 2000 CT slices 3.1 s with threads, 2.1 s
        with processes on 2 cores) and pay off for any large set."""
        import multiprocessing

        job = (self.cases, self.readers, self.size)
        files = [self.cases[i].path for i in todo if self.cases[i].path is not None]
        use_processes = len(files) >= 512 or (len(files) >= 16 and compressed_dicom(files[0]))
        if workers > 1 and use_processes and "fork" in multiprocessing.get_all_start_methods():
            from concurrent.futures import ProcessPoolExecutor

            global _JOB
            _JOB = job  # inherited by the forked workers: nothing (readers, plugins) needs pickling
            context = multiprocessing.get_context("fork")
            return ProcessPoolExecutor(workers, mp_context=context, initializer=single_threaded_worker), decode_one
        return ThreadPoolExecutor(max_workers=workers), lambda i: decode_one(i, job)

    # -- the background thread ----------------------------------------------------------------
    def submit_more(self, pool, decode, in_flight: dict, limit: int) -> dict:
        with self.condition:
            while len(in_flight) < limit and self.fatal is None:
                i = self.next_index()
                if i is None:
                    break
                in_flight[pool.submit(decode, i)] = i
        return in_flight

    def next_index(self) -> int | None:
        while self.queue:
            i = self.queue.popleft()
            if not self.scheduled[i]:
                self.scheduled[i] = True
                return i
        return None

    def run(self, pool, decode, in_flight: dict, limit: int) -> None:
        global _JOB
        try:
            to_store = []
            with pool:
                _JOB = None  # the process workers were forked with it
                while in_flight:
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    to_store += [self.deliver(in_flight.pop(future), *future.result()[1:]) for future in finished]
                    self.submit_more(pool, decode, in_flight, limit)
                    if self.fatal is not None:
                        for future in in_flight:
                            future.cancel()
                        return
            # The disk store is written once everything is decoded, while the caller trains.
            while to_store:
                index, stored = to_store.pop()
                if index is not None:
                    self.store.put(self.hashes[index], self.reader_name(index), stored)
        except BaseException as exc:  # a reader plugin's bug, a worker killed: raised where training waits
            with self.condition:
                self.fatal = exc
                self.condition.notify_all()
        finally:
            atexit.unregister(self.finish_writes)

    def deliver(self, i: int, stored: np.ndarray | None, error: str | None, grey: bool):
        """Put one decoded image in its slot; returns what the disk store should keep of it."""
        with self.condition:
            if error is not None:
                self.errors[i] = error
                if self.strict:
                    self.fatal = DataError(error)
            else:
                self.place(i, stored, grey)
                self.decoded += 1
            self.done[i] = True
            self.remaining -= 1
            if self.progress is not None:
                self.progress(1)
            if (self.channels is None or self.guessed) and not self.header_grey[i]:
                self.undecided_left -= 1
                self.settle_channels(i, error is None and not grey)
            self.condition.notify_all()
        if error is None and self.store is not None and self.cases[i].path is not None:
            return i, stored
        return None, None

    def reader_name(self, i: int) -> str | None:
        """The reader this case's file goes to (None: no reader, or an in-memory case); settled once
        per case, since finding it may read the file's first bytes."""
        if i not in self.reader_names:
            path = self.cases[i].path
            entry = self.readers.entry_for(path) if path is not None else None
            self.reader_names[i] = None if entry is None else entry.name
        return self.reader_names[i]

    def place(self, i: int, stored: np.ndarray, grey: bool) -> None:
        self.grey[i] = grey
        self.storage[i] = fit_width(torch.from_numpy(stored), self.storage.shape[1])

    def settle_channels(self, i: int, colour: bool) -> None:
        """After image `i`, one whose content decides: colour decides 3 (and proves a guess of 1
        wrong); the last of them grey decides 1; enough of them grey, while decoding in the
        background, lets training start on a guess of 1."""
        if colour:
            if self.guessed:
                self.changed = (f"'{self.cases[i].key}' is in colour though the first {GUESS_AFTER} images checked were "
                                "greyscale: training starts again with 3 channels")
            self.decide(3)
        elif self.undecided_left == 0:
            self.decide(1)  # every image whose content could be colour is grey
        elif self.guess and self.channels is None and len(self.undecided) - self.undecided_left >= GUESS_AFTER:
            self.channels, self.guessed = 1, True

    def decide(self, channels: int) -> None:
        """The channel count is known: greyscale content throughout keeps one channel."""
        self.channels, self.guessed = channels, False
        if channels == 1 and self.storage.shape[1] != 1:
            self.storage = mean_channel(self.storage, self.memory_budget, self.spill)

    # -- what callers use ---------------------------------------------------------------------
    def prioritise(self, indices) -> None:
        """Decode these next, in this order (after the images that still decide the channel count)."""
        with self.condition:
            if self.remaining == 0:
                return
            self.queue.extendleft(reversed([i for i in np.asarray(indices).tolist() if not self.scheduled[i]]))
            if self.channels is None:
                self.queue.extendleft(reversed([i for i in self.undecided if not self.scheduled[i]]))

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """uint16 images of these slots, once they are filled, with the channel count training
        started with; raises StartAgain for an unreadable one or a guess proved wrong."""
        self.wait_for(indices)
        if self.changed is not None:
            raise StartAgain(self.changed)
        with self.condition:  # the storage is replaced when a guess of one channel is confirmed
            images = self.storage[torch.from_numpy(indices)]
        return grey_average(images) if images.shape[1] != self.channels else images

    def wait_for(self, indices: np.ndarray) -> None:
        """Block until these slots are filled; an unreadable one raises StartAgain."""
        indices = np.asarray(indices)
        if not self.done[indices].all():
            self.prioritise(indices)
            with self.condition:
                self.condition.wait_for(lambda: self.fatal is not None or self.done[indices].all())
        self.raise_fatal()
        failed = [i for i in indices.tolist() if self.errors[i] is not None]
        if failed:
            raise StartAgain(f"{self.errors[failed[0]]}; training starts again without it")

    def wait_for_channels(self) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.fatal is not None or self.channels is not None
                                    or self.remaining == 0)
        self.raise_fatal()
        if self.channels is None:  # nothing was readable: the cache reports it
            self.decide(1)

    def wait_for_all(self) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.fatal is not None or self.remaining == 0)
        self.raise_fatal()

    def raise_fatal(self) -> None:
        if self.fatal is not None:
            raise self.fatal

    def results(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """(kept, failures) once every slot is done; checks the channel count against the content."""
        self.wait_for_all()
        failures = [(case.key, error) for case, error in zip(self.cases, self.errors) if error is not None]
        kept = np.array([i for i, error in enumerate(self.errors) if error is None], dtype=np.int64)
        if not len(kept):
            raise DataError(f"none of the {len(self.cases)} images could be read; first problem: {failures[0][1]}")
        colour = [i for i in kept.tolist() if self.header_grey[i] and not self.grey[i]]
        if colour:
            entry = self.readers.entry_for(self.cases[colour[0]].path)
            raise DataError(f"'{self.cases[colour[0]].key}' decoded in colour but reader "
                            f"{getattr(entry, 'name', '?')!r} said from its header that it has one channel: "
                            "fix the reader's greyscale() or set --set channels=3")
        return kept, failures


_JOB: tuple | None = None  # (cases, readers, size) for forked decoding workers


def decode_one(i: int, job: tuple | None = None):
    """(i, uint16 image, None, greyscale content?) or (i, None, one-line error, False), in a worker."""
    cases, readers, size = job or _JOB
    try:
        stored = to_uint16(readers.prepared(cases[i], size))
    except DataError as exc:
        return i, None, str(exc), False
    return i, stored, None, stored_grey(stored)


def stored_grey(stored: np.ndarray) -> bool:
    return stored.shape[0] == 1 or is_grey(torch.from_numpy(stored).float() / SCALE)


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
