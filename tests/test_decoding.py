"""Decoding in the background while training runs: the same cache as decoding first, images in the
order training asks for them, the channel count from headers, unreadable images mid-training."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.data.cases import Case, ReaderTable
from medcls.data.decoding import StartAgain, decode_all
from medcls.errors import DataError
from tests.helpers import save_png


@pytest.fixture
def readers(registries):
    return ReaderTable(registries["readers"])


def grey_files(tmp_path, n: int, mode: str = "L", seed: int = 3) -> list[Case]:
    """PNGs of greyscale content, stored as mode L (the header says grey) or RGB (only the pixels do)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        grey = (rng.random((20, 24)) * 255).astype(np.uint8)
        pixels = grey if mode == "L" else np.repeat(grey[..., None], 3, axis=2)
        cases.append(Case(key=f"{i}.png", label="ab"[i % 2], path=save_png(tmp_path / f"{i}.png", pixels)))
    return cases


def test_background_decoding_fills_the_same_cache_as_decoding_first(readers, tmp_path):
    cases = grey_files(tmp_path / "l", 5) + grey_files(tmp_path / "rgb", 5, mode="RGB")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    cases.insert(4, Case(key="broken.png", label="a", path=tmp_path / "broken.png"))
    first = decode_all(cases, readers, 16)
    background = decode_all(cases, readers, 16, background=True, order=list(range(len(cases)))[::-1])
    assert background.kept.tolist() == list(range(len(cases)))  # provisional until complete()
    background.complete()
    assert first.channels == background.channels == 1
    assert background.kept.tolist() == first.kept.tolist() and 4 not in first.kept
    assert background.failures == first.failures and background.decoded == first.decoded == 10
    assert torch.equal(background.images, first.images)


def test_one_colour_image_decides_three_channels_without_waiting_for_the_rest(readers, tmp_path):
    cases = grey_files(tmp_path, 6, mode="RGB")
    colour = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    cases[3] = Case(key="colour.png", label="a", path=save_png(tmp_path / "colour.png", colour))
    cache = decode_all(cases, readers, 16, background=True)
    assert cache.channels == 3
    cache.complete()
    assert torch.equal(cache.images, decode_all(cases, readers, 16).images)


def test_images_are_decoded_in_the_order_training_announces(readers, tmp_path, monkeypatch):
    cases = grey_files(tmp_path, 12)  # mode L: the header decides one channel, training may start at once
    order, release = [], threading.Event()
    read = readers.read

    def recorded(case):
        release.wait(5)
        order.append(case.key)
        return read(case)

    monkeypatch.setattr(readers, "read", recorded)
    cache = decode_all(cases, readers, 16, threads=1, background=True)
    assert cache.channels == 1  # known from the headers, before any image is decoded
    cache.prioritise([9, 7, 5])
    release.set()
    images = cache.batch([9, 7, 5])
    # Two images were already handed to the worker (it keeps one queued); then training's order.
    assert order[2:5] == ["9.png", "7.png", "5.png"]
    assert torch.equal(images, decode_all(cases, readers, 16).batch([9, 7, 5]))
    cache.complete()


def test_an_unreadable_image_raises_when_asked_for_and_leaves_kept(readers, tmp_path):
    cases = grey_files(tmp_path, 4)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    cases.append(Case(key="broken.png", label="a", path=tmp_path / "broken.png"))
    cache = decode_all(cases, readers, 16, background=True)
    cache.batch([0, 1])
    with pytest.raises(StartAgain, match="broken.png"):
        cache.batch([3, 4])
    assert cache.complete()[0][0] == "broken.png" and cache.kept.tolist() == [0, 1, 2, 3]


def test_strict_stops_at_the_first_unreadable_image_in_the_background(readers, tmp_path):
    cases = grey_files(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    cases.insert(0, Case(key="broken.png", label="a", path=tmp_path / "broken.png"))
    with pytest.raises(DataError, match="broken.png' cannot be decoded"):  # at once or where the caller waits
        decode_all(cases, readers, 16, strict=True, background=True).complete()


def test_a_header_that_says_grey_for_a_colour_image_stops_the_run(registries, tmp_path):
    from medcls.data.readers import read_pil

    class Liar:
        name, obj = "liar", staticmethod(read_pil)
        metadata = {"extensions": (".png",), "greyscale": lambda path: True}

    colour = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    cases = [Case(key="colour.png", label="a", path=save_png(tmp_path / "colour.png", colour))]
    with pytest.raises(DataError, match="reader 'liar' said from its header that it has one channel"):
        decode_all(cases, ReaderTable([Liar()]), 16, background=True).complete()


def test_reader_header_checks(tmp_path):
    from medcls.data.readers import dicom_greyscale, pil_greyscale
    from tests.helpers import write_ct

    grey = save_png(tmp_path / "g.png", np.zeros((4, 4), np.uint8))
    rgb = save_png(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    ct = write_ct(tmp_path / "ct.dcm", np.zeros((8, 8), np.int16))
    assert pil_greyscale(grey) and not pil_greyscale(rgb) and not pil_greyscale(tmp_path / "broken.png")
    assert dicom_greyscale(ct) and not dicom_greyscale(grey)


def manifest(tmp_path, broken_split: str):
    """A CSV manifest of 16 train, 8 val, 8 test PNGs, and one unreadable file in `broken_split`."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(32):
        label = "yes" if i % 2 else "no"
        image = (rng.random((40, 40)) * 60).astype(np.uint8)
        if label == "yes":
            image[10:25, 12:28] = 220
        save_png(tmp_path / "img" / f"{i}.png", image)
        rows.append({"path": f"img/{i}.png", "label": label, "split": "train" if i < 16 else "val" if i < 24 else "test"})
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG not really")
    rows.insert(5, {"path": "img/broken.png", "label": "yes", "split": broken_split})
    with open(tmp_path / "data.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "data.csv"


@pytest.mark.parametrize("broken_split", ["train", "test"])
@pytest.mark.slow
def test_decoding_while_training_trains_exactly_as_decoding_first(tmp_path, broken_split):
    """An unreadable training image is met mid-epoch (the run starts again without it); an
    unreadable test image only once training is over. Either way: the run decoding first."""
    data = manifest(tmp_path, broken_split)
    runs = {}
    for overlap in ("true", "false"):
        out = tmp_path / overlap
        result = CliRunner().invoke(cli, [
            "train", "--data", str(data), "--backbone", "test_resnet", "--no-pretrained", "--epochs", "2",
            "--finetune-epochs", "1", "--image-size", "32", "--batch-size", "4", "--set", "bootstrap=100", "--set", "figures=false",
            "--set", f"decode_while_training={overlap}", "--set", "cache=memory",
            "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert ("training starts again without it" in result.stderr) == (overlap == "true" and broken_split == "train")
        assert "skipped 1 unreadable image" in result.stderr
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(out / "history.csv"))]
        runs[overlap] = (history, json.loads((out / "metrics.json").read_text()), (out / "splits.csv").read_text())
    assert runs["true"] == runs["false"]


def test_the_announced_epoch_order_is_the_one_shuffling_would_draw():
    """Drawing the epoch's order up front to announce it changes neither the batches nor the
    generator's state: runs and resumed runs stay the same."""
    from torch.utils.data import DataLoader, RandomSampler

    from medcls.core.loader import AnnouncedOrder

    items = list(range(50))
    plain_generator, generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain = DataLoader(items, batch_size=8, shuffle=True, generator=plain_generator)
    announced = []
    ours = DataLoader(items, batch_size=8, generator=generator,
                      sampler=AnnouncedOrder(RandomSampler(items, generator=generator), announced.append))
    for epoch in range(2):
        batches = [b.tolist() for b in ours]
        assert [b.tolist() for b in plain] == batches
        assert announced[epoch] == [i for b in batches for i in b]
    assert torch.equal(plain_generator.get_state(), generator.get_state())


@pytest.mark.parametrize("setting, expected", [(None, False), ("true", True), ("false", False)])
@pytest.mark.slow
def test_decoding_while_training_is_off_by_default_on_cpu(monkeypatch, tmp_path, setting, expected):
    """On CPU decoder and model share the cores (measured: overlapping them is slower)."""
    import medcls.workflows.train

    asked = []
    prepare = medcls.workflows.train.prepare_data

    def recording(config, registries, **options):
        asked.append(options.get("background"))
        return prepare(config, registries, **options)

    monkeypatch.setattr(medcls.workflows.train, "prepare_data", recording)
    args = ["train", "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1", "--finetune-epochs", "0",
            "--image-size", "32", "--device", "cpu", "--set", "bootstrap=50", "--set", "figures=false", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli, args + (["--set", f"decode_while_training={setting}"] if setting else []))
    assert result.exit_code == 0, result.output
    assert asked == [expected]


def colour_png(path):
    return save_png(path, (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8))


def test_greyscale_content_in_colour_files_is_guessed_then_confirmed(readers, tmp_path, monkeypatch):
    """RGB files of grey content (only their pixels can tell): training starts once the first
    GUESS_AFTER of them are grey, and the cache comes out as decoding everything first gives."""
    from medcls.data import decoding

    monkeypatch.setattr(decoding, "GUESS_AFTER", 4)
    cases = grey_files(tmp_path, 12, mode="RGB")
    release, read = threading.Event(), readers.read
    monkeypatch.setattr(readers, "read", lambda case: read(case) if case.key != "11.png" or release.wait(5) else None)
    cache = decode_all(cases, readers, 16, threads=2, background=True)
    assert cache.channels == 1 and not cache.filling.done[11]  # guessed before the last file was read
    release.set()
    assert cache.batch([11, 0]).shape == (2, 1, 16, 16)
    cache.complete()
    first = decode_all(cases, readers, 16)
    assert cache.channels == first.channels == 1 and torch.equal(cache.images, first.images)


def test_a_colour_image_after_the_guess_starts_training_again(readers, tmp_path, monkeypatch):
    from medcls.data import decoding

    monkeypatch.setattr(decoding, "GUESS_AFTER", 4)
    cases = grey_files(tmp_path, 8, mode="RGB")
    cases.append(Case(key="colour.png", label="a", path=colour_png(tmp_path / "colour.png")))
    release, read = threading.Event(), readers.read
    monkeypatch.setattr(readers, "read", lambda case: read(case) if case.key != "colour.png" or release.wait(5) else None)
    cache = decode_all(cases, readers, 16, threads=2, background=True)
    assert cache.channels == 1
    release.set()
    with pytest.raises(StartAgain, match="colour.png' is in colour though the first 4 images checked were greyscale"):
        cache.batch([8])
    cache.complete()
    first = decode_all(cases, readers, 16)
    assert cache.channels == first.channels == 3 and torch.equal(cache.images, first.images)


@pytest.mark.slow
def test_training_on_a_wrong_channel_guess_starts_again_and_ends_as_decoding_first(tmp_path, monkeypatch):
    from medcls.data import decoding

    monkeypatch.setattr(decoding, "GUESS_AFTER", 4)
    grey_files(tmp_path / "data" / "a", 10, mode="RGB", seed=1)
    grey_files(tmp_path / "data" / "b", 10, mode="RGB", seed=2)
    colour_png(tmp_path / "data" / "b" / "colour.png")
    read = ReaderTable.read

    def slow_colour(self, case):  # decoded after training has started on the guess
        if case.path is not None and case.path.name == "colour.png":
            threading.Event().wait(1.0)
        return read(self, case)

    monkeypatch.setattr(ReaderTable, "read", slow_colour)
    runs = {}
    for overlap in ("true", "false"):
        out = tmp_path / overlap
        result = CliRunner().invoke(cli, [
            "train", "--data", str(tmp_path / "data"), "--backbone", "test_resnet", "--no-pretrained", "--epochs", "2",
            "--finetune-epochs", "0", "--image-size", "32", "--batch-size", "4", "--set", "bootstrap=50", "--set", "figures=false",
            "--set", f"decode_while_training={overlap}", "--set", "cache=memory", "--set", "positive_class=b",
            "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert ("training starts again with 3 channels" in result.stderr) == (overlap == "true")
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(out / "history.csv"))]
        runs[overlap] = (history, json.loads((out / "metrics.json").read_text()),
                         json.loads((out / "model.json").read_text())["in_chans"])
    assert runs["true"] == runs["false"] and runs["true"][2] == 3
