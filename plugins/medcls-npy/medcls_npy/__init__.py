"""medcls-npy: a plugin with all six hooks. It reads NumPy images listed in a JSON-lines manifest
and brings a backbone with its own weights, a policy and a metric (docs/guide.md walks through it)."""

import json
from pathlib import Path

import numpy as np

import medcls
from medcls.data.cases import Case


def small_cnn(in_chans: int, width: int = 16):
    """Backbone contract: (B, C, H, W) normalised floats -> (B, num_features). torch is imported
    here, not at the top: medcls loads every plugin for `medcls plugins`, which stays light."""
    from collections import OrderedDict

    from torch import nn

    model = nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(in_chans, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU()),
        body=nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU()),
        pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))
    model.num_features = 2 * width
    return model


WEIGHTS = Path.home() / ".cache" / "medcls_npy" / "small_cnn.safetensors"


def small_cnn_weights(backbone: str):
    """Weight source: None for names it does not serve, else a state dict or a .safetensors path."""
    if backbone != "small_cnn":
        return None
    if not WEIGHTS.is_file():
        raise medcls.WeightsUnavailableError(f"'{WEIGHTS}' is missing: copy the released weights there")
    return str(WEIGHTS)


class Invert:
    """Policy contract: (C, H, W) float32 in [0, 1] -> the same shape, dtype and range; random draws
    from its own generator, seeded by the run (`set_random_state`), so a run repeats."""

    def __init__(self, prob: float = 0.5):
        self.prob = prob
        self.generator = np.random.default_rng(0)

    def set_random_state(self, seed=None):
        self.generator = np.random.default_rng(seed)
        return self

    def __call__(self, image):
        return 1.0 - image if self.generator.random() < self.prob else image


def f2_score(y_true, probs, y_pred):
    """Metric contract: a float for the split, NaN when undefined. Recall weighs 4x precision."""
    tp = float(((y_pred == 1) & (y_true == 1)).sum())
    fp, fn = float(((y_pred == 1) & (y_true == 0)).sum()), float(((y_pred == 0) & (y_true == 1)).sum())
    return 5 * tp / (5 * tp + 4 * fn + fp) if tp + fn + fp else float("nan")


def read_npy(path: Path):
    """Reader contract: float32 (C, H, W) in [0, 1]; DataError for a file it cannot use."""
    image = np.load(path, allow_pickle=False).astype(np.float32)
    if image.ndim != 2:
        raise medcls.DataError(f"file '{path}' holds shape {image.shape}, not a 2D image: save one slice per file")
    low, high = image.min(), image.max()
    return ((image - low) / (high - low) if high > low else np.zeros_like(image))[None]


def load_jsonl(source: str, options):
    """Layout contract: a list of Case (key and label required; patient_id keeps patients together)."""
    root = Path(source).parent
    rows = [json.loads(line) for line in Path(source).read_text().splitlines() if line.strip()]
    return [Case(key=row["file"], label=str(row["finding"]), path=root / row["file"],
                 patient_id=row.get("patient"), split=row.get("split"),
                 attributes={k: v for k, v in row.items() if k not in ("file", "finding", "patient", "split")})
            for row in rows]


@medcls.hookimpl
def medcls_register_backbones(register):
    register("small_cnn", small_cnn, description="Two-block CNN", blocks=lambda m: [m.stem, m.body])


@medcls.hookimpl
def medcls_register_weight_sources(register):
    register("small_cnn_release", small_cnn_weights, description="small_cnn weights v1", offline=True,
             available=lambda: ["small_cnn"] if WEIGHTS.is_file() else [])


@medcls.hookimpl
def medcls_register_policies(register):
    register("invert", Invert, description="Inverts contrast", params={"prob": 0.5},
             flips_lr=lambda params: False)


@medcls.hookimpl
def medcls_register_metrics(register):
    register("f2_score", f2_score, description="F2: recall-weighted F score", needs_threshold=True)


@medcls.hookimpl
def medcls_register_readers(register):
    register("npy", read_npy, description="NumPy 2D arrays", extensions=(".npy",))


@medcls.hookimpl
def medcls_register_datasets(register):
    register("jsonl", load_jsonl, description="JSON-lines manifest: file, finding, patient",
             detect=lambda source: source.endswith(".jsonl"))
