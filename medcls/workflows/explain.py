"""`medcls explain`: Grad-CAM heatmaps (MONAI's implementation) of a run's decisions, overlaid on
the images (volumes: their middle axial slice), one PNG per input and a grid of all of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import torch
from torch import nn

from medcls.core.acs import ACSConv
from medcls.core.inference import Predictor, ReadInputs, read_paths, run_predictor
from medcls.core.runs import RunInfo, load_model
from medcls.errors import ConfigError, DataError
from medcls.logs import stage
from medcls.reports.plots import save_grid, save_overlay
from medcls.workflows.predict import predictions_for

CONVOLUTIONS = (nn.Conv2d, nn.Conv3d, ACSConv)


def target_layer(model: nn.Module) -> str:
    """The last convolution of the backbone's second-to-last block (or of the backbone, when it has
    fewer than two blocks or that block none). Chosen by the pointing game on the synthetic set,
    whose tumours are known (benchmarks/pointing_game.py, examples/README.md): a finer map than the
    last block's hits the tumour more often (ResNet-18 0.35 against 0.10 over two seeds;
    EfficientNet-Lite0 0.05 against 0.02)."""
    if getattr(model.backbone, "slices", 0):
        raise ConfigError("explain works on 2D and 3D backbones; a 2.5D run (slices) has no single feature map")
    convolutions = [name for name, module in model.named_modules() if isinstance(module, CONVOLUTIONS)]
    if not convolutions:
        raise ConfigError("Grad-CAM needs a convolutional backbone; this one has no convolution "
                          "(a vision transformer: use attention rollout outside medcls)")
    blocks = model.blocks() if hasattr(model, "blocks") else []
    if len(blocks) >= 2:
        names = {module: name for name, module in model.named_modules()}
        inner = [names[m] for m in blocks[-2].modules() if isinstance(m, CONVOLUTIONS) and m in names]
        if inner:
            return inner[-1]
    return convolutions[-1]


@dataclass
class Explanation:
    """Grad-CAM of each input: a row per input (file, heatmap PNG, class explained, its calibrated
    probability, the decision, error), the grid PNG and the layer the maps come from."""

    rows: list[dict]
    grid: str
    layer: str


def explain_inputs(run, inputs, registries, out, target_class: str | None = None) -> Explanation:
    """Grad-CAM heatmaps of a saved run over files, folders, series or volumes."""
    model, info = load_model(run, registries)
    return explain_read(model, info, read_paths(info, inputs, registries), out, target_class)


def explain_read(model: nn.Module, info: RunInfo, read: ReadInputs, out, target_class: str | None = None,
                 predictor: Predictor | None = None) -> Explanation:
    """Grad-CAM over inputs already read as the run was trained. Probabilities and decisions come
    from `predictor`, the run's one inference path (calibrated, at the stored operating point, in
    the run's precision), so they are the ones `predict` gives; without it, `model` in fp32 on CPU.
    The maps themselves are computed in fp32."""
    from monai.visualize import GradCAM

    classes = info.classes
    if target_class is not None and target_class not in classes:
        raise ConfigError(f"--class {target_class!r} is not one of the run's classes ({', '.join(classes)})")
    if not read.images:
        raise DataError(f"none of the inputs could be read; first problem: {read.rows[0]['error']}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    layer = target_layer(model)
    predictions = predictions_for(read, predictor or run_predictor(model, info, device="cpu", precision="fp32"))
    # MONAI's default postprocessing maps the maximum to 0 (its docs: "will flip magnitudes");
    # here the most important region is 1, so that a colour map shows it hot.
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=unit_range)
    panels = []
    rows = read.rows
    with stage(f"Grad-CAM of {len(read.images)} input(s)", total=len(read.images), unit="img") as advance:
        for image, position in zip(read.images, read.positions):
            probs, decided = predictions.probabilities[position], predictions.decisions[position]
            # Multi-label: the map of the named finding, else of the most probable one (its own logit).
            shown = target_class or (classes[int(np.argmax(probs))] if info.multi_label else
                                     classes[1] if len(classes) == 2 else decided)
            heat = cam(x=image[None].float(), class_idx=classes.index(shown))[0, 0].detach().numpy()
            picture = image.float().mean(0).numpy()
            if picture.ndim == 3:  # a volume: its middle axial slice
                middle = picture.shape[0] // 2
                picture, heat = picture[middle], heat[middle]
            name = Path(rows[position]["file"]).name.replace(".nii.gz", "").rsplit(".", 1)[0] or "input"
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "input"
            target = out / f"{position:04d}-{name}-gradcam.png"
            title = f"{name}: p({shown}) = {probs[classes.index(shown)]:.3f}, decision {decided}"
            save_overlay(picture, heat, title, target)
            rows[position].update({"heatmap": str(target), "class": shown, "probability": float(probs[classes.index(shown)]),
                                   "predicted": decided})
            panels.append((picture, heat, title))
            advance()
    grid = out / "gradcam-grid.png"
    save_grid(panels, grid)
    return Explanation(rows, str(grid), layer)


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1], most important = 1 (a flat map stays 0)."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    shape = (-1,) + (1,) * (maps.dim() - 1)
    return (maps - low.view(shape)) / scale.view(shape)
