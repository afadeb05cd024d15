"""The decoded-image cache: RAM or memory-mapped storage, and the disk store shared between runs."""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
import torch

from medcls.data.cases import Case, ReaderTable
from medcls.data.decoding import decode_all
from medcls.data.images import ImageStore
from medcls.data.prepared import hash_all
from tests.helpers import save_png


@pytest.fixture
def cases(tmp_path):
    rng = np.random.default_rng(1)
    made = []
    for i in range(6):
        image = (rng.random((30, 40, 3)) * 255).astype(np.uint8)  # colour content
        made.append(Case(key=f"c{i}.png", label="yes" if i % 2 else "no", path=save_png(tmp_path / f"c{i}.png", image)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    made.insert(2, Case(key="broken.png", label="no", path=tmp_path / "broken.png"))
    return made


@pytest.fixture
def readers(registries):
    return ReaderTable(registries["readers"])


def test_a_second_run_loads_every_image_from_the_store_with_identical_pixels(cases, readers, tmp_path):
    hashes = hash_all(cases)
    store = ImageStore(tmp_path / "store", {"size": 16})
    first = decode_all(cases, readers, 16, hashes=hashes, store=store)
    second = decode_all(cases, readers, 16, hashes=hashes, store=store)
    assert first.decoded == 6 and second.decoded == 0
    assert torch.equal(first.images, second.images) and first.channels == 3
    uncached = decode_all(cases, readers, 16)
    assert torch.equal(uncached.batch(np.arange(6)), second.batch(np.arange(6)))


def test_the_store_fills_in_the_background_and_a_new_run_waits_for_nothing(cases, readers, tmp_path):
    hashes = hash_all(cases)
    store = ImageStore(tmp_path / "store", {"size": 16})
    decode_all(cases, readers, 16, hashes=hashes, store=store)
    assert store.writer is not None  # returned before the writes finished
    store.flush()
    assert len(list(store.root.rglob("*.img"))) == 6  # all but the broken file
    other_run = ImageStore(tmp_path / "store", {"size": 16})
    assert decode_all(cases, readers, 16, hashes=hashes, store=other_run).decoded == 0


def test_other_preprocessing_settings_never_reuse_stored_images(cases, readers, tmp_path):
    hashes = hash_all(cases)
    decode_all(cases, readers, 16, hashes=hashes, store=ImageStore(tmp_path / "store", {"size": 16}))
    other = decode_all(cases, readers, 16, hashes=hashes, store=ImageStore(tmp_path / "store", {"size": 16, "window": "lung"}))
    assert other.decoded == 6


def entry_of(store, content_hash):
    return next(store.root.rglob(f"{content_hash}-*.img"))


@pytest.mark.parametrize("damage", [
    lambda data: data[:40],  # half written
    lambda data: data[:-8] + bytes(8),  # pixels changed after writing
    lambda data: b"\x93NUMPY" + data[7:],  # not medcls's
])
def test_a_damaged_store_entry_is_discarded_and_decoded_again(cases, readers, tmp_path, damage, caplog):
    hashes = hash_all(cases)
    store = ImageStore(tmp_path / "store", {"size": 16})
    first = decode_all(cases, readers, 16, hashes=hashes, store=store)
    store.flush()  # the store fills in the background, overlapped with training
    entry = entry_of(store, hashes[0])
    entry.write_bytes(damage(entry.read_bytes()))
    again = decode_all(cases, readers, 16, hashes=hashes, store=store)
    assert again.decoded == 1 and torch.equal(again.batch(np.arange(6)), first.batch(np.arange(6)))
    assert "is damaged" in caplog.text


def test_a_plausible_entry_of_the_wrong_shape_is_refused(cases, readers, tmp_path):
    hashes = hash_all(cases)
    store = ImageStore(tmp_path / "store", {"size": 16})
    first = decode_all(cases, readers, 16, hashes=hashes, store=store)
    store.flush()
    entry = entry_of(store, hashes[0])
    reader = entry.stem.split("-", 1)[1]
    store.put(hashes[0], reader, np.zeros((3, 8, 8), np.uint16))  # a well-formed entry of another grid
    again = decode_all(cases, readers, 16, hashes=hashes, store=store)
    assert again.decoded == 1 and torch.equal(again.batch(np.arange(6)), first.batch(np.arange(6)))


def test_the_reader_decides_before_the_store_serves(cases, readers, tmp_path):
    """A PNG renamed .dcm is skipped whether or not its bytes are already in the store."""
    from medcls.data.cases import Case

    hashes = hash_all(cases)
    store = ImageStore(tmp_path / "store", {"size": 16})
    decode_all(cases, readers, 16, hashes=hashes, store=store)
    store.flush()
    renamed = tmp_path / "renamed.dcm"
    renamed.write_bytes(cases[0].path.read_bytes())
    moved = [Case(key=str(renamed), label=cases[0].label, path=renamed), cases[1]]
    warm = decode_all(moved, readers, 16, hashes=hash_all(moved), store=store)
    cold = decode_all(moved, readers, 16)
    assert warm.kept.tolist() == cold.kept.tolist() == [1]
    assert "renamed.dcm" in warm.failures[0][0] and warm.failures[0][1] == cold.failures[0][1]


def test_unreadable_images_are_skipped_and_rows_map_to_the_readable_ones(cases, readers):
    cache = decode_all(cases, readers, 16)
    assert cache.kept.tolist() == [0, 1, 3, 4, 5, 6]
    assert cache.failures[0][0] == "broken.png" and "cannot be decoded" in cache.failures[0][1]
    direct = decode_all([cases[3]], readers, 16)
    assert torch.equal(cache.batch([2]), direct.batch([0]))


def test_images_larger_than_the_memory_budget_live_in_a_memory_mapped_file(cases, readers, tmp_path, monkeypatch):
    mapped = []
    original = np.lib.format.open_memmap

    def spy(*args, **kwargs):
        mapped.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "open_memmap", spy)
    store = ImageStore(tmp_path / "store", {"size": 16})
    on_disk = decode_all(cases, readers, 16, hashes=hash_all(cases), store=store, memory_budget=0)
    in_ram = decode_all(cases, readers, 16)
    assert mapped and not any(p.exists() for p in map(__import__("pathlib").Path, mapped))  # unlinked once mapped
    assert torch.equal(on_disk.batch(np.arange(6)), in_ram.batch(np.arange(6)))


def test_greyscale_content_is_stored_with_one_channel(readers, tmp_path):
    grey = np.tile((np.arange(40, dtype=np.uint8) * 6)[None, :, None], (30, 1, 3))
    cases = [Case(key="g.png", label="a", path=save_png(tmp_path / "g.png", grey))]
    cache = decode_all(cases, readers, 16)
    assert cache.channels == 1 and cache.images.shape == (1, 1, 16, 16)


def test_compressed_dicom_decodes_in_worker_processes_like_in_threads(readers, tmp_path, monkeypatch):
    import multiprocessing

    import pydicom
    from pydicom.uid import RLELossless

    from medcls.data import decoding
    from tests.helpers import write_ct

    rng = np.random.default_rng(2)
    cases = []
    for i in range(17):
        path = write_ct(tmp_path / f"{i}.dcm", rng.integers(0, 2048, (24, 24)))
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
        cases.append(Case(key=path.name, label="a", path=path))
    (tmp_path / "16.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)  # truncated: unreadable
    assert decoding.compressed_dicom(cases[0].path)
    pooled = decode_all(cases, readers, 16, threads=2)
    background = decode_all(cases, readers, 16, threads=2, background=True)  # processes forked before it returns
    assert torch.equal(background.batch([3, 0]), pooled.batch([3, 0]))
    background.complete()
    assert torch.equal(background.images, pooled.images) and background.failures == pooled.failures
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: [])
    threaded = decode_all(cases, readers, 16, threads=2)
    assert pooled.kept.tolist() == threaded.kept.tolist() == list(range(16))
    assert pooled.failures[0][0] == "16.dcm" and "no pixel data" in pooled.failures[0][1]
    assert torch.equal(pooled.images, threaded.images)


def bordered(height=80, width=100, box=(20, 50, 30, 90), level=0.7):
    """A (1, H, W) image: black but for a textured object in `box` (top, bottom, left, right)."""
    image = np.zeros((1, height, width), dtype=np.float32)
    top, bottom, left, right = box
    image[0, top:bottom, left:right] = level + 0.2 * np.random.default_rng(0).random((bottom - top, right - left))
    return image


def test_the_foreground_box_holds_the_object_with_a_small_margin():
    from medcls.data.images import foreground_box

    image = bordered()
    assert foreground_box(torch.from_numpy(image)) == [18, 52, 28, 92]  # 2 % of 80 and of 100 around it
    image[0, 2, 2] = 1.0  # a burnt-in marker in a corner does not widen the box
    image[0, 75:77, 3:6] = 1.0
    assert foreground_box(torch.from_numpy(image)) == [18, 52, 28, 92]
    scripted = torch.jit.script(foreground_box)  # the exported bundle crops with the same function
    assert scripted(torch.from_numpy(image)) == [18, 52, 28, 92]


@pytest.mark.parametrize("image", [np.zeros((1, 40, 40), np.float32),  # blank
                                   np.random.default_rng(0).random((3, 40, 40)).astype(np.float32),  # fills the frame
                                   bordered(box=(20, 23, 30, 90))],  # a sliver: not trusted
                         ids=["blank", "filled", "sliver"])
def test_an_image_without_a_clear_object_is_left_whole(image):
    from medcls.data.images import foreground_box

    assert foreground_box(torch.from_numpy(image)) == [0, image.shape[1], 0, image.shape[2]]


def test_crop_foreground_lets_the_object_fill_the_training_grid():
    from medcls.data.images import prepare_one

    image = bordered()
    whole, cropped = prepare_one(image, 32), prepare_one(image, 32, crop_foreground=True)
    assert float((whole > 0.5).float().mean()) < 0.3  # the object is a quarter of the frame
    assert float((cropped > 0.5).float().mean()) > 0.8  # cut to its box it fills the frame


def test_cropped_and_whole_images_never_share_a_store_entry(registries, tmp_path):
    from medcls.config import TrainConfig
    from medcls.data.loading import load_cases
    from medcls.data.prepared import image_store

    keys = set()
    for crop in (False, True):
        config = TrainConfig(backbone="test_resnet", crop_foreground=crop, cache_dir=str(tmp_path))
        _, _, readers = load_cases(config, registries)
        keys.add(image_store(config, readers, registries).key)
    assert len(keys) == 2


READER_PLUGIN = """
import numpy as np
import medcls


def read_fake(path, **settings):
    return np.full((1, 8, 8), VALUE, dtype=np.float32)


@medcls.hookimpl
def medcls_register_readers(register):
    register("fake", read_fake, extensions=(".fake",), description="constant images")
"""


@pytest.mark.parametrize("edit", ["code", "version"])
def test_a_changed_reader_is_called_again_instead_of_its_old_pixels_being_served(make_distribution, tmp_path,
                                                                                  edit):
    """A plugin's reader edited (same distribution version) or released anew: the disk store is keyed by
    the reader's identity, so the next run decodes with the new reader, never serving the old pixels."""
    import sys

    from medcls.config import TrainConfig
    from medcls.data.prepared import prepare_data
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries

    for label in ("no", "yes"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "data" / label / f"{label}{i}.fake").write_bytes(f"{label}{i}".encode())
    config = TrainConfig(backbone="test_resnet", data=str(tmp_path / "data"), image_size=8, cache="disk",
                         cache_dir=str(tmp_path / "store"), val_fraction=0.25, test_fraction=0.25)

    site = make_distribution("fake-reader", "fake_reader", READER_PLUGIN.replace("VALUE", "0.25"))

    def pixels():
        sys.modules.pop("fake_reader", None)
        importlib.invalidate_caches()
        data = prepare_data(config, Registries(get_plugin_manager()))
        data.cache.complete()
        return data.cache.batch(np.arange(len(data.cache.kept)))

    def stored():
        return len(list((tmp_path / "store").rglob("*.img")))

    assert torch.allclose(pixels(), torch.tensor(0.25), atol=1e-4)
    for _ in range(100):  # the store is written in the background
        if stored() == 12:
            break
        time.sleep(0.1)
    assert stored() == 12
    if edit == "code":  # edited in place, same distribution version
        (site / "fake_reader.py").write_text(READER_PLUGIN.replace("VALUE", "0.75"))
    else:  # a new release whose reader declares what changed
        (site / "fake_reader-1.0.dist-info").rename(site / "fake_reader-1.1.dist-info")
        info = site / "fake_reader-1.1.dist-info" / "METADATA"
        info.write_text(info.read_text().replace("Version: 1.0", "Version: 1.1"))
        (site / "fake_reader.py").write_text(READER_PLUGIN.replace("VALUE", "0.75"))
    again = pixels()
    assert torch.allclose(again, torch.tensor(0.75), atol=1e-4)
