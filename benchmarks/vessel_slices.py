"""A larger 2D set from a real one: the axial slices of VesselMNIST3D that show any vessel, each
labelled with its volume's label (aneurysm or not), in the official splits (every slice of a
volume stays in its volume's split). 18,226 / 2,627 / 5,472 grey 28 px images with noisy labels
(a slice may miss the aneurysm its volume holds): the set on which fine-tuning with frozen batch
norm collapsed (examples/README.md, "When fine-tuning collapses").

    .venv/bin/python benchmarks/vessel_slices.py ../shared/data/medmnist/vesselmnist3d.npz slices.npz
    .venv/bin/medcls train --data slices.npz --backbone efficientnet_lite0
"""

import argparse

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("volumes", help="vesselmnist3d.npz (MedMNIST's official file)")
    parser.add_argument("out", help="the .npz to write (MedMNIST's 2D layout)")
    args = parser.parse_args()
    source, arrays = np.load(args.volumes), {}
    for split in ("train", "val", "test"):
        volumes, labels = source[f"{split}_images"], source[f"{split}_labels"]
        slices = volumes.reshape(-1, *volumes.shape[2:])  # (N x depth, H, W), volume by volume
        slice_labels = np.repeat(labels, volumes.shape[1], axis=0)
        shown = slices.reshape(len(slices), -1).max(1) > 0  # empty slices carry no label's evidence
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = slices[shown], slice_labels[shown]
        print(f"{split}: {int(shown.sum())} slices, {float(slice_labels[shown].mean()):.3f} positive")
    np.savez_compressed(args.out, **arrays)


if __name__ == "__main__":
    main()
