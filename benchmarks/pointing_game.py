"""Does Grad-CAM point at the lesion? On the built-in synthetic set every tumour's pixels are known,
so an explanation can be scored: the pointing game (share of tumour images whose map maximum falls
on the tumour core grown by a tolerance, 15 px at 224 px as in Zhang et al. 2018, scaled to the
image size) and the mean heat on the tumour over the mean heat elsewhere, per backbone, per layer
the map is taken from, and for Grad-CAM and Grad-CAM++ (MONAI's), over several training seeds.

    .venv/bin/python benchmarks/pointing_game.py [--backbones efficientnet_lite0 resnet18] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn


def candidate_layers(model) -> dict[str, str]:
    """The last convolution of each of the backbone's last three blocks, from the top down."""
    names = {module: name for name, module in model.named_modules()}
    found = {}
    for depth, block in enumerate(reversed(model.blocks()[-3:])):
        convolutions = [m for m in block.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        if convolutions:
            found[f"block -{depth + 1}"] = names[convolutions[-1]]
    return found


def grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=pixels)


def score_layers(run, size: int, tolerance: int) -> dict:
    """{(method, layer label): (pointing game, heat ratio, layer name, images)} over the run's
    positive test images."""
    from monai.visualize import GradCAM, GradCAMpp

    from medcls.data.images import resize
    from medcls.data.synthetic import lesion_mask, synthetic_cases
    from medcls.workflows.explain import unit_range

    import csv

    cases = {c.key: c for c in synthetic_cases(400, 96)}
    with open(run.path / "predictions.csv", newline="") as fh:
        positives = [row["key"] for row in csv.DictReader(fh)
                     if row["split"] == "test" and row["label"] == run.classes[1]]
    model = run.model.float().cpu().eval()
    out = {}
    for method, maker in (("Grad-CAM", GradCAM), ("Grad-CAM++", GradCAMpp)):
        for label, layer in candidate_layers(model).items():
            cam = maker(nn_module=model, target_layers=layer, postprocessing=unit_range)
            hits, ratios = [], []
            for key in positives:
                image = resize(cases[key].array, size, run.info.get("interpolation", "bilinear"))[None]
                heat = cam(x=image, class_idx=1)[0, 0].detach().numpy()
                mask = lesion_mask(key, 96).astype(np.float32)
                mask = resize(mask[None], size)[0].numpy() > 0.5
                y, x = np.unravel_index(np.argmax(heat), heat.shape)
                hits.append(bool(grown(mask, tolerance)[y, x]))
                ratios.append(heat[mask].mean() / max(heat[~mask].mean(), 1e-6))
            out[(method, label)] = (float(np.mean(hits)), float(np.median(ratios)), layer, len(positives))
    return out


def main():
    import medcls

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet18"])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    tolerance = max(1, round(15 * args.image_size / 224))
    print(f"tolerance {tolerance} px at {args.image_size} px; means over seeds {args.seeds}")
    print("| backbone | method | layer | module | pointing game (per seed) | heat on tumour / elsewhere | "
          "tumour images | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for backbone in args.backbones:
        pretrained = backbone == "efficientnet_lite0"  # the one with offline ImageNet weights here
        scores, seconds = {}, []
        for seed in args.seeds:
            started = time.perf_counter()
            run = medcls.train("synthetic", backbone=backbone, image_size=args.image_size, epochs=args.epochs,
                               finetune_epochs=args.epochs, lr=0.003, batch_size=16, pretrained=pretrained,
                               bootstrap=100, seed=seed, split_seed=0)
            seconds.append(time.perf_counter() - started)
            torch.manual_seed(0)
            for key, value in score_layers(run, args.image_size, tolerance).items():
                scores.setdefault(key, []).append(value)
        for (method, label), found in scores.items():
            pointing = [f[0] for f in found]
            print(f"| {backbone} | {method} | {label} | `{found[0][2]}` | {np.mean(pointing):.2f} "
                  f"({', '.join(f'{p:.2f}' for p in pointing)}) | {np.mean([f[1] for f in found]):.2f} | "
                  f"{found[0][3]} | {np.mean(seconds):.0f} |")


if __name__ == "__main__":
    main()
