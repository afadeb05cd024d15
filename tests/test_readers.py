"""Readers: PNG/JPEG of every mode, DICOM (real files from pydicom-data and files written here), NIfTI."""

from pathlib import Path

import numpy as np
import pytest

from medcls.data.readers import read_dicom, read_nifti, read_pil
from medcls.errors import DataError
from tests.helpers import save_png, write_ct


def data_store_file(name: str) -> Path:
    """A pydicom-data file looked up on disk, without pydicom's network fetch."""
    data_store = pytest.importorskip("data_store", reason="pydicom-data is not installed")
    path = Path(data_store.__file__).parent / "data" / name
    if not path.exists():
        pytest.skip(f"pydicom-data has no {name}")
    return path


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3), ("RGBA", 3), ("P", 3), ("LA", 1), ("1", 1),
                                            ("I;16", 1), ("I", 1)])
def test_png_modes(tmp_path, mode, channels):
    from PIL import Image

    base = Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8))
    if mode in ("I;16", "I"):  # 16-bit data, as uint16 or as Pillow's 32-bit integer mode
        wide = np.arange(64 * 64).reshape(64, 64) * 16
        image = Image.fromarray(wide.astype(np.uint16 if mode == "I;16" else np.int32))
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tif" if mode == "I" else "x.png")  # Pillow writes 32-bit integer as TIFF only
    image.save(path)
    array = read_pil(path)
    assert array.shape == (channels, 64, 64) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0 and array.max() > 0.5


def test_sixteen_bit_keeps_full_range(tmp_path):
    from PIL import Image

    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.png")
    np.testing.assert_allclose(read_pil(tmp_path / "x.png")[0], values / 65535.0, atol=1e-6)


def test_rgba_transparent_background_is_black(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white, but fully transparent except one pixel
    rgba[0, 0, 3] = 255
    save_png(tmp_path / "x.png", rgba, mode="RGBA")
    array = read_pil(tmp_path / "x.png")
    assert array[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and array[:, 1, 1].tolist() == [0.0, 0.0, 0.0]


def test_jpeg(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), 128, dtype=np.uint8)).save(tmp_path / "x.JPG")
    assert read_pil(tmp_path / "x.JPG").shape == (3, 20, 30)


def test_corrupt_image_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="bad.png' cannot be decoded"):
        read_pil(tmp_path / "bad.png")


def test_dicom_rescale_and_first_window(tmp_path):
    # Stored 1024 -> 0 HU (water); window 40/400 maps [-160, 240] HU onto [0, 1].
    stored = np.array([[0, 1024], [1064, 2048]])
    image = read_dicom(write_ct(tmp_path / "ct.dcm", stored))
    hu = stored - 1024.0
    np.testing.assert_allclose(image[0], np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_dicom_without_window_uses_full_range(tmp_path):
    image = read_dicom(write_ct(tmp_path / "ct.dcm", np.array([[0, 100], [200, 400]]), window=None))
    assert image.min() == 0.0 and image.max() == 1.0


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 1024], [1064, 2048]])
    normal = read_dicom(write_ct(tmp_path / "a.dcm", stored))
    inverted = read_dicom(write_ct(tmp_path / "b.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)


def test_real_monochrome1_radiograph():
    image = read_dicom(data_store_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert image.shape[0] == 1 and 0 <= image.min() < image.max() <= 1
    import pydicom

    for name in ("RG1_UNCR.dcm", "RG1_UNCI.dcm"):
        try:
            path = data_store_file(name)
        except pytest.skip.Exception:
            continue
        assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
        radiograph = read_dicom(path)
        assert radiograph.shape[0] == 1 and 0 <= radiograph.min() < radiograph.max() <= 1
        return
    pytest.skip("pydicom-data has no MONOCHROME1 radiograph")


@pytest.mark.parametrize("compressed, reference", [
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),  # JPEG 2000 lossless, MR
    ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless, CT
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, MONOCHROME1 radiograph
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # JPEG 2000 lossless, colour ultrasound
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm"),  # RLE
    ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm"),  # explicit VR big endian
])
def test_real_compressed_and_big_endian_match_uncompressed(compressed, reference):
    np.testing.assert_allclose(read_dicom(data_store_file(compressed)), read_dicom(data_store_file(reference)), atol=1e-6)


def test_real_colour_dicom_has_three_channels():
    image = read_dicom(data_store_file("SC_rgb.dcm"))
    assert image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1


def test_real_jpeg_lossless():
    image = read_dicom(data_store_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert image.ndim == 3 and image.max() > image.min()


def test_multiframe_dicom_is_refused():
    import pydicom

    folder = Path(pytest.importorskip("data_store", reason="pydicom-data is not installed").__file__).parent / "data"
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 and "PixelData" in pydicom.dcmread(path):
            with pytest.raises(DataError, match="frames"):
                read_dicom(path)
            return
    pytest.skip("no multi-frame file in pydicom-data")


def test_a_voi_lut_is_looked_up_at_whole_stored_values():
    import warnings

    import pydicom
    from pydicom.pixels import apply_voi_lut

    path = data_store_file("vlut_04.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns when the table is indexed by floats
        image = read_dicom(path)
    ds = pydicom.dcmread(path)
    expected = apply_voi_lut(ds.pixel_array, ds, index=0).astype(np.float64)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(image[0], expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_a_truncated_dicom_says_so(tmp_path):
    whole = data_store_file("MR2_UNCR.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.dcm' is truncated: its pixel data ends early"):
        read_dicom(tmp_path / "cut.dcm")
    with pytest.raises(DataError, match="truncated"):  # a real one: JPEG 2000 fragments cut short
        read_dicom(data_store_file("emri_small_jpeg_2k_lossless_too_short.dcm"))


@pytest.mark.parametrize("installed, message", [
    (False, "JPEG 2000 Image Compression .Lossless Only. compressed and no working decoder is installed"),
    (True, "pixel data cannot be decoded .broken stream.: replace or remove it"),
])
def test_an_undecodable_compressed_dicom_names_the_fix(monkeypatch, installed, message):
    import pydicom

    from medcls.data import readers

    def broken(self):
        raise RuntimeError("broken stream")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(broken))
    monkeypatch.setattr(readers, "decoder_available", lambda syntax: installed)
    with pytest.raises(DataError, match=message):  # a decoder that is there and fails is not "install one"
        read_dicom(data_store_file("MR2_J2KR.dcm"))


def test_not_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"nonsense" * 20)
    with pytest.raises(DataError, match="x.dcm' cannot be read"):
        read_dicom(tmp_path / "x.dcm")


def test_nifti_single_slice_and_volume_refused(tmp_path):
    import nibabel as nib

    slice_ = np.arange(12, dtype=np.int16).reshape(3, 4)  # (x, y)
    nib.save(nib.Nifti1Image(slice_[:, :, None], np.eye(4)), tmp_path / "a.nii.gz")
    image = read_nifti(tmp_path / "a.nii.gz")
    assert image.shape == (1, 4, 3)  # (C, rows=y, cols=x)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 5), np.float32), np.eye(4)), tmp_path / "v.nii")
    with pytest.raises(DataError, match="not a single 2D slice"):
        read_nifti(tmp_path / "v.nii")


def test_window_preset_and_explicit_window_override_the_header(tmp_path):
    stored = np.array([[0, 1024], [1424, 2048]])  # -1024, 0, 400, 1024 HU
    path = write_ct(tmp_path / "ct.dcm", stored)
    hu = stored - 1024.0
    np.testing.assert_allclose(read_dicom(path, window="lung")[0], np.clip((hu + 1350) / 1500, 0, 1), atol=1e-6)
    np.testing.assert_allclose(read_dicom(path, window="0,2048")[0], np.clip((hu + 1024) / 2048, 0, 1), atol=1e-6)


def test_bad_window_is_a_clear_error(tmp_path):
    path = write_ct(tmp_path / "ct.dcm", np.zeros((2, 2)))
    with pytest.raises(DataError, match="not 'header', a preset"):
        read_dicom(path, window="lungs")


def test_reader_table_passes_only_declared_settings(registries, tmp_path):
    from medcls.data.cases import Case, ReaderTable

    save_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write_ct(tmp_path / "b.dcm", np.array([[0, 1024], [1424, 2048]]))
    table = ReaderTable(registries["readers"], {"window": "bone"})
    assert table.read(Case(key="a", label="x", path=tmp_path / "a.png")).shape == (1, 4, 4)  # PIL gets no window
    bone = table.read(Case(key="b", label="x", path=tmp_path / "b.dcm"))
    np.testing.assert_allclose(bone[0, 1, 1], (1024 - 400 + 900) / 1800, atol=1e-6)


def test_fused_rescale_and_window_equals_the_modality_lut_path(tmp_path):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    stored = np.random.default_rng(0).integers(0, 4096, (64, 64))
    path = write_ct(tmp_path / "ct.dcm", stored, slope=0.5, intercept=-1000.0)
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    expected = np.clip((hu - (40 - 200)) / 400, 0, 1)
    np.testing.assert_allclose(read_dicom(path)[0], expected, atol=1e-6)


def test_large_jpeg_decodes_at_reduced_scale_but_never_below_twice_the_size(tmp_path):
    import torch

    from medcls.data.images import resize

    y, x = np.mgrid[:1600, :1200]
    array = ((np.sin(x / 40.0) + np.cos(y / 55.0) + 2) * 60).astype(np.uint8)
    path = tmp_path / "big.jpg"
    from PIL import Image

    Image.fromarray(array).save(path, quality=95)
    full, reduced = read_pil(path), read_pil(path, size=128)
    assert full.shape == (1, 1600, 1200) and min(reduced.shape[1:]) >= 256 and reduced.shape[1] < 1600
    difference = (resize(full, 128) - resize(reduced, 128)).abs()
    assert float(difference.mean()) < 0.01 and isinstance(difference, torch.Tensor)


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    """A photograph stored sideways with an EXIF orientation tag is read as viewers show it."""
    from PIL import Image

    stored = np.zeros((20, 40), dtype=np.uint8)
    stored[:5, :10] = 255  # a bright corner marks which way is up
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif.tobytes())
    np.testing.assert_array_equal(read_pil(tmp_path / "photo.png")[0], turn(stored) / 255.0)


def test_a_multi_page_tiff_is_refused_not_read_as_its_first_page(tmp_path):
    from PIL import Image

    pages = [Image.fromarray(np.full((8, 8), v, dtype=np.uint8)) for v in (10, 200)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(DataError, match="'.*stack.tif' holds 2 pages or frames.*save each page as its own file"):
        read_pil(tmp_path / "stack.tif")
