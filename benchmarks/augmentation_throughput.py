"""Is augmentation ever the training bottleneck? Images per second of each policy, batched on the
device as the training loop applies it (and per image, for reference), against the model's own
training throughput on in-memory tensors, measured in interleaved rounds in one process. The
ratio is what matters: above 1, augmentation costs less than the step it feeds.

    .venv/bin/python benchmarks/augmentation_throughput.py [--backbone efficientnet_lite0] [--size 224]
    python benchmarks/augmentation_throughput.py --device cuda --backbone resnet50 --batch 256 --channels 3

On a GPU the batch and model live there, the step runs in bf16 autocast (the GPU default), and
every timing waits for the GPU to finish (`--json FILE` keeps the figures).
"""

import argparse
import json
import statistics
import time

import torch


def images_per_second(fn, images: int, rounds: int, device: torch.device) -> list[float]:
    rates = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(images / (time.perf_counter() - start))
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    device = torch.device(args.device)

    from medcls.config import make_config
    from medcls.core.models import build_classifier
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries
    from medcls.core.augment import make_policy

    registries = Registries(get_plugin_manager())
    batch = torch.rand(args.batch, args.channels, args.size, args.size, device=device)
    labels = torch.randint(0, 2, (args.batch,), device=device)
    model, _ = build_classifier(registries, args.backbone, 2, args.channels, 0.3, pretrained=False)
    model.to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step(top_blocks):
        model.set_trainable(top_blocks)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step():
            model.set_trainable(top_blocks)  # the workloads share one model
            model.train()
            optimizer.zero_grad()
            with autocast:
                loss = loss_fn(model(batch), labels)
            loss.backward()
            optimizer.step()
        return step

    policies = {name: make_policy(make_config({"policy": name}), registries)[0]
                for name in ("interpretable", "aggressive")}
    workloads = {
        "train step, frozen backbone (stage 1)": train_step(0),
        "train step, top 2 blocks (stage 2)": train_step(2),
        **{f"policy {name}, batched": (lambda t=t: t.batch(batch)) for name, t in policies.items()},
        **{f"policy {name}, per image": (lambda t=t: [t(image) for image in batch]) for name, t in policies.items()},
    }
    for fn in workloads.values():  # warm-up
        fn()
    rates = {name: [] for name in workloads}
    for _ in range(args.rounds):  # interleaved rounds: machine noise hits every workload alike
        for name, fn in workloads.items():
            rates[name] += images_per_second(fn, args.batch, 1, device)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    slowest_model = min(v for k, v in medians.items() if k.startswith("train"))
    fastest_model = max(v for k, v in medians.items() if k.startswith("train"))
    ratios = {name: {"vs_stage1": v / fastest_model, "vs_stage2": v / slowest_model}
              for name, v in medians.items() if name.startswith("policy")}
    figures = {"settings": vars(args), "threads": torch.get_num_threads(), "images_per_second": medians,
               "ratios": ratios}
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    for name, value in medians.items():
        print(f"{name:40s} {value:8.1f} img/s")
    for name, ratio in ratios.items():
        print(f"{name:40s} {ratio['vs_stage1']:.2f}x stage-1 step, {ratio['vs_stage2']:.2f}x stage-2 step")


if __name__ == "__main__":
    main()
