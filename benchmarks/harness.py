"""The benchmark harness (`python benchmarks/harness.py`): medcls's data pipeline and its own
training loop against the model alone, the raw decoder calls and a naive MONAI per-item pipeline,
on the same files in one process. Rounds interleave the things compared (machine noise hits both
alike) and ratios are medians of per-round ratios.

    .venv/bin/python benchmarks/harness.py --data ../shared/data/brain-tumour-mri --json bench.json
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from medcls.errors import DataError


@dataclass
class BenchSettings:
    data: str | None = None  # default: the config file's data, else the synthetic phantoms
    config: str | None = None  # a train config file: data, columns, window as for `medcls train`
    backbone: str = "efficientnet_lite0"
    image_size: int = 224
    batch_size: int = 32
    rounds: int = 3  # interleaved repetitions of every comparison
    steps: int = 3  # training steps per measurement
    limit: int = 256  # at most this many files
    compress: str | None = None  # re-encode DICOM inputs first: jpeg2000 or rle
    device: str = "auto"


def median(values) -> float:
    return float(statistics.median(values))


@contextmanager
def stopwatch(times: list):
    started = time.perf_counter()
    yield
    times.append(time.perf_counter() - started)


def files_for(settings: BenchSettings, registries, workdir: Path):
    """The cases to read, as files on disk: synthetic phantoms are written as PNG first, DICOM is
    re-encoded when `compress` asks for it."""
    from medcls.config import make_config, read_config_file
    from medcls.data.loading import load_cases

    given = read_config_file(settings.config) if settings.config else {}
    flags = {"image_size": settings.image_size, **({"data": settings.data} if settings.data else {})}
    config = make_config(given, flags, where=f"config file '{settings.config}'")
    cases, _, readers = load_cases(config, registries)
    cases = cases[:settings.limit]
    if cases[0].path is None:
        from PIL import Image

        for i, case in enumerate(cases):
            case.path = workdir / f"{i:05d}.png"
            Image.fromarray((case.array[0] * 255).round().astype(np.uint8)).save(case.path)
            case.array = None
    if settings.compress:
        cases = [compressed_copy(case, settings.compress, workdir) for case in cases]
    return cases, readers


def compressed_copy(case, syntax: str, workdir: Path):
    import pydicom
    from pydicom.uid import JPEG2000Lossless, RLELossless

    uid = {"jpeg2000": JPEG2000Lossless, "rle": RLELossless}.get(syntax)
    if uid is None:
        raise DataError(f"--compress {syntax!r}: choose jpeg2000 or rle")
    if case.path.suffix.lower() != ".dcm":
        raise DataError(f"--compress applies to DICOM inputs; '{case.path}' is not one")
    ds = pydicom.dcmread(case.path)
    ds.compress(uid)
    target = workdir / f"{syntax}-{case.path.name}"
    ds.save_as(target)
    case.path = target
    return case


def raw_read(path: Path):
    """The library call a reader wraps, and nothing else."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asanyarray(nib.load(str(path)).dataobj)
    if name.endswith(".dcm"):
        import pydicom

        return pydicom.dcmread(path).pixel_array
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


def reader_overhead(cases, readers, rounds: int) -> dict:
    """Per file: our reader (decode, modality LUT, window, to float) over the raw decoder call."""
    ratios, ours, raw = [], [], []
    for case in cases[:40]:
        a, b = [], []
        for _ in range(rounds):
            with stopwatch(a):
                raw_read(case.path)
            with stopwatch(b):
                readers.read(case)
        raw.append(median(a))
        ours.append(median(b))
        ratios.append(ours[-1] / raw[-1])
    return {"files": len(ratios), "raw_ms": 1000 * median(raw), "medcls_ms": 1000 * median(ours),
            "ratio": median(ratios), "target": "<= 1.10"}


def naive_monai_loader(paths: list[Path], size: int, batch_size: int, workers: int):
    """MONAI's documented per-item pipeline: LoadImaged + intensity scaling + resize in workers."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, Lambdad, LoadImaged, Resized, ScaleIntensityd

    transform = Compose([
        LoadImaged(keys="image", image_only=True),
        EnsureChannelFirstd(keys="image"),
        Lambdad(keys="image", func=first_channel),  # mixed grey/RGB/RGBA files must stack
        ScaleIntensityd(keys="image"),
        Resized(keys="image", spatial_size=(size, size)),
    ])
    return DataLoader(Dataset([{"image": str(p)} for p in paths], transform), batch_size=batch_size,
                      num_workers=workers, shuffle=True)


def naive_monai_epoch(paths: list[Path], size: int, batch_size: int, workers: int) -> float:
    loader = naive_monai_loader(paths, size, batch_size, workers)
    started = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - started)


def first_channel(image):
    return image[:1]


def loader_figures(cases, readers, settings: BenchSettings, workers: int) -> dict:
    """Images/s: our first epoch (hash + decode into a cold store), a later run (warm store),
    cached epochs (the training loader), against naive MONAI epochs."""
    import torch

    from medcls.data.decoding import decode_all
    from medcls.data.images import ImageStore
    from medcls.data.prepared import hash_all

    first, warm, cached, naive = [], [], [], []
    paths = [c.path for c in cases]
    for round_ in range(settings.rounds):
        with tempfile.TemporaryDirectory() as root:
            store = ImageStore(root, {"size": settings.image_size})
            started = time.perf_counter()
            cache = decode_all(cases, readers, settings.image_size, hashes=hash_all(cases), store=store)
            first.append(len(cases) / (time.perf_counter() - started))
            store.flush()  # in a run these writes overlap training; a later run finds them all
            started = time.perf_counter()
            decode_all(cases, readers, settings.image_size, hashes=hash_all(cases), store=store)
            warm.append(len(cases) / (time.perf_counter() - started))
        rows = torch.randperm(len(cache.kept)).numpy()
        started = time.perf_counter()
        for start in range(0, len(rows), settings.batch_size):
            cache.batch(rows[start:start + settings.batch_size])
        cached.append(len(rows) / (time.perf_counter() - started))
        naive.append(naive_monai_epoch(paths, settings.image_size, settings.batch_size, workers))
    return {
        "images": len(cases), "monai_workers": workers,
        "first_epoch_img_s": median(first), "warm_store_img_s": median(warm),
        "cached_epoch_img_s": median(cached), "naive_monai_img_s": median(naive),
        "cached_vs_naive": median(c / n for c, n in zip(cached, naive)),
        "first_vs_naive": median(f / n for f, n in zip(first, naive)),
        "cached_vs_first": median(c / f for c, f in zip(cached, first)),
        "targets": {"cached_vs_naive": ">= 10", "first_vs_naive": ">= 1.0",
                    "cached_vs_first": ">= 5 (compressed 2D DICOM)"},
    }


def training_loader(cache, policy, config):
    """The training loader `medcls train` builds, over every image of `cache` (labels alternate)."""
    import torch

    from medcls.core.loader import TrainingImages, make_loader

    rows = np.arange(len(cache.kept))
    labels = rows % 2
    return make_loader(TrainingImages(cache, rows, labels, policy), labels, config, 2, 0,
                       torch.Generator().manual_seed(0))


def first_epoch_figures(cases, readers, settings: BenchSettings, registries, device, workers: int,
                        channels: int) -> dict:
    """Seconds from nothing decoded (no store) to the end of the first training epoch: decoding
    while training, decoding everything first, and the naive MONAI loader feeding the same
    training step (its workers overlap decoding with training too). The default is the first on
    a GPU and the second on CPU, where decoder and model share the cores."""
    import torch

    from medcls.config import make_config
    from medcls.data.decoding import StartAgain, decode_all
    from medcls.core.execution import choose_execution
    from medcls.core.models import build_classifier
    from medcls.core.augment import make_policy

    config = make_config({"policy": "interpretable", "batch_size": settings.batch_size})
    policy, _ = make_policy(config, registries)
    model = build_classifier(registries, settings.backbone, 2, channels, 0.2, False, None)[0]
    execution = choose_execution(device, model)
    model = execution.prepare(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def epoch(cache) -> None:
        training_steps(model, optimizer, execution, training_loader(cache, policy, config), augment=policy.batch)

    def ours(background: bool) -> float:
        started = time.perf_counter()
        cache = decode_all(cases, readers, settings.image_size, background=background)
        if cache.channels != channels:  # a wrong guess from the first images: medcls train starts again
            cache.complete()
        try:
            epoch(cache)
        except StartAgain:  # found during the epoch: again on the full cache, as medcls train does
            cache.complete()
            epoch(cache)
        synchronise(device)
        seconds = time.perf_counter() - started
        cache.complete()
        return seconds

    def naive() -> float:
        started = time.perf_counter()
        batches = ((batch["image"].as_tensor().expand(-1, channels, -1, -1), torch.arange(len(batch["image"])) % 2)
                   for batch in naive_monai_loader([c.path for c in cases], settings.image_size, settings.batch_size,
                                                   workers))
        training_steps(model, optimizer, execution, batches, augment=policy.batch)
        synchronise(device)
        return time.perf_counter() - started

    while_training, first, monai = [], [], []
    training_steps(model, optimizer, execution, [(torch.rand(2, channels, settings.image_size, settings.image_size),
                                                   torch.tensor([0, 1]))])
    for _ in range(settings.rounds):
        while_training.append(ours(True))
        first.append(ours(False))
        monai.append(naive())
    default = while_training if device.type != "cpu" else first  # config decode_while_training=None
    return {
        "images": len(cases), "seconds_decode_while_training": median(while_training),
        "seconds_decode_first": median(first), "seconds_naive_monai": median(monai),
        "default": "decode while training" if default is while_training else "decode first",
        "while_training_vs_decode_first": median(b / a for a, b in zip(while_training, first)),
        "default_vs_naive": median(b / a for a, b in zip(default, monai)),
        "targets": {"default_vs_naive": ">= 1.0"},
    }


def training_steps(model, optimizer, execution, batches, augment=None):
    """Steps of medcls's own training loop (medcls.core.engine.train_one_epoch) over `batches`."""
    import torch

    from medcls.core.engine import train_one_epoch

    return train_one_epoch(model, batches, torch.nn.CrossEntropyLoss(), optimizer, execution, augment=augment)


class Timed:
    """An iterator that records how long each `next()` of the wrapped one waited (data wait)."""

    def __init__(self, iterator, waits: list):
        self.iterator, self.waits = iterator, waits

    def __iter__(self):
        return self

    def __next__(self):
        started = time.perf_counter()
        item = next(self.iterator)
        self.waits.append(time.perf_counter() - started)
        return item


def model_figures(settings: BenchSettings, registries, data_cache, device) -> dict:
    """Model-only training in three configurations, inference, end-to-end training from our
    loader with batched augmentation, and stage 1 on cached features: interleaved rounds. Every
    training figure runs medcls's own loop (train_one_epoch): on the same tensors again and again
    ("model only") or on the real loader and policy ("end to end"), so their ratio is the cost of
    the data pipeline in the loop `medcls train` runs."""
    import itertools

    import torch

    from medcls.config import make_config
    from medcls.core.augment import make_policy
    from medcls.core.execution import Execution, choose_execution
    from medcls.core.inference import Predictor
    from medcls.core.models import build_classifier

    channels, size, batch = data_cache.channels, settings.image_size, settings.batch_size

    def fresh_model():
        return build_classifier(registries, settings.backbone, 2, channels, 0.2, False, None)[0]

    first = fresh_model()
    default = choose_execution(device, first)
    executions = {"fp32_nchw": Execution(device), "fp32_channels_last": Execution(device, None, True),
                  "default": default}
    x = torch.rand(batch, channels, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)
    # End to end: the training loader and batched policy exactly as `medcls train` uses them.
    config = make_config({"policy": "interpretable", "batch_size": batch})
    policy, _ = make_policy(config, registries)
    waits, busy = [], []
    batches = Timed(endless(training_loader(data_cache, policy, config)), waits)
    times: dict[str, list] = {}
    models = {}
    for name, execution in executions.items():
        m = first if name == "fp32_nchw" else fresh_model()  # the model that chose the default is used too
        models[name] = (execution.prepare(m), torch.optim.AdamW(m.parameters(), lr=1e-4))
        training_steps(*models[name], execution, [(x, y)])  # warm up kernels and allocator

    def timed(name, fn, images):
        started = time.perf_counter()
        fn()
        synchronise(device)
        times.setdefault(name, []).append(images * settings.steps / (time.perf_counter() - started))

    m, opt = models["default"]
    scorer = Predictor(m, default, batch_size=batch)  # medcls's one inference path

    def from_loader():
        training_steps(m, opt, default, itertools.islice(batches, settings.steps), augment=policy.batch)

    for _ in range(settings.rounds):
        for name, execution in executions.items():
            model, optimizer = models[name]
            timed(name, lambda: training_steps(model, optimizer, execution, [(x, y)] * settings.steps), batch)
        waits.clear()
        timed("end_to_end", from_loader, batch)
        timed("inference", lambda: [scorer.probabilities(x, calibrated=False) for _ in range(settings.steps)], batch)
        m.train()
        stage1_round(m, default, x, y, timed, settings.steps)
    round_waits = list(waits)
    with gpu_busy(device, busy):  # after the timed rounds: the profiler slows the CPU side a little
        from_loader()
    step_seconds = batch / median(times["end_to_end"])
    figures = {name: median(v) for name, v in times.items()}
    return {
        "execution_default": default.describe(), "img_s": figures,
        "default_vs_fp32_nchw": median(a / b for a, b in zip(times["default"], times["fp32_nchw"])),
        "default_vs_fp32_channels_last": median(a / b for a, b in zip(times["default"], times["fp32_channels_last"])),
        "end_to_end_vs_model": median(a / b for a, b in zip(times["end_to_end"], times["default"])),
        "data_wait_fraction": median(round_waits) / step_seconds,
        "gpu_busy_fraction": median(busy) if busy else None,
        "stage1_features_vs_backbone": median(a / b for a, b in zip(times["stage1_features"], times["stage1_backbone"])),
        "targets": {"default_vs_fp32_nchw": ">= 1.3", "default_vs_fp32_channels_last": ">= 1.0",
                    "end_to_end_vs_model": ">= 0.95", "stage1_features_vs_backbone": ">= 10"},
    }


def endless(loader):
    while True:
        yield from loader


def stage1_round(model, execution, x, y, timed, steps: int) -> None:
    """Frozen backbone each step against the head on features computed once."""
    import torch

    model.set_trainable(0)
    head_optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3)
    with torch.no_grad(), execution.autocast():
        features = model.features(execution.inputs(x)).float()

    def backbone_step():
        with torch.no_grad(), execution.autocast():
            f = model.features(execution.inputs(x)).float()
        head_step(f)

    def head_step(f):
        loss = torch.nn.functional.cross_entropy(model.head(f), y)
        head_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        head_optimizer.step()

    timed("stage1_backbone", lambda: [backbone_step() for _ in range(steps)], len(x))
    timed("stage1_features", lambda: [head_step(features) for _ in range(steps)], len(x))
    model.set_trainable(-1)


@contextmanager
def gpu_busy(device, fractions: list):
    """On CUDA: the share of the block's wall time the GPU spent running kernels, from the
    profiler's kernel timings (a GPU starved by the data pipeline shows a low share)."""
    if device.type != "cuda":
        yield
        return
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        started = time.perf_counter()
        yield
        torch.cuda.synchronize(device)
        wall_us = (time.perf_counter() - started) * 1e6
    kernels_us = sum(event.self_device_time_total for event in profiler.key_averages())
    fractions.append(min(1.0, kernels_us / wall_us))


def synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(settings: BenchSettings, registries, log=lambda message: None) -> dict:
    import torch

    from medcls.data.decoding import decode_all
    from medcls.core.execution import available_cores, tune_process
    from medcls.core.execution import resolve_device

    device = resolve_device(settings.device)
    tune_process(0)
    with tempfile.TemporaryDirectory() as workdir:
        cases, readers = files_for(settings, registries, Path(workdir))
        log(f"bench: {len(cases)} files, {settings.backbone} at {settings.image_size} px, "
            f"batch {settings.batch_size}, {settings.rounds} interleaved rounds, on {device}")
        results = {"settings": asdict(settings), "machine": machine(device)}
        results["reader"] = reader_overhead(cases, readers, settings.rounds)
        log(f"reader: {results['reader']['ratio']:.2f}x the raw decoder call")
        results["loader"] = loader_figures(cases, readers, settings, workers=available_cores())
        log(f"loader: cached epochs {results['loader']['cached_vs_naive']:.1f}x naive MONAI")
        cache = decode_all(cases, readers, settings.image_size)
        torch.manual_seed(0)
        results["model"] = model_figures(settings, registries, cache, device)
        readable = [cases[i] for i in cache.kept]
        results["first_epoch"] = first_epoch_figures(readable, readers, settings, registries, device,
                                                     workers=available_cores(), channels=cache.channels)
        log(f"first training epoch: {results['first_epoch']['default_vs_naive']:.2f}x naive MONAI")
    return results


def machine(device) -> dict:
    import monai
    import timm
    import torch

    from medcls.version import __version__
    from medcls.core.execution import available_cores

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": available_cores(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "timm": timm.__version__, "monai": monai.__version__,
            "medcls": __version__}


def table(results: dict) -> list[str]:
    """The figures a reader checks against the targets, one line each."""
    loader, model, reader, first = results["loader"], results["model"], results["reader"], results["first_epoch"]
    rows = [
        ("reader / raw decoder call", reader["ratio"], "<= 1.10"),
        ("loader cached epoch / naive MONAI", loader["cached_vs_naive"], ">= 10"),
        ("loader first epoch / naive MONAI", loader["first_vs_naive"], ">= 1.0"),
        ("loader cached / first epoch", loader["cached_vs_first"], ">= 5 (compressed DICOM)"),
        (f"first training epoch ({first['default']}) / naive MONAI", first["default_vs_naive"], ">= 1.0"),
        ("decoding while training / decoding first", first["while_training_vs_decode_first"], "(overlap)"),
        ("end-to-end training / model only", model["end_to_end_vs_model"], ">= 0.95"),
        ("data wait, fraction of a step", model["data_wait_fraction"], "<= 0.05"),
        *([("GPU busy, fraction of wall time", model["gpu_busy_fraction"], ">= 0.90")]
          if model.get("gpu_busy_fraction") is not None else []),
        ("stage 1 cached features / frozen backbone", model["stage1_features_vs_backbone"], ">= 10"),
        (f"default ({model['execution_default']}) / fp32 NCHW", model["default_vs_fp32_nchw"], ">= 1.3"),
        ("default / fp32 channels_last", model["default_vs_fp32_channels_last"], ">= 1.0"),
    ]
    lines = [f"{'measure':<60} {'median':>9}  target"]
    lines += [f"{name:<60} {value:>9.2f}  {target}" for name, value, target in rows]
    speeds = ", ".join(f"{k} {v:.1f}" for k, v in model["img_s"].items())
    lines.append(f"img/s: {speeds}; loader first {loader['first_epoch_img_s']:.0f}, warm store "
                 f"{loader['warm_store_img_s']:.0f}, cached {loader['cached_epoch_img_s']:.0f}, naive MONAI "
                 f"{loader['naive_monai_img_s']:.0f}")
    return lines


@click.command()
@click.option("--data", help="Files to read, as for train (default: synthetic phantoms, written as PNG).")
@click.option("--config", type=click.Path(dir_okay=False), help="A train config file for the data keys.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True, help="Interleaved repetitions.")
@click.option("--steps", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Training steps per measurement.")
@click.option("--limit", type=click.IntRange(1), default=256, show_default=True, help="At most this many files.")
@click.option("--compress", type=click.Choice(["jpeg2000", "rle"]), help="Re-encode DICOM inputs first.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write every figure here.")
def bench(json_out, **options):
    """Measure the pipeline against the model alone, raw decoders and naive MONAI, side by side."""
    import json

    from medcls.api import make_registries
    from medcls.errors import MedclsError

    try:
        results = run_bench(BenchSettings(**options), make_registries(), log=lambda m: click.echo(m, err=True))
    except MedclsError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    for line in table(results):
        click.echo(line)
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2), encoding="utf-8")
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    bench(prog_name="benchmarks/harness.py")
