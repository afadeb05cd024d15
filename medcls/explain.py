"""`medcls explain`: Grad-CAM heatmaps (MONAI's implementation) of a run's decisions, overlaid on
the images (volumes: their middle axial slice), one PNG per input and a grid of all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medcls.errors import ConfigError, DataError


def target_layer(model: nn.Module) -> str:
    """The last convolution of the backbone: the finest map that still sees the whole image."""
    if getattr(model.backbone, "slices", 0):
        raise ConfigError("explain works on 2D and 3D backbones; a 2.5D run (slices) has no single feature map")
    convolutions = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Conv3d)]
    if not convolutions:
        raise ConfigError("Grad-CAM needs a convolutional backbone; this one has no convolution "
                          "(a vision transformer: use attention rollout outside medcls)")
    return convolutions[-1]


def explain_inputs(run, inputs, registries, out, target_class: str | None = None) -> dict:
    from monai.visualize import GradCAM

    from medcls.predict import decide, read_inputs
    from medcls.runs import load_model

    model, info = load_model(run, registries)
    classes = info["classes"]
    if target_class is not None and target_class not in classes:
        raise ConfigError(f"--class {target_class!r} is not one of the run's classes ({', '.join(classes)})")
    rows, images, positions = read_inputs(info, inputs, registries)
    if not images:
        raise DataError(f"none of the inputs could be read; first problem: {rows[0]['error']}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layer = target_layer(model)
    # MONAI's default postprocessing maps the maximum to 0 (its docs: "will flip magnitudes");
    # here the most important region is 1, so that a colour map shows it hot.
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=unit_range)
    panels = []
    for image, position in zip(images, positions):
        batch = image[None].requires_grad_(False)
        with torch.no_grad():
            probs = model(batch).float().softmax(1)[0].numpy()
        decided = decide(probs, classes, info.get("threshold"))
        shown = target_class or (classes[1] if len(classes) == 2 else decided)
        heat = cam(x=batch, class_idx=classes.index(shown))[0, 0].detach().numpy()
        picture = image.mean(0).numpy()
        if picture.ndim == 3:  # a volume: its middle axial slice
            middle = picture.shape[0] // 2
            picture, heat = picture[middle], heat[middle]
        name = Path(rows[position]["file"]).name.replace(".nii.gz", "").rsplit(".", 1)[0] or "input"
        target = out / f"{position:04d}-{name}-gradcam.png"
        title = f"{name}: p({shown}) = {probs[classes.index(shown)]:.3f}, decision {decided}"
        save_overlay(picture, heat, title, target)
        rows[position].update({"heatmap": str(target), "class": shown, "probability": float(probs[classes.index(shown)]),
                               "predicted": decided})
        panels.append((picture, heat, title))
    grid = out / "gradcam-grid.png"
    save_grid(panels, grid)
    return {"rows": rows, "grid": str(grid), "layer": layer}


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1], most important = 1 (a flat map stays 0)."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    shape = (-1,) + (1,) * (maps.dim() - 1)
    return (maps - low.view(shape)) / scale.view(shape)


def overlay(ax, picture: np.ndarray, heat: np.ndarray, title: str) -> None:
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def save_overlay(picture, heat, title, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(picture, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=7)
    axes[0].axis("off")
    overlay(axes[1], picture, heat, title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_grid(panels, path: Path, columns: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (picture, heat, title) in zip(axes.ravel(), panels):
        overlay(ax, picture, heat, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
