"""`medcls export RUN --format monai-bundle`: a MONAI bundle (configs/metadata.json with every field
MONAI's bundle metadata schema requires, configs/inference.json, models/model.ts, docs/README.md)
that MONAI's own runner executes on a folder of images without medcls:

    python -m monai.bundle run --bundle_root BUNDLE --config_file BUNDLE/configs/inference.json \\
        --meta_file BUNDLE/configs/metadata.json --dataset_dir IMAGES

MONAI only loads the files and scales 8-bit pixels to [0, 1]; the TorchScript network does the
rest exactly as medcls's inference path does (the cut to the object's box when the run used
crop_foreground, antialiased resize by the run's interpolation, 16-bit quantisation, the run's
channels, normalisation, temperature, softmax or sigmoid), so the bundle's probabilities are
medcls predict's.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from medcls.data.images import crop_to_foreground
from medcls.errors import ConfigError, DataError
from medcls.workflows.sharing import package_version

if TYPE_CHECKING:
    from medcls.core.runs import RunInfo

# The schema MONAI's `verify_metadata` downloads; its required keys are checked offline in the tests.
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
REQUIRED_METADATA = ("schema", "version", "monai_version", "pytorch_version", "numpy_version",
                     "required_packages_version", "task", "description", "authors", "copyright",
                     "network_data_format")
REQUIRED_TENSOR = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                   "is_patch_data", "channel_def")


class BundleNetwork(nn.Module):
    """Images as MONAI loads them ((B, C, H, W), any size, in [0, 1]) to the run's probabilities:
    the preprocessing of medcls.core.inference.read_cases inside the network."""

    def __init__(self, model: nn.Module, size: int, interpolation: str, in_chans: int, n_classes: int,
                 temperature: float, multi_label: bool, crop_foreground: bool = False) -> None:
        super().__init__()
        self.model = model
        self.size, self.in_chans, self.n_classes = size, in_chans, n_classes
        self.mode = interpolation if interpolation in ("bilinear", "bicubic") else "bilinear"
        self.temperature, self.multi_label = temperature, multi_label
        self.crop_foreground = crop_foreground

    def resized(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2] != self.size or images.shape[-1] != self.size:
            images = nn.functional.interpolate(images, size=[self.size, self.size], mode=self.mode, antialias=True,
                                               align_corners=False)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if self.crop_foreground:  # each image cut to its own object's box, as medcls's reading path does
            images = torch.cat([self.resized(crop_to_foreground(image)[None]) for image in images.unbind(0)])
        else:
            images = self.resized(images)
        levels = torch.round(images.clamp(0.0, 1.0) * 65535.0)  # the image cache's 16-bit grid
        if levels.shape[1] != self.in_chans:  # grey copied into colour slots, colour averaged into grey
            levels = levels.expand(-1, 3, -1, -1) if self.in_chans == 3 else \
                torch.round(levels.sum(1, keepdim=True) / 3.0)
        logits = self.model(levels / 65535.0).float()[:, :self.n_classes]
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits / self.temperature, dim=1)


def bundle_metadata(info: RunInfo, metrics: dict) -> dict:
    """configs/metadata.json: the schema's required fields and the run's classes, input and figures."""
    import numpy

    classes = list(info.classes)
    test = metrics.get("test", {})
    kind = "multi-label findings" if info.multi_label else "classes"
    return {
        "schema": SCHEMA,
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported from medcls {package_version('medcls')}"},
        "monai_version": package_version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"pillow": package_version("pillow")},
        "optional_packages_version": {},
        "name": f"medcls {info.backbone} classifier",
        "task": f"Image classification into {kind}: {', '.join(classes)}",
        "description": f"A {info.backbone} fine-tuned by medcls ({info.weights_origin or 'unknown weights'}); "
                       "the network takes images in [0, 1] at any size, resizes them as medcls does and "
                       "returns probabilities. See docs/README.md (the model card) before any use.",
        "authors": "medcls user (fill in)",
        "copyright": "Copyright (c) the model's authors (fill in)",
        "intended_use": "Research only; not validated for clinical decisions. Read docs/README.md.",
        "data_type": "png/jpeg (8-bit)",
        "eval_metrics": {k: test[k] for k in ("roc_auc", "sensitivity", "specificity", "accuracy")
                         if isinstance(test.get(k), float)},
        "medcls": {"threshold": info.threshold, "threshold_rule": info.threshold_rule,
                   "positive_class": info.positive_class, "classes": classes,
                   "multi_label": bool(info.multi_label)},
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "n/a", "num_channels": int(info.in_chans),
                "spatial_shape": ["*", "*"], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {str(c): ("grey" if info.in_chans == 1 else "RGB"[c])
                                for c in range(int(info.in_chans))}}},
            "outputs": {"pred": {
                "type": "probabilities", "format": "classes", "modality": "n/a", "num_channels": len(classes),
                "spatial_shape": [1], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {str(i): name for i, name in enumerate(classes)}}},
        },
    }


def inference_config() -> dict:
    """configs/inference.json for MONAI's bundle runner: every file of `dataset_dir`, loaded with
    Pillow (rows first, as medcls reads them), scaled to [0, 1], through the network; the
    probabilities go to `output_dir`/predictions.csv by MONAI's ClassificationSaver."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "images",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*'))) "
                    "if f.lower().endswith(('.png', '.jpg', '.jpeg'))]",
        "network": "$torch.jit.load(@bundle_root + '/models/model.ts', map_location=@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "PILReader", "reverse_indexing": False,
             "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0,
             "b_max": 1.0, "clip": True},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
        ]},
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "handlers": [{"_target_": "ClassificationSaver", "output_dir": "@output_dir",
                      "batch_transform": "$lambda batch: [item['image'].meta for item in batch]",
                      "output_transform": "$lambda output: [item['pred'] for item in output]"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "val_handlers": "@handlers", "amp": False},
        "run": ["$@evaluator.run()"],
    }


def export_bundle(model: nn.Module, info: RunInfo, out: Path, *, run: Path, check_batch: torch.Tensor,
                  expected: torch.Tensor, tolerance: float) -> float:
    """Write the bundle into `out`; kept only if the TorchScript network gives medcls's
    probabilities on `check_batch` (images already on the run's grid) within `tolerance`."""
    if int(info.spatial_dims) != 2 or info.tasks:
        raise ConfigError("--format monai-bundle exports 2D single-task runs (the bundle reads image files); "
                          "export volumes and multi-task runs with --format onnx or torchscript")
    model = model.float().cpu().eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, check_batch)
    network = torch.jit.script(BundleNetwork(traced, int(info.image_size), info.interpolation,
                                             int(info.in_chans), len(info.classes),
                                             float(info.temperature or 1.0), bool(info.multi_label),
                                             bool(info.crop_foreground)))
    with torch.no_grad():
        difference = float((network(check_batch) - expected).abs().max())
    if difference > tolerance:
        raise DataError(f"the bundle's network differs from medcls's probabilities by {difference:.2e}: not written")
    for folder in ("configs", "models", "docs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    network.save(str(out / "models" / "model.ts"))
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    (out / "configs" / "metadata.json").write_text(json.dumps(bundle_metadata(info, metrics), indent=2),
                                                   encoding="utf-8")
    (out / "configs" / "inference.json").write_text(json.dumps(inference_config(), indent=2), encoding="utf-8")
    card = run / "MODEL_CARD.md"
    readme = card.read_text(encoding="utf-8") if card.is_file() else f"# medcls {info.backbone}\n"
    (out / "docs" / "README.md").write_text(
        readme + "\n## Running this bundle\n\n```bash\npython -m monai.bundle run --bundle_root BUNDLE "
        "--config_file BUNDLE/configs/inference.json --meta_file BUNDLE/configs/metadata.json --dataset_dir IMAGES\n"
        "```\n\nReads 8-bit PNG/JPEG files (DICOM and volumes: `medcls predict`); writes the probabilities of "
        f"{', '.join(info.classes)} per file to BUNDLE/eval/predictions.csv. Python {platform.python_version()}.\n",
        encoding="utf-8")
    return difference
