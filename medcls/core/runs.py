"""A run folder: the model (safetensors + JSON), history, splits and manifest; loading a model back."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from medcls.core.models import Ensemble, build_classifier
from medcls.errors import DataError

if TYPE_CHECKING:
    from medcls.config import TrainConfig
    from medcls.data.prepared import PreparedData

MODEL_FILE, MODEL_INFO = "model.safetensors", "model.json"


def save_model(model, info: dict, out: Path) -> None:
    from safetensors.torch import save_model as save_safetensors

    save_safetensors(model, str(out / MODEL_FILE), metadata={"format": "medcls", "backbone": info["backbone"]})
    (out / MODEL_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")


def load_model(run: str | Path, registries, device="cpu"):
    """The classifier of a finished run (weights never unpickled) and its model.json."""
    from safetensors.torch import load_model as load_safetensors

    run = Path(run)
    if not (run / MODEL_FILE).is_file() or not (run / MODEL_INFO).is_file():
        raise DataError(f"run folder '{run}' has no {MODEL_FILE} and {MODEL_INFO}: give the --out folder of `medcls train`")
    info = json.loads((run / MODEL_INFO).read_text(encoding="utf-8"))
    def classifier(backbone=info["backbone"]):
        return build_classifier(registries, backbone, len(info["classes"]), info["in_chans"],
                                info["dropout"], pretrained=False, slices=info.get("slices", 0),
                                slice_pooling=info.get("slice_pooling", "mean"))[0]

    if info.get("ensemble"):
        backbones = info["ensemble"].get("backbones") or [info["backbone"]] * info["ensemble"]["members"]
        model = Ensemble([classifier(name) for name in backbones])
    else:
        model = classifier()
    load_safetensors(model, str(run / MODEL_FILE), device=str(device))
    return model.to(device).eval(), info


def write_history(history, path: Path) -> None:
    metric_names = sorted({k for h in history for k in h.val_metrics if k not in ("n", "loss", "metric_errors")})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "stage", "lr", "train_loss", "train_roc_auc", "val_loss",
                         *[f"val_{m}" for m in metric_names], "seconds"])
        for h in history:
            writer.writerow([h.epoch, h.stage, f"{h.lr:.6g}", f"{h.train_loss:.6f}", f"{h.train_auc:.6f}",
                             f"{h.val_loss:.6f}", *[f"{h.val_metrics.get(m, float('nan')):.6f}" for m in metric_names],
                             f"{h.seconds:.2f}"])


def write_predictions(path: Path, classes: list[str], by_split: dict, decide) -> None:
    """One row per case and split: key, split, label, a probability per class and the decision at
    the stored operating point, so that every figure can be recomputed with other tools."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "split", "label", *[f"p_{c}" for c in classes], "decision"])
        for split, (keys, labels, probs) in by_split.items():
            for key, label, p, decided in zip(keys, labels, probs, decide(probs)):
                writer.writerow([key, split, classes[int(label)], *[f"{v:.8g}" for v in p], classes[int(decided)]])


def write_splits(data: PreparedData, path: Path) -> None:
    """Which split each image went to, with its content hash; patient identifiers are not written."""
    readable = set(data.cache.kept.tolist())
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "label", "split", "sha256", "status"])
        for i, case in enumerate(data.cases):
            writer.writerow([case.key, case.label, data.splits[i], data.hashes[i],
                             "used" if i in readable else "skipped"])


def run_manifest(config: TrainConfig, data: PreparedData) -> dict:
    """Versions, commit, seed and data hashes: enough to tell whether two runs used the same data."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("medcls", "torch", "torchvision", "timm", "monai", "pydicom", "nibabel", "numpy",
                    "scikit-learn", "pylibjpeg", "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None

    def membership(split: str | None) -> str:
        chosen = sorted(h for h, s in zip(data.hashes, data.splits) if split is None or s == split)
        return hashlib.sha256("\n".join(chosen).encode()).hexdigest()

    return {
        "versions": versions, "medcls_commit": git_commit(), "seed": config.seed,
        "deterministic": config.deterministic, "data": config.data, "format": data.format_name,
        "data_sha256": membership(None),
        "split_sha256": {s: membership(s) for s in ("train", "val", "test")},
        "images": len(data.cases), "skipped": [key for key, _ in data.cache.failures],
    }


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
