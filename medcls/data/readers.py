"""Image file readers: PNG/JPEG of any mode, DICOM and single-slice NIfTI, all to float32 (C, H, W) in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcls.errors import DataError

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def read_pil(path: Path, size: int | None = None) -> np.ndarray:
    """PNG/JPEG/TIFF via Pillow: L, LA, RGB, RGBA, P, 1, CMYK, 16- and 32-bit greyscale, upright
    as a viewer shows it (EXIF orientation applied). With `size` (the training resolution), a large
    JPEG is decoded at a reduced DCT scale that stays at least twice `size` on each side, so the
    antialiased resize that follows still sets the pixels. A file of several pages or frames (a
    multi-page TIFF, an animated GIF) is refused rather than read as its first page."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                raise DataError(f"image file '{path}' holds {frames} pages or frames and medcls reads one image "
                                "per file: save each page as its own file (or a volume as NIfTI or a DICOM series)")
            if size and img.format == "JPEG" and min(img.size) >= 4 * size:  # else no smaller scale fits
                img.draft(img.mode, (2 * size, 2 * size))
            img.load()
            return pil_to_array(upright(img), path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image file '{path}' cannot be decoded ({exc}): replace or remove it") from None


EXIF_ORIENTATION = 0x0112


def upright(img):
    """The image turned as its EXIF orientation says (photographs from a phone or camera, stored
    sideways with a tag): labels, heatmaps and previews then match what a viewer showed the reader."""
    exif = img.info.get("exif") or b""
    # Parsing the EXIF block costs a quarter of a small JPEG's decoding: only a block holding the
    # tag's bytes (in either byte order) is parsed.
    if b"\x01\x12" not in exif and b"\x12\x01" not in exif:
        return img
    if img.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return img
    from PIL import ImageOps

    return ImageOps.exif_transpose(img)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def pil_greyscale(path: Path) -> bool:
    """True when the file's header says one channel (Pillow opens lazily: no pixels decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in GREY_MODES
    except Exception:  # unreadable files are reported when they are decoded
        return False


def pil_to_array(img, path: Path) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        # Palette images: expand the palette; a grey palette gives identical channels.
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA"):
        # Composite over black: fully transparent background is "no signal", not white.
        arr = np.asarray(img, dtype=np.float32) / 255.0
        colour, alpha = arr[..., :-1], arr[..., -1:]
        return np.ascontiguousarray((colour * alpha).transpose(2, 0, 1))
    if mode in ("CMYK", "YCbCr", "HSV", "LAB"):
        img, mode = img.convert("RGB"), "RGB"
    if mode == "1":
        img, mode = img.convert("L"), "L"
    arr = np.asarray(img)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = arr.astype(np.float32) / 65535.0
    elif mode == "I":
        # 32-bit integer: Pillow's representation of most 16-bit PNGs.
        top = 65535.0 if arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0 else None
        arr = min_max(arr.astype(np.float32), path) if top is None else arr.astype(np.float32) / top
    elif mode == "F":
        arr = min_max(arr.astype(np.float32), path)
    else:
        # 8-bit: scaled in Pillow's (H, W, C) order, one contiguous pass; channels first as a view
        # (the resize reads it in that layout, no copy).
        out = np.multiply(arr, np.float32(1 / 255), dtype=np.float32)
        return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def finite_pixels(values: np.ndarray, path: Path) -> np.ndarray:
    """Every built-in reader's raw intensities pass here before they are scaled: a NaN or infinite
    pixel would turn the percentiles or the minimum into NaN and the image black, silently. (Plugin
    readers' outputs are checked again in medcls.data.cases.check_image.)"""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise DataError(f"file '{path}' has {bad} NaN or infinite pixel(s) of {values.size}: fix the image "
                        "(or mask them to a number) or leave the file out")
    return values


def min_max(arr: np.ndarray, path: Path) -> np.ndarray:
    finite_pixels(arr, path)
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr, dtype=np.float32)


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return len(head) >= 132 and head[128:132] == b"DICM"


# Common CT windows as (centre, width) in Hounsfield units.
WINDOW_PRESETS = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "soft_tissue": (40.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (60.0, 400.0),
    "liver": (80.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def parse_window(window: str | None) -> tuple[float, float] | None:
    """None or 'header' (use the file's own), a preset name, or 'centre,width'."""
    if window in (None, "", "header"):
        return None
    if window in WINDOW_PRESETS:
        return WINDOW_PRESETS[window]
    try:
        center, width = (float(v) for v in str(window).split(","))
    except ValueError:
        raise DataError(
            f"window {window!r} is not 'header', a preset ({', '.join(WINDOW_PRESETS)}) or 'centre,width'"
        ) from None
    if width <= 0:
        raise DataError(f"window {window!r} has a width <= 0")
    return center, width


def read_dicom(path: Path, window: str | None = None) -> np.ndarray:
    """A single-frame DICOM image: modality LUT (rescale to e.g. Hounsfield units), then the
    window asked for or else the header's VOI LUT or first window, MONOCHROME1 inverted so that
    bright means dense everywhere."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise DataError(f"DICOM file '{path}' cannot be read ({exc}): replace or remove it") from None
    if "PixelData" not in ds:
        if pixel_data_tag_in(path):  # the element starts in the file but pydicom hit its end first
            raise truncated(path)
        raise DataError(f"DICOM file '{path}' has no pixel data (is it a report or a DICOMDIR?): remove it")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"DICOM file '{path}' holds {frames} frames; a 2D model reads single images: "
            "export one frame per file or use a 3D backbone"
        )
    pixels = decode_dicom_pixels(ds, path)
    return dicom_to_unit_range(ds, pixels, parse_window(window), path)


def truncated(path: Path) -> DataError:
    return DataError(f"DICOM file '{path}' is truncated: its pixel data ends early (an interrupted copy or "
                     "download?): copy it again from the source")


def pixel_data_tag_in(path: Path) -> bool:
    """Whether the bytes of the Pixel Data tag (7FE0,0010), in either byte order, occur in the file."""
    data = path.read_bytes()
    return b"\xe0\x7f\x10\x00" in data or b"\x7f\xe0\x00\x10" in data


def decode_dicom_pixels(ds, path: Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except Exception as exc:  # missing decoder plugins raise RuntimeError/NotImplementedError
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = syntax.name if syntax is not None else "unknown transfer syntax"
        if syntax is not None and syntax.is_compressed and not decoder_available(syntax):
            raise DataError(
                f"DICOM file '{path}' is {name} compressed and no working decoder is installed: "
                'pip install "medcls[dicom]"'
            ) from None
        if "less than expected" in str(exc):  # pydicom's words for pixel data cut short
            raise truncated(path) from None
        raise DataError(f"DICOM file '{path}' pixel data cannot be decoded ({exc}): replace or remove it") from None


def decoder_available(syntax) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(syntax).is_available
    except Exception:  # a syntax pydicom has no decoder for at all
        return False


def dicom_to_unit_range(ds, pixels: np.ndarray, window: tuple[float, float] | None = None,
                        path: Path | str = "DICOM data") -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):
        # Colour (RGB, or YBR already converted by pydicom): scale by the stored bit depth.
        top = float(2 ** int(getattr(ds, "BitsStored", 8)) - 1)
        arr = pixels.astype(np.float32) / top
        return np.ascontiguousarray(arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None])
    center, width = window if window is not None else first_window(ds)
    if center is not None and "ModalityLUTSequence" not in ds:
        # Linear rescale and window fused into one float32 multiply-add: the same numbers as
        # apply_modality_lut followed by the window, at the cost of one pass over the pixels.
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        arr = np.multiply(pixels, np.float32(slope / width), dtype=np.float32)
        arr += np.float32((intercept - (center - width / 2.0)) / width)
        np.clip(arr, 0.0, 1.0, out=arr)
        if photometric == "MONOCHROME1":
            np.subtract(1.0, arr, out=arr)
        return arr[None]
    values = finite_pixels(apply_modality_lut(pixels, ds).astype(np.float64), path)
    if center is not None:
        lo, hi = center - width / 2.0, center + width / 2.0
        arr = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
    elif "VOILUTSequence" in ds:
        # A VOI LUT is a table indexed by whole stored (modality-mapped) values: look it up at the
        # nearest integers, as pydicom expects, instead of handing it floats.
        arr = min_max(apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0).astype(np.float32), path)
    else:
        arr = min_max(values.astype(np.float32), path)
    if photometric == "MONOCHROME1":
        arr = 1.0 - arr
    return np.ascontiguousarray(arr[None], dtype=np.float32)


def first_window(ds) -> tuple[float | None, float | None]:
    """The header's first WindowCenter/WindowWidth pair (they are often multi-valued)."""
    from pydicom.multival import MultiValue

    def first(value):
        return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)

    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None, None
    try:
        center, width = first(ds.WindowCenter), first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None, None
    return (center, width) if width > 1 else (None, None)


def dicom_greyscale(path: Path) -> bool:
    """True when the header says one sample per pixel (MONOCHROME1/2), read without pixel data."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SamplesPerPixel"])
        return int(ds.get("SamplesPerPixel", 1)) == 1
    except Exception:
        return False


def dicom_patient_id(path: Path) -> str | None:
    """PatientID from the header, read without pixel data. Never print or log it."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:
        return None
    value = str(ds.get("PatientID", "") or "").strip()
    return value or None


def read_nifti(path: Path) -> np.ndarray:
    """A single-slice NIfTI image (2D, or 3D with one slice), intensities by 0.5-99.5 percentiles."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:
        raise DataError(f"NIfTI file '{path}' cannot be read ({exc}): replace or remove it") from None
    squeezed = np.squeeze(data)
    if squeezed.ndim != 2:
        raise DataError(
            f"NIfTI file '{path}' has shape {data.shape}, not a single 2D slice: "
            "use a 3D backbone for volumes or export one slice per file"
        )
    values = finite_pixels(squeezed.astype(np.float32), path)
    lo, hi = np.percentile(values, [0.5, 99.5])
    arr = np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(values)
    # NIfTI stores (x, y) with x along columns of the displayed image: transpose to (row, col).
    return np.ascontiguousarray(arr.T[None], dtype=np.float32)
