"""`medcls export`: a run's model as ONNX or TorchScript that takes preprocessed images and returns
class probabilities, with the preprocessing, classes and operating point in a JSON beside it.
The ONNX file is checked against PyTorch with ONNX Runtime before it is kept."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medcls.core.inference import run_predictor
from medcls.core.runs import RunInfo, load_model
from medcls.data.volumes import parse_triple
from medcls.errors import ConfigError, DataError
from medcls.folders import claim_folder, removed_if_left_empty, reserve_folder
from medcls.logs import stage
from medcls.workflows.bundle import export_bundle
from medcls.workflows.sharing import export_hf

FORMATS = ("onnx", "torchscript", "hf", "monai-bundle")
TOLERANCE = 1e-4


class Deployable(nn.Module):
    """Images in [0, 1] -> class probabilities (temperature-scaled when the run calibrated), or for
    multi-label runs a sigmoid probability per finding."""

    def __init__(self, model: nn.Module, temperature: float | None, multi_label: bool = False,
                 n_classes: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature or 1.0)
        self.multi_label = multi_label
        self.n_classes = n_classes  # multi-task runs: the main task's outputs only

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images).float()
        if self.n_classes is not None:
            logits = logits[:, :self.n_classes]
        return logits.sigmoid() if self.multi_label else (logits / self.temperature).softmax(dim=1)


def example_input(info: RunInfo, batch: int = 2) -> torch.Tensor:
    if int(info.spatial_dims) == 3:

        shape = parse_triple(info.volume_size, "volume_size", int)
    else:
        shape = (info.image_size, info.image_size)
    return torch.rand(batch, info.in_chans, *shape, generator=torch.Generator().manual_seed(0))


@dataclass
class Exported:
    """An exported model: the file, its description (export.json) and the largest difference
    between the exported model's probabilities and medcls's own on the check batch."""

    path: str
    json: str
    max_abs_difference: float


def export_run(run, registries, fmt: str, out: str | Path | None = None) -> Exported:
    """Write `model.onnx` or `model.ts` and `export.json` into `out` (default RUN/onnx or
    RUN/torchscript: one folder per format, so each export.json describes its own file), or for `hf`
    a Hugging Face-style folder (default RUN/hf), or a MONAI bundle (default RUN/monai-bundle)."""
    with stage(f"export of '{run}' as {fmt}, checked against medcls's probabilities"):
        return export_as(run, registries, fmt, out)


def export_as(run, registries, fmt: str, out: str | Path | None = None) -> Exported:
    model, info = load_model(run, registries)
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    # A new folder claimed before anything is written (default RUN/<format>, then RUN/<format>-2, ...),
    # never another run's folder or a folder with files in it; removed again if the export fails.
    folder = claim_folder(out, by="medcls export") if out else reserve_folder(Path(run) / fmt)
    with removed_if_left_empty(folder):
        return export_into(model, info, run, registries, fmt, folder)


def export_into(model, info: RunInfo, run, registries, fmt: str, folder: Path) -> Exported:
    if fmt == "hf" and info.tasks:
        raise ConfigError(f"run '{run}' has auxiliary heads (tasks), which a timm-style folder cannot hold: export "
                          "it as onnx or torchscript (the main task's probabilities)")
    if fmt == "monai-bundle":
        check = torch.round(example_input(info) * 65535.0) / 65535.0  # on the image cache's 16-bit grid
        expected = run_predictor(model.float().cpu().eval(), info, device="cpu", precision="fp32").probabilities(check)
        difference = export_bundle(model, info, folder, run=Path(run), check_batch=check,
                                   expected=torch.as_tensor(expected, dtype=torch.float32), tolerance=TOLERANCE)
        return Exported(str(folder / "models" / "model.ts"), str(folder / "configs" / "metadata.json"), difference)
    if fmt == "hf":
        difference = export_hf(model, info, folder, run=Path(run), registries=registries,
                               check_batch=example_input(info), tolerance=TOLERANCE)
        return Exported(str(folder / "model.safetensors"), str(folder / "config.json"), difference)
    return export_model(model, info, fmt, folder, run=run)


def export_model(model: nn.Module, info: RunInfo, fmt: str, out: Path, *, run=None) -> Exported:
    """The exported model is kept only if it gives the probabilities medcls's own inference path
    gives (medcls.core.inference, temperature included) on a check batch, within TOLERANCE."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    deployable = Deployable(model, info.temperature, bool(info.multi_label),
                            len(info.classes) if info.tasks else None).eval()
    example = example_input(info)
    expected = run_predictor(model, info, device="cpu", precision="fp32").probabilities(example)
    with warnings.catch_warnings():  # tracer chatter; the result is checked numerically below
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            path, difference = export_onnx(deployable, example, expected, out / "model.onnx")
        else:
            path, difference = export_torchscript(deployable, example, expected, out / "model.ts")
    description = {
        "file": path.name, "format": fmt, "classes": info.classes, "positive_class": info.positive_class,
        "threshold": info.threshold, "threshold_rule": info.threshold_rule,
        "input": {"name": "images", "shape": ["batch", *example.shape[1:]], "dtype": "float32", "range": [0, 1]},
        "output": {"name": "probabilities", "shape": ["batch", len(info.classes)]},
        "preprocessing": info.preprocessing, "window": info.window,
        "image_size": info.image_size, "crop_foreground": bool(info.crop_foreground),
        "volume_size": info.volume_size,
        "volume_spacing": info.volume_spacing, "slices": info.slices,
        "multi_label": bool(info.multi_label),
        "decision": "multi-label: each finding present when its probability >= its threshold (threshold lists "
                    "one per class, in order)" if info.multi_label else
                    "binary: positive when probability of positive_class >= threshold; otherwise the arg-max class",
        "interpolation": info.interpolation, "in_chans": info.in_chans,
        "max_abs_difference_vs_pytorch": difference,
        # which run, without the machine's path: its folder name and the SHA-256 of its weights
        "run": None if run is None else Path(run).resolve().name, "weights_sha256": info.weights_sha256,
    }
    (out / "export.json").write_text(json.dumps(description, indent=2), encoding="utf-8")
    return Exported(str(path), str(out / "export.json"), difference)


def export_onnx(deployable, example, expected, path: Path):
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError('ONNX export needs onnx and onnxruntime: pip install "medcls[export]"') from None
    try:
        torch.onnx.export(deployable, (example,), str(path), input_names=["images"], output_names=["probabilities"],
                          dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    except Exception as exc:  # an operator the exporter does not support
        first = str(exc).strip().splitlines()[0][:200]
        raise DataError(f"ONNX export of this model failed ({first}): try --format torchscript") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"images": example.numpy()})[0]
    return path, checked(got, expected, path)


def export_torchscript(deployable, example, expected, path: Path):
    with torch.no_grad():
        traced = torch.jit.trace(deployable, example)
    traced.save(str(path))
    got = torch.jit.load(str(path))(example).detach().numpy()
    return path, checked(got, expected, path)


def checked(got: np.ndarray, expected: np.ndarray, path: Path) -> float:
    difference = float(np.abs(got - expected).max())
    if difference > TOLERANCE:
        path.unlink(missing_ok=True)
        raise DataError(f"exported '{path}' differs from PyTorch by {difference:.2e} (> {TOLERANCE}): "
                        "not kept; report the backbone, it uses an operation the exporter gets wrong")
    return difference
