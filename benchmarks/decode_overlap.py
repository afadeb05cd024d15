"""The first training epoch with decoding in the background against decoding everything first,
when the training step runs on an accelerator: the host only waits while the device computes,
simulated here by the host sleeping `--step-ms` per batch (on a GPU, `medcls bench` measures the
real thing). Nothing is read from or written to the disk store: every round decodes from scratch.

    .venv/bin/python benchmarks/decode_overlap.py --config examples/ct-contrast.toml [--compress jpeg2000] [--step-ms 250]
    .venv/bin/python benchmarks/decode_overlap.py --data ../shared/data/brain-tumour-mri [--channels 1]
"""

import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # `benchmarks` as a package, run from anywhere

import argparse
import json
import statistics
import time


def first_epoch(cases, readers, config, policy, background: bool, step_seconds: float) -> dict:
    from benchmarks.harness import training_loader
    from medcls.data.decoding import StartAgain, decode_all

    started = time.perf_counter()
    cache = decode_all(cases, readers, config.image_size, config.channels, background=background)
    ready = time.perf_counter() - started
    loader = training_loader(cache, policy, config)
    waited, batches = 0.0, iter(loader)
    while True:
        asked = time.perf_counter()
        try:
            if next(batches, None) is None:
                break
        except StartAgain:  # colour after a guess of greyscale: medcls train starts the epoch again
            cache.complete()
            batches = iter(loader)
            continue
        waited += time.perf_counter() - asked
        time.sleep(step_seconds)  # the host waits for the device's step
    seconds = time.perf_counter() - started
    cache.complete()
    return {"seconds": seconds, "training_starts_after": ready, "waited_for_images": waited}


def main():
    import tempfile
    from pathlib import Path

    from benchmarks.harness import BenchSettings, files_for
    from medcls.cli import registries as all_registries
    from medcls.config import make_config, read_config_file
    from medcls.core.augment import make_policy

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", help="a train config file (data, columns, window)")
    parser.add_argument("--data", help="a data source, as for medcls train --data")
    parser.add_argument("--compress", choices=("jpeg2000", "rle"), help="re-encode DICOM inputs first")
    parser.add_argument("--channels", default=None, help="1 or 3: known before decoding (default: the config's)")
    parser.add_argument("--step-ms", type=float, default=250.0, help="device time per training step")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    registries = all_registries()
    given = read_config_file(args.config) if args.config else {}
    config = make_config({**given, **({"data": args.data} if args.data else {}),
                          **({"channels": args.channels} if args.channels else {}),
                          "image_size": args.image_size, "batch_size": args.batch_size, "policy": "none"})
    settings = BenchSettings(data=args.data, config=args.config, image_size=args.image_size,
                             batch_size=args.batch_size, limit=args.limit, compress=args.compress)
    workdir = tempfile.TemporaryDirectory()
    cases, readers = files_for(settings, registries, Path(workdir.name))
    policy, _ = make_policy(config, registries)
    runs = {"background": [], "decode_first": []}
    for _ in range(args.rounds):  # interleaved: machine noise hits both alike
        for name in runs:
            runs[name].append(first_epoch(cases, readers, config, policy, name == "background", args.step_ms / 1000))
    steps = len(cases) // args.batch_size
    result = {
        "images": len(cases), "steps": steps, "step_ms": args.step_ms,
        **{f"{name}_{key}": statistics.median(r[key] for r in rounds)
           for name, rounds in runs.items() for key in rounds[0]},
        "speedup": statistics.median(b["seconds"] / a["seconds"]
                                     for a, b in zip(runs["background"], runs["decode_first"])),
    }
    # Fully overlapped, the epoch still decodes the first batch before its first step and takes
    # one step after the last image is decoded.
    decode, step = result["decode_first_training_starts_after"], args.step_ms / 1000
    ideal = max(decode + step, decode * args.batch_size / len(cases) + steps * step)
    result["ideal_speedup"] = result["decode_first_seconds"] / ideal
    workdir.cleanup()
    print(f"{len(cases)} images, {steps} steps of {args.step_ms:.0f} ms device time, {args.rounds} rounds (medians)")
    for name in runs:
        print(f"  {name:<13} first epoch {result[name + '_seconds']:.2f} s, training starts after "
              f"{result[name + '_training_starts_after']:.2f} s, waited for images {result[name + '_waited_for_images']:.2f} s")
    print(f"  background / decode first: {result['speedup']:.2f}x faster (ideal overlap: {result['ideal_speedup']:.2f}x)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
