"""3D training speed at a MedMNIST-3D grid: volumes per second of a real training step (forward,
backward, AdamW step) of MONAI's ResNet-10 with medcls's stem for the grid versus MONAI's default
stem, contiguous and channels_last_3d, at half width (the VesselMNIST3D preset's members), and of
2D backbones reading volumes through ACS convolutions (`acs=true`) or slice by slice (`slices=3`,
2.5D), measured side by side in one run (median of repeats).

    .venv/bin/python benchmarks/volume_training.py [--grid 28] [--batch 32] [--repeats 5] [--acs resnet18]
    .venv/bin/python benchmarks/volume_training.py --grid 64 --batch 8 --repeats 3 --acs ""   # a 64^3 grid
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def step_rate(model, grid: int, batch: int, repeats: int, channels_last: bool, device: str = "cpu") -> float:
    """Median volumes/s of full training steps (after two warm-up steps)."""
    model = model.to(device)
    volumes = torch.rand(batch, 1, grid, grid, grid, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        volumes = volumes.contiguous(memory_format=torch.channels_last_3d)
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss_fn(model(volumes), labels).backward()
        optimiser.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def main():
    from medcls import create_classifier

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="monai:resnet10")
    parser.add_argument("--grid", type=int, default=28)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--acs", default="resnet18", help="2D backbones to time with acs=true and slices=3 (comma-separated)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for stem, shape in (("MONAI default", None), ("medcls (fitted to the grid)", (args.grid,) * 3)):
        for channels_last in (False, True):
            model = create_classifier(args.backbone, 2, in_chans=1, input_shape=shape)
            rows.append((args.backbone, stem, "channels_last_3d" if channels_last else "contiguous",
                         step_rate(model, args.grid, args.batch, args.repeats, channels_last, args.device)))
    if args.backbone.startswith("monai:resnet") and args.grid > 32:  # medcls keeps MONAI's stem on larger grids
        model = create_classifier(args.backbone, 2, in_chans=1, input_shape=(args.grid,) * 3, conv1_t_stride=2)
        rows.append((f"{args.backbone}, conv1_t_stride=2", "7^3 kernel, stride 2 (MedicalNet's)", "contiguous",
                     step_rate(model, args.grid, args.batch, args.repeats, False, args.device)))
    if args.backbone.startswith("monai:resnet"):  # the VesselMNIST3D preset's members (examples/vesselmnist3d.yaml)
        model = create_classifier(args.backbone, 2, in_chans=1, input_shape=(args.grid,) * 3, widen_factor=0.5)
        rows.append((f"{args.backbone}, widen_factor=0.5", "medcls (fitted to the grid)", "contiguous",
                     step_rate(model, args.grid, args.batch, args.repeats, False, args.device)))
    for name in filter(None, args.acs.split(",")):
        for how, options in (("acs=true", {"acs": True}), ("slices=3 (2.5D)", {"slices": 3})):
            model = create_classifier(name, 2, in_chans=1, **options)
            rows.append((f"{name}, {how}", "the 2D model's", "contiguous",
                         step_rate(model, args.grid, args.batch, args.repeats, False, args.device)))
    base = rows[0][3]
    print(f"{args.backbone} at {args.grid}^3, batch {args.batch}, {args.device} ({torch.get_num_threads()} threads), "
          f"median of {args.repeats} training steps")
    print("| backbone | stem | memory format | volumes/s | vs MONAI default contiguous |\n|---|---|---|---|---|")
    for backbone, stem, layout, rate in rows:
        print(f"| {backbone} | {stem} | {layout} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
