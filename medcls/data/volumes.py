"""Volumes: NIfTI files and DICOM series read into one orientation (RAS, stored as (z, y, x)),
with voxel spacing, then cropped and resampled to the training grid and scaled to [0, 1].

Voxels stay in the file's dtype until the region the training grid needs has been cut out, so a
large CT is never converted to float32 whole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medcls.errors import DataError

# Slices whose spacing differs from the median by more than this fraction are "uneven".
SPACING_TOLERANCE = 0.1


@dataclass
class Volume:
    """Voxels `(z, y, x)` (superior, anterior, right increasing: RAS), in the file's dtype or
    already rescaled (DICOM: Hounsfield units for CT), with spacing in mm along (z, y, x)."""

    voxels: np.ndarray
    spacing: tuple[float, float, float]
    modality: str | None = None  # 'CT' selects HU windows; anything else percentiles
    rescale: tuple[float, float] = (1.0, 0.0)  # slope, intercept to physical units, applied after cropping
    window: tuple[float, float] | None = None  # the header's (centre, width), when it has one
    source: str = ""  # the file or folder, for messages

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise DataError(f"volume '{self.source}' has shape {self.voxels.shape}, expected 3 dimensions")


def canonical(voxels_xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient (i, j, k) voxels with a voxel-to-RAS affine to RAS, then to (z, y, x) order."""
    import nibabel as nib

    orientation = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(voxels_xyz, orientation)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # voxel size along i, j, k
    spacing_xyz = [float(zooms[int(axis)]) for axis in np.argsort(orientation[:, 0])]
    # A view: nothing is copied (or read, for an uncompressed file) until the grid's region is cut.
    return ras.transpose(2, 1, 0), (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])


def read_nifti_volume(path: Path) -> Volume:
    """A 3D NIfTI (`.nii`, `.nii.gz`); a 4D one is refused unless its last axis has one volume."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = image.shape
    except Exception as exc:
        raise DataError(f"NIfTI file '{path}' cannot be read ({exc}): replace or remove it") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) < 3:
        raise DataError(f"NIfTI file '{path}' has shape {image.shape}, a 2D image: a 3D backbone reads volumes; "
                        "choose a 2D backbone for slices, or remove it")
    if len(shape) != 3:
        raise DataError(
            f"NIfTI file '{path}' has shape {image.shape}: medcls classifies 3D volumes; "
            "split a 4D series (e.g. fMRI, DWI) into one 3D file per volume and choose one"
        )
    try:
        voxels = np.asanyarray(image.dataobj).reshape(shape)  # scaled by scl_slope/inter, if any
    except Exception as exc:
        raise DataError(f"NIfTI file '{path}' pixel data cannot be read ({exc}): replace or remove it") from None
    zyx, spacing = canonical(voxels, image.affine)
    return Volume(zyx, spacing, modality=None, source=str(path))


def dicom_series(folder: Path) -> dict[str, list]:
    """The DICOM datasets directly in `folder` (pixel data read, not decoded), by SeriesInstanceUID."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path)  # a file without the DICM marker raises: not part of the series
        except InvalidDicomError:
            continue
        except Exception as exc:
            raise DataError(f"DICOM file '{path}' cannot be read ({exc}): replace or remove it") from None
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    return series


def is_series_folder(path: Path) -> bool:
    """A folder that directly holds DICOM files (checks the first few by their 'DICM' marker)."""
    from medcls.data.readers import is_dicom

    for count, file in enumerate(p for p in path.iterdir() if p.is_file()):
        if count >= 8:
            return False
        try:
            with open(file, "rb") as fh:
                if is_dicom(fh.read(132)):
                    return True
        except OSError:
            continue
    return False


def pick_series(folder: Path, series_uid: str | None) -> list:
    """The datasets of the folder's one series, or of the series named by `series_uid`."""
    if not folder.is_dir():
        raise DataError(f"DICOM series '{folder}' is not a folder of slices")
    found = dicom_series(folder)
    if not found:
        raise DataError(f"DICOM series folder '{folder}' holds no DICOM files")
    if series_uid is None and len(found) > 1:
        raise DataError(
            f"DICOM folder '{folder}' mixes {len(found)} series: move each into its own folder, or name one in "
            "a 'series_uid' manifest column (the SeriesInstanceUID in its files' headers)"
        )
    if series_uid is not None and series_uid not in found:
        raise DataError(f"DICOM folder '{folder}' has no series {series_uid!r}")
    return found[series_uid] if series_uid is not None else next(iter(found.values()))


def sorted_slices(slices: list, where: str):
    """Slices in order along their normal, with the even step between them and the row and column
    direction cosines; one stack or an error (mixed orientations, duplicates, gaps)."""
    orientations = {tuple(np.round(np.asarray(s.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float), 4))
                    for s in slices}
    if len(orientations) > 1:
        raise DataError(f"{where} mixes {len(orientations)} slice orientations: it is not one stack; split it")
    orientation = next(iter(orientations))
    row_cosine, column_cosine = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_cosine, column_cosine)
    if all("ImagePositionPatient" in s for s in slices):
        positions = np.array([np.dot(normal, np.asarray(s.ImagePositionPatient, float)) for s in slices])
    else:  # no geometry: InstanceNumber order, SliceThickness spacing (the fallback the standard allows)
        positions = np.array([float(s.get("InstanceNumber", i)) for i, s in enumerate(slices)])
        positions *= float(slices[0].get("SpacingBetweenSlices", slices[0].get("SliceThickness", 1.0)) or 1.0)
    order = np.argsort(positions, kind="stable")
    positions, slices = positions[order], [slices[i] for i in order]
    gaps = np.diff(positions)
    if np.any(np.isclose(gaps, 0.0, atol=1e-3)):
        raise DataError(f"{where} has two slices at the same position (a duplicated slice): remove the copy")
    step = float(np.median(gaps))
    if np.any(np.abs(gaps - step) > SPACING_TOLERANCE * step):
        worst = float(gaps[np.argmax(np.abs(gaps - step))])
        kind = "a missing slice" if worst > 1.5 * step else "uneven slice spacing"
        raise DataError(
            f"{where} has {kind} (a gap of {worst:.2f} mm where slices are {step:.2f} mm apart): "
            "export the complete series"
        )
    return slices, step, row_cosine, column_cosine


def read_dicom_series(folder: Path, series_uid: str | None = None) -> Volume:
    """A folder of single-slice DICOM files (one series, or the one named by `series_uid`) as a
    volume: slices sorted by position along the slice normal, stored values kept with the
    series' rescale (applied after cropping) or, when slices differ, the modality LUT per slice."""
    from pydicom.pixels import apply_modality_lut

    from medcls.data.readers import first_window

    folder = Path(folder)
    where = f"DICOM series '{folder}'"
    slices = pick_series(folder, series_uid)
    if len(slices) < 2:
        raise DataError(f"{where} has a single slice: read it as a 2D image with a 2D backbone")
    slices, step, row_cosine, column_cosine = sorted_slices(slices, where)
    shapes = {(int(s.Rows), int(s.Columns)) for s in slices}
    if len(shapes) > 1:
        raise DataError(f"{where} mixes slice sizes {sorted(shapes)}: it is not one stack")
    rescales = {(float(s.get("RescaleSlope", 1) or 1), float(s.get("RescaleIntercept", 0) or 0)) for s in slices}
    linear = len(rescales) == 1 and not any("ModalityLUTSequence" in s for s in slices)
    try:
        if linear:  # one rescale for the series: keep stored values, rescale after cropping
            stack, rescale = np.stack([s.pixel_array for s in slices]), next(iter(rescales))
        else:
            stack, rescale = np.stack([apply_modality_lut(s.pixel_array, s) for s in slices]).astype(np.float32), (1.0, 0.0)
    except Exception as exc:
        raise DataError(f"{where} pixel data cannot be decoded ({exc}): pip install \"medcls[dicom]\"") from None
    row_spacing, column_spacing = (float(v) for v in slices[0].get("PixelSpacing", [1.0, 1.0]))
    # Voxel (i = column, j = row, k = slice) to patient LPS, then to RAS (negate x and y).
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * column_spacing
    affine[:3, 1] = column_cosine * row_spacing
    affine[:3, 2] = np.cross(row_cosine, column_cosine) * step
    affine[:3, 3] = np.asarray(slices[0].get("ImagePositionPatient", [0, 0, 0]), float)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    zyx, spacing = canonical(stack.transpose(2, 1, 0), affine)
    centre, width = first_window(slices[0])
    return Volume(zyx, spacing, modality=str(slices[0].get("Modality", "")) or None,
                  window=None if centre is None else (centre, width), source=str(folder), rescale=rescale)


@dataclass(frozen=True)
class VolumeGrid:
    """The training grid: `shape` voxels (z, y, x); with `spacing` (mm) the volume is resampled to
    it and centre-cropped or zero-padded, without it the whole volume is resized to `shape`."""

    shape: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] | None = None
    window: str | None = None  # CT: a preset, 'centre,width' or None (header window, else percentiles)
    max_voxels: int = 512 ** 3  # refuse volumes larger than this at the requested spacing


def make_grid(volume_size, volume_spacing, window) -> VolumeGrid:
    """The grid from the run settings `volume_size`, `volume_spacing` and `window`."""
    return VolumeGrid(shape=parse_triple(volume_size, "volume_size", int),
                      spacing=parse_triple(volume_spacing, "volume_spacing"), window=window)


def parse_triple(text, name: str, kind=float) -> tuple | None:
    if text in (None, "", "none", "native"):
        return None
    values = [kind(v) for v in str(text).replace("x", ",").split(",")]
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise DataError(f"{name} {text!r} must be one positive number or three (z,y,x), e.g. 64 or 32,96,96")
    return tuple(values)


def to_grid(volume: Volume, grid: VolumeGrid):
    """(1, z, y, x) float32 tensor in [0, 1] on the training grid."""
    import torch

    if not isinstance(volume, Volume):
        raise DataError(f"a volume reader returned {type(volume).__name__}, not medcls.data.volumes.Volume")
    voxels, spacing = volume.voxels, np.asarray(volume.spacing, float)
    if grid.spacing is None:
        cut, target = voxels, np.asarray(grid.shape)
    else:
        # Cut the region the grid covers (plus a voxel of margin) before converting to float.
        wanted = np.ceil(np.asarray(grid.shape) * np.asarray(grid.spacing) / spacing).astype(int) + 2
        size = np.minimum(wanted, voxels.shape)
        start = (np.asarray(voxels.shape) - size) // 2
        cut = voxels[tuple(slice(int(s), int(s + n)) for s, n in zip(start, size))]
        target = np.maximum(1, np.round(size * spacing / np.asarray(grid.spacing))).astype(int)
    count = int(np.prod(cut.shape))
    if count > grid.max_voxels:
        raise DataError(
            f"volume '{volume.source}': {tuple(cut.shape)} voxels ({count * 4 / 2**30:.1f} GiB as float32) would be "
            f"resampled at once, over the limit of {grid.max_voxels} voxels: choose a coarser volume_spacing "
            "or a smaller volume_size, or raise max_voxels"
        )
    values = np.asarray(cut, dtype=np.float32)
    if volume.rescale != (1.0, 0.0):
        values = values * np.float32(volume.rescale[0]) + np.float32(volume.rescale[1])
    values = scale_intensity(values, volume, grid.window).astype(np.float32, copy=False)
    tensor = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    target = tuple(int(t) for t in target)
    if tuple(tensor.shape[2:]) != target:
        tensor = torch.nn.functional.interpolate(tensor, size=target, mode="trilinear", align_corners=False)
    return centre_crop_or_pad(tensor[0], grid.shape).clamp_(0.0, 1.0)


def centre_crop_or_pad(tensor, shape):
    import torch

    out = torch.zeros((tensor.shape[0], *shape), dtype=tensor.dtype)
    source, target = [], []
    for have, want in zip(tensor.shape[1:], shape):
        if have >= want:
            start = (have - want) // 2
            source.append(slice(start, start + want))
            target.append(slice(0, want))
        else:
            start = (want - have) // 2
            source.append(slice(0, have))
            target.append(slice(start, start + have))
    out[(slice(None), *target)] = tensor[(slice(None), *source)]
    return out


def scale_intensity(values: np.ndarray, volume: Volume, window: str | None) -> np.ndarray:
    """CT: the window asked for, else the header's; otherwise (MRI, NIfTI) 0.5-99.5 percentiles."""
    from medcls.data.readers import parse_window

    chosen = parse_window(window) if window not in (None, "", "header") else volume.window
    if chosen is not None and (volume.modality == "CT" or window not in (None, "", "header")):
        centre, width = chosen
        return np.clip((values - (centre - width / 2.0)) / width, 0.0, 1.0)
    lo, hi = np.percentile(values, [0.5, 99.5])
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)
