"""A run folder: the model (safetensors + JSON), history, splits and manifest; loading a model back."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from medcls.core.models import Ensemble, build_classifier
from medcls.errors import DataError, PluginError, UnknownNameError

if TYPE_CHECKING:
    from medcls.config import TrainConfig
    from medcls.data.prepared import PreparedData

MODEL_FILE, MODEL_INFO = "model.safetensors", "model.json"
HF_MARKER = "medcls"  # the key of a Hugging Face folder's config.json that holds medcls's model.json


REQUIRED_INFO = ("backbone", "classes", "in_chans", "image_size", "dropout")
# model.json's other fields and what an absent one means, in one place (older runs lack newer fields).
INFO_DEFAULTS = {
    "multi_label": None, "threshold": None, "threshold_rule": None, "temperature": None, "positive_class": None,
    "conformal": None, "tasks": None, "task_weighting": "fixed", "spatial_dims": 2, "slices": 0,
    "slice_pooling": "mean", "acs": None, "input_shape": None, "volume_size": None, "volume_spacing": None,
    "window": None, "interpolation": "bilinear", "crop_foreground": None, "exif": None, "preprocessing": None,
    "normalisation": None, "backbone_args": None, "ensemble": None, "plugins": None, "classifier": None,
    "target": None, "uncertain": None, "blank_findings": None, "weights_origin": None, "weights_sha256": None,
}


class RunInfo(dict):
    """model.json as read: the fields by attribute (`info.spatial_dims`), each absent field's meaning
    from INFO_DEFAULTS, a required one missing a KeyError. Still the dict medcls wrote, so it is
    written back, hashed and compared unchanged; nothing outside this module reads it by key."""

    def __getattr__(self, name: str):
        if name in REQUIRED_INFO:
            return self[name]
        if name in INFO_DEFAULTS:
            return self.get(name, INFO_DEFAULTS[name])
        raise AttributeError(f"model.json has no field {name!r}")
INFO_HASH = "info_sha256"  # model.json's own SHA-256 (of its other fields): an edited file is named, never used


def info_digest(info: dict) -> str:
    """SHA-256 of model.json's fields other than its own hash, in one canonical JSON form."""
    canonical = json.dumps({k: v for k, v in info.items() if k != INFO_HASH}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_info_fields(info: dict, where: Path) -> None:
    """Every field a prediction depends on, of the type and in the range medcls wrote it: a run
    folder is data from outside (a class list reversed by hand would invert every decision)."""
    def fail(problem: str):
        raise DataError(f"'{where}': {problem}: the file is damaged or was edited; restore the run's own file")

    classes = info["classes"]
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        fail("classes must list at least two class names")
    if len(set(classes)) != len(classes):
        fail(f"classes {classes} name a class twice")
    if info["in_chans"] not in (1, 3):
        fail(f"in_chans {info['in_chans']!r} is not 1 or 3")
    if not isinstance(info["dropout"], (int, float)) or not 0 <= info["dropout"] < 1:
        fail(f"dropout {info['dropout']!r} is not in [0, 1)")
    thresholds = info.get("threshold")
    for t in thresholds if isinstance(thresholds, list) else [thresholds]:
        if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1):
            fail(f"threshold {t!r} is not a probability in [0, 1]")
    temperature = info.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf")):
        fail(f"temperature {temperature!r} is not a positive number")
    positive = info.get("positive_class")
    if positive is not None and positive not in classes:
        fail(f"positive_class {positive!r} is not one of the classes {classes}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model, info: dict, out: Path) -> None:
    """Weights as safetensors (the backbone named in its header) and model.json, which records the
    weights' SHA-256 so that a damaged or swapped file is refused on load."""
    from safetensors.torch import save_model as save_safetensors

    save_safetensors(model, str(out / MODEL_FILE), metadata={"format": "medcls", "backbone": info["backbone"]})
    info = {**info, "weights_sha256": file_sha256(out / MODEL_FILE)}
    info[INFO_HASH] = info_digest(info)
    (out / MODEL_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")


def hf_info(run: Path) -> dict | None:
    """medcls's model.json kept in a Hugging Face folder's config.json (`medcls export --format hf`),
    or None when `run` is not such a folder."""
    config = run / "config.json"
    if (run / MODEL_INFO).is_file() or not config.is_file():
        return None
    try:
        found = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    info = found.get(HF_MARKER) if isinstance(found, dict) else None
    return info if isinstance(info, dict) and all(key in info for key in REQUIRED_INFO) else None


def hf_state(run: Path, info: dict) -> dict:
    """medcls's state dict from a Hugging Face folder's timm-layout weights."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(run / MODEL_FILE))
    prefix = info["classifier"]
    state = {f"backbone.{k}": v for k, v in tensors.items() if not k.startswith(f"{prefix}.")}
    state["head.1.weight"], state["head.1.bias"] = tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]
    shape = (1, -1, 1, 1)
    for key in ("mean", "std"):
        state[key] = torch.tensor(info["normalisation"][key], dtype=torch.float32).view(shape)
    return state


def missing_model_fix(run: Path) -> str:
    """What to give instead of a folder without a model: one of the runs inside it (a
    cross-validation's folds), or the interrupted run resumed."""
    if (run / "checkpoint.safetensors").is_file():
        return f"its training was interrupted: finish it with `medcls train --resume {run}`"
    inside = sorted(p.name for p in run.iterdir() if (p / MODEL_FILE).is_file()) if run.is_dir() else []
    if inside:
        return (f"it holds {len(inside)} runs ({', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''}), e.g. "
                f"a cross-validation's folds: give one of them, such as '{run / inside[0]}'")
    return "give the --out folder of `medcls train`"


def read_model_info(run: Path) -> RunInfo:
    """model.json checked: present, JSON, with the keys a model is rebuilt from, and consistent
    with the weights file it describes (backbone in the safetensors header, content hash)."""
    from safetensors import safe_open

    shared = hf_info(run)
    if shared is not None and (run / MODEL_FILE).is_file():
        check_info_fields(shared, run / "config.json")
        return RunInfo({k: v for k, v in shared.items() if k not in ("weights_sha256", INFO_HASH)})
    if not (run / MODEL_FILE).is_file() or not (run / MODEL_INFO).is_file():
        raise DataError(f"run folder '{run}' has no {MODEL_FILE} and {MODEL_INFO}: {missing_model_fix(run)}")
    try:
        info = json.loads((run / MODEL_INFO).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"'{run / MODEL_INFO}' is not valid JSON ({exc}): restore it from the run's backup") from None
    missing = [key for key in REQUIRED_INFO if key not in info] if isinstance(info, dict) else list(REQUIRED_INFO)
    if missing:
        raise DataError(f"'{run / MODEL_INFO}' lacks {', '.join(missing)}: the file is damaged or not medcls's")
    if INFO_HASH not in info or "weights_sha256" not in info:
        raise DataError(f"'{run / MODEL_INFO}' has no {INFO_HASH if INFO_HASH not in info else 'weights_sha256'}: it "
                        "was edited, or written by a medcls before 2026-12-07; retrain, or restore the run's own file")
    if info_digest(info) != info[INFO_HASH]:
        raise DataError(f"'{run / MODEL_INFO}' was edited after the run wrote it (its fields no longer match its "
                        f"{INFO_HASH}): restore the run's own file; a new operating point is chosen with "
                        "`medcls score` or by training again, never by editing model.json")
    check_info_fields(info, run / MODEL_INFO)  # a forged hash still cannot bring in a value medcls never writes
    expected = info["weights_sha256"]
    if file_sha256(run / MODEL_FILE) != expected:
        raise DataError(f"'{run / MODEL_FILE}' is not the file this run wrote (its SHA-256 differs from "
                        f"{MODEL_INFO}): restore it; never load weights of unknown origin")
    try:
        with safe_open(str(run / MODEL_FILE), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:  # truncated, empty or not a safetensors file
        raise DataError(f"'{run / MODEL_FILE}' cannot be read as safetensors ({str(exc)[:120]}): restore it") from None
    if header.get("backbone") not in (None, info["backbone"]):
        raise DataError(f"'{run / MODEL_INFO}' names backbone {info['backbone']!r} but the weights were saved from "
                        f"{header['backbone']!r}: the two files do not belong together")
    return RunInfo(info)


def load_model(run: str | Path, registries, device="cpu"):
    """The classifier of a finished run (weights never unpickled) and its model.json, both checked."""
    from safetensors.torch import load_model as load_safetensors

    run = Path(run)
    info = read_model_info(run)

    def classifier(backbone=info["backbone"]):
        try:
            outputs = len(info["classes"]) + sum(1 if t["kind"] == "regression" else len(t["classes"])
                                                  for t in info.get("tasks") or [])
            return build_classifier(registries, backbone, outputs, info["in_chans"],
                                    info["dropout"], pretrained=False, slices=info.get("slices", 0),
                                    slice_pooling=info.get("slice_pooling", "mean"),
                                    backbone_args=info.get("backbone_args") or None,
                                    input_shape=info.get("input_shape"), acs=bool(info.get("acs")))[0]
        except UnknownNameError:
            origin = (info.get("plugins") or {}).get("backbone") or {}
            if origin.get("distribution") not in (None, "medcls"):
                raise PluginError(
                    f"run '{run}' was trained with backbone {backbone!r} from plugin {origin['plugin']!r} of "
                    f"distribution {origin['distribution']!r} {origin['version']}, which is not installed: "
                    f"pip install '{origin['distribution']}=={origin['version']}'") from None
            raise

    if info.get("ensemble"):
        backbones = info["ensemble"].get("backbones") or [info["backbone"]] * info["ensemble"]["members"]
        model = Ensemble([classifier(name) for name in backbones], multi_label=bool(info.get("multi_label")))
    else:
        model = classifier()
    try:
        if "classifier" in info and hf_info(run) is not None:  # a Hugging Face folder: timm's layout
            model.load_state_dict(hf_state(run, info))
        else:
            load_safetensors(model, str(run / MODEL_FILE), device=str(device))
    except (RuntimeError, ValueError, KeyError) as exc:  # shapes or names that do not fit model.json
        first = str(exc).strip().splitlines()[0][:160]
        raise DataError(f"'{run / MODEL_FILE}' does not fit the model '{run / MODEL_INFO}' describes ({first}): "
                        "the two files do not belong together") from None
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
    the stored operating point, so that every figure can be recomputed with other tools. Probabilities are written as the
    shortest text that reads back to the same float (repr), so a case at the threshold stays on its side."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "split", "label", *[f"p_{c}" for c in classes], "decision"])
        for split, (keys, labels, probs) in by_split.items():
            for key, label, p, decided in zip(keys, labels, probs, decide(probs)):
                writer.writerow([key, split, classes[int(label)], *[repr(float(v)) for v in p], classes[int(decided)]])


def write_finding_predictions(path: Path, findings: list[str], by_split: dict, decide) -> None:
    """Multi-label: one row per case and split with, per finding, its target (1, 0, or blank when
    ignored), its probability and the decision at the finding's operating point."""
    import math

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "split", *[f"y_{f}" for f in findings], *[f"p_{f}" for f in findings],
                         *[f"decision_{f}" for f in findings]])
        for split, (keys, targets, probs) in by_split.items():
            for key, target, p, decided in zip(keys, targets, probs, decide(probs)):
                writer.writerow([key, split, *["" if math.isnan(v) else str(int(v)) for v in target],
                                 *[repr(float(v)) for v in p], *[str(int(d)) for d in decided]])


def write_task_predictions(path: Path, tasks: list, by_split: dict) -> None:
    """Multi-task: per case and split, each auxiliary head's target (blank when unknown) and
    output (a value, or the probability of each class)."""
    import math

    header = ["key", "split"]
    for task in tasks:
        header += [f"y_{task.name}"] + ([f"pred_{task.name}"] if task.kind == "regression" else
                                        [f"p_{task.name}_{c}" for c in task.classes])
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for split, (keys, targets, outputs) in by_split.items():
            for i, key in enumerate(keys):
                row = [key, split]
                for j, task in enumerate(tasks):
                    target = targets[i, j]
                    row.append("" if math.isnan(target) else (f"{target:.8g}" if task.kind == "regression"
                                                              else task.classes[int(target)]))
                    out = outputs[task.name][i]
                    row += [repr(float(out))] if task.kind == "regression" else [repr(float(v)) for v in out]
                writer.writerow(row)


def write_splits(data: PreparedData, path: Path) -> None:
    """Which split each image went to, with its content hash and its patient group: images of one
    patient share a group number (numbered in order of first appearance; an image without a patient
    id is a group of its own), so the run's own predictions can be compared over patients later.
    Patient identifiers are not written."""
    readable = set(data.cache.kept.tolist())
    groups: dict = {}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "label", "split", "sha256", "status", "group"])
        for i, case in enumerate(data.cases):
            group = groups.setdefault(("patient", case.patient_id) if case.patient_id is not None else ("image", i),
                                      len(groups) + 1)
            writer.writerow([case.key, case.label, data.splits[i], data.hashes[i],
                             "used" if i in readable else "skipped", group])


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
