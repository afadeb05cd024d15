"""Cases: the labelled images a data set yields, whatever its layout, and how each is read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcls.errors import DataError, PluginError

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "holdout": "test",
}


@dataclass
class DataOptions:
    """How to interpret a data source; filled from the run configuration."""

    path_column: str = "path"  # CSV column with the image file (relative to image_root)
    label_column: str = "label"  # CSV column with the class label
    label_columns: tuple = ()  # multi-label: CSV columns with one finding each (1 / 0 / -1 uncertain / blank)
    multi_label: bool = False  # multi-label: label_column holds '|'-separated findings ('No Finding': none)
    patient_column: str | None = None  # CSV column with the patient id (None: 'patient_id' if present)
    split_column: str | None = None  # CSV column with train/val/test (None: 'split' if present)
    image_root: str | None = None  # folder the CSV paths are relative to (None: the CSV's folder)
    patient_from_dicom: bool = False  # take patient_id from each DICOM header's PatientID
    synthetic_cases: int = 400  # images in the built-in synthetic set (200 patients)
    synthetic_size: int = 96  # side length of the synthetic phantoms, in pixels
    readers: "ReaderTable | None" = field(default=None, repr=False)  # set by medcls, not by users


@dataclass
class Case:
    """One labelled image: a file on disk or an array in memory (npz, synthetic)."""

    key: str  # unique, human-readable: a file path or 'source#split/index'
    label: str
    patient_id: str | None = None
    split: str | None = None  # a split fixed by the data set itself, if any
    path: Path | None = None  # an image file, a volume file or a DICOM series folder
    array: object = field(default=None, repr=False)  # float32 (C, H, W) in [0, 1], or a volumes.Volume
    attributes: dict = field(default_factory=dict, repr=False)  # other manifest columns (site, sex, ...)
    findings: dict | None = field(default=None, repr=False)  # multi-label: finding -> 1, 0, -1 (uncertain), NaN (blank)

    def content_hash(self) -> str:
        """SHA-256 of the file's bytes (or the array's), to find byte-identical copies."""
        digest = hashlib.sha256()
        if self.path is not None:
            # A DICOM series folder: every file's bytes, in name order.
            files = sorted(p for p in self.path.iterdir() if p.is_file()) if self.path.is_dir() else [self.path]
            for file in files:
                with open(file, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
        elif hasattr(self.array, "voxels"):  # an in-memory volume
            digest.update(np.ascontiguousarray(self.array.voxels).tobytes())
        else:
            digest.update(np.ascontiguousarray(self.array).tobytes())
        return digest.hexdigest()


def normalise_split(value: str, where: str) -> str:
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise DataError(f"{where}: unknown split {value!r}: use one of train, val, test")
    return split


CASE_SETTINGS = ("series_uid",)


class ReaderTable:
    """Chooses the registered reader for each file, by extension and then by sniffing its bytes."""

    def __init__(self, readers, settings: dict | None = None, dims: int = 2) -> None:
        # Readers of 2D images or of 3D volumes (metadata dims=3), as the backbone needs.
        self.readers = [r for r in readers if r.metadata.get("dims", 2) == dims]
        self.dims = dims
        self.settings = settings or {}  # e.g. {"window": "lung"}, passed to readers that declare them

    def entry_for(self, path: Path):
        if path.is_dir():
            return next((e for e in self.readers if e.metadata.get("folders") and e.metadata["folders"](path)), None)
        name = path.name.lower()
        for entry in self.readers:
            if any(name.endswith(ext) for ext in entry.metadata.get("extensions", ())):
                return entry
        try:
            with open(path, "rb") as fh:
                head = fh.read(256)
        except OSError:
            return None
        for entry in self.readers:
            sniff = entry.metadata.get("sniff")
            if sniff is not None and sniff(head):
                return entry
        return None

    def can_read(self, path: Path) -> bool:
        return self.entry_for(path) is not None

    def read(self, case: Case) -> np.ndarray:
        if case.array is not None:
            if hasattr(case.array, "voxels") != (self.dims == 3):
                raise DataError(
                    f"'{case.key}' is a volume and the backbone reads 2D images: choose a 3D backbone "
                    "(medcls list backbones 'monai:*'), or read volumes with this one: --set acs=true (3D) "
                    "or --set slices=3 (2.5D)"
                    if self.dims == 2 else
                    f"'{case.key}' is a 2D image and the backbone reads volumes: choose a 2D backbone")
            return check_volume(case.array, case.key) if self.dims == 3 else check_image(case.array, case.key)
        entry = self.entry_for(case.path)
        if entry is None:
            raise DataError(f"file '{case.path}' has no reader (unknown format): convert it or remove it")
        # Per-case reader arguments: a manifest's series_uid column picks one series of a folder.
        given = {**self.settings, **{k: case.attributes[k] for k in CASE_SETTINGS if k in case.attributes}}
        wanted = {k: given[k] for k in entry.metadata.get("settings", ()) if given.get(k) not in (None, "")}
        try:
            image = entry.obj(case.path, **wanted)
        except DataError:
            raise
        except Exception as exc:  # a reader plugin's bug must not hide which file broke it
            raise DataError(f"file '{case.path}' cannot be read by reader {entry.name!r} ({exc})") from None
        if self.dims == 3:
            return check_volume(image, case.key)
        check_reader_output(image, case.path, entry)
        return check_image(image, case.key)

    def prepared(self, case: Case, size):
        """`case` read and put on the training grid `size` with this table's preprocessing
        settings (interpolation, crop_foreground): the one path training, predict and evaluate share."""
        from medcls.data.images import prepare_one  # imports torch: not at import time (`medcls --help`)

        return prepare_one(self.read(case), size, self.settings.get("interpolation", "bilinear"),
                           bool(self.settings.get("crop_foreground", False)))

    def header_greyscale(self, case: Case) -> bool:
        """True when `case` will read as one channel, known without decoding: an in-memory
        array's shape, or the reader's `greyscale(path)` header check; False when only the
        decoded content can tell."""
        if case.array is not None:
            return hasattr(case.array, "voxels") or np.shape(case.array)[0] == 1
        entry = self.entry_for(case.path)
        probe = entry.metadata.get("greyscale") if entry is not None else None
        try:
            return bool(probe(case.path)) if probe is not None else False
        except Exception:  # a plugin's probe failing only means decoding decides
            return False

    def patient_id(self, path: Path) -> str | None:
        entry = self.entry_for(path)
        reader = entry.metadata.get("patient_id") if entry is not None else None
        return reader(path) if reader is not None else None


def check_reader_output(image, path: Path, entry) -> None:
    """A reader's side of the contract (float (C, H, W), C = 1 or 3, in [0, 1]), checked on every
    file it reads: a breach is the plugin's bug, fatal and named, not a bad file to skip."""
    image = np.asarray(image)
    problem = None
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        problem = f"shape {image.shape}, not (C, H, W) with C = 1 or 3"
    elif not np.issubdtype(image.dtype, np.floating):
        problem = f"dtype {image.dtype}, not float32"
    elif image.size and np.isfinite(image).all() and (image.min() < -1e-4 or image.max() > 1 + 1e-4):
        problem = f"values in [{float(image.min()):.4g}, {float(image.max()):.4g}], not [0, 1]"
    if problem:
        raise PluginError(f"reader {entry.name!r} of plugin {entry.plugin!r} breaks the reader contract on "
                          f"'{path}': it returned {problem} (see medcls.plugins.hookspecs.medcls_register_readers)")


def check_volume(volume, where: str):
    """A volume reader's voxels must be finite: NaN would become black voxels, silently."""
    voxels = getattr(volume, "voxels", None)
    if voxels is not None and np.issubdtype(voxels.dtype, np.floating) and not np.isfinite(voxels).all():
        raise DataError(f"{where}: volume contains NaN or infinite values: fix the file or leave it out")
    return volume


def check_image(image: np.ndarray, where: str) -> np.ndarray:
    """Readers promise float32 (C, H, W) in [0, 1]; refuse anything else rather than train on it."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise DataError(f"{where}: reader returned shape {image.shape}, expected (C, H, W) with C = 1 or 3")
    if not np.isfinite(image).all():
        raise DataError(f"{where}: image contains NaN or infinite values: check the file")
    return image.astype(np.float32, copy=False)
