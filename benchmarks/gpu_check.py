"""GPU acceptance: one command on a CUDA machine with nothing else prepared, under 8 minutes.

    python benchmarks/gpu_check.py [--wheels DIR] [--out DIR]

It installs medcls and its first-party plugins into the running Python (`--wheels DIR`: offline, from
the wheels `bash benchmarks/gpu_wheels.sh DIR` gathers: medcls and its plugins built, MONAI, pydicom,
nibabel and the rest a PyTorch image lacks), then runs, each with its own time limit, and prints one
Markdown table:

1. the test modules that exercise devices (execution, inference, training, TTA) with the GPU
   visible, so `device=auto` picks it, and the policies' GPU test (no host synchronisation);
2. `medcls train --device cuda` of resnet50 at 224 px in bf16 on the synthetic set;
3. the benchmark harness on the GPU (end-to-end vs model-only images/s, GPU-busy share), the
   built-in augmentation policies alone on a GPU batch against the step they feed, and with
   `--timm-benchmark PATH` timm's own benchmark.py beside it (same model, batch 256, 224 px, bf16);
4. a 3D run (`monai:resnet10` on the built-in synthetic volumes, `--data synthetic3d`) on the GPU;
5. the 3D training-step benchmark (stem and memory format) on the GPU.

Without CUDA it says so and exits with status 3; nothing is installed then.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ["plugins/medcls-efficientnet-lite", "plugins/medcls-example", "plugins/medcls-monai"]


def run(command: list[str], limit: int, log: Path) -> tuple[int, float, str]:
    """(exit status, seconds, last output line); status 124 when the limit was reached."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit)
        status, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status, output = 124, (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else \
            str(exc.stdout or "")
    log.write_text(output)
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return status, time.perf_counter() - started, (lines[-1] if lines else "")[:120]


def run_figure(folder: Path) -> str:
    """A training run's time, device and test ROC AUC, from the files it wrote (or why there are none)."""
    if not (folder / "manifest.json").is_file() or not (folder / "metrics.json").is_file():
        return f"no finished run in {folder.name}/"
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return (f"{manifest.get('seconds')} s on {manifest.get('device')}, test ROC AUC "
            f"{metrics['test'].get('roc_auc', float('nan')):.3f}")


def harness_figure(out: Path, last: str) -> str:
    """Training images/s end to end and of the model alone, and the GPU-busy share, from bench.json."""
    try:
        model = json.loads((out / "bench.json").read_text())["model"]
    except (OSError, ValueError, KeyError):
        return last
    busy = model.get("gpu_busy_fraction")
    return (f"train img/s end to end {model['img_s']['end_to_end']:.0f}, model alone {model['img_s']['default']:.0f}; "
            f"GPU busy {'n/a' if busy is None else f'{busy:.2f}'}")


def timm_figure(out: Path, last: str) -> str:
    """timm's own training samples/s for the same model, batch and size."""
    try:
        results = json.loads((out / "timm.json").read_text())
        results = results[0] if isinstance(results, list) else results
        return f"train img/s {results['train_samples_per_sec']:.0f} (timm benchmark.py)"
    except (OSError, ValueError, KeyError, IndexError):
        return last


def augment_figure(out: Path, last: str) -> str:
    """Images/s of each built-in policy on a GPU batch, against the training step it feeds."""
    try:
        figures = json.loads((out / "augment.json").read_text())
        rates, ratios = figures["images_per_second"], figures["ratios"]
    except (OSError, ValueError, KeyError):
        return last
    policies = [name for name in rates if name.startswith("policy") and name.endswith("batched")]
    return "; ".join(f"{name.split()[1].rstrip(',')} {rates[name]:.0f} img/s "
                     f"({ratios[name]['vs_stage2']:.1f}x a top-2-blocks step)" for name in policies)


FIGURES = {"bench": harness_figure, "timm": timm_figure, "augmentation": augment_figure}  # by a step name's first word
BATCH = 256  # resnet50 at 224 px in bf16: what timm's benchmark uses on a large GPU


def install(wheels: str | None, log: Path) -> int:
    """medcls and its plugins: from the wheels benchmarks/gpu_wheels.sh built (offline: nothing is
    built there, and what the machine already has, torch and timm above all, stays), or else
    editable from this checkout with the package index."""
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if wheels:
        names = ["medcls"] + [Path(plugin).name for plugin in PLUGINS]
        return run(pip + ["--no-index", "--find-links", wheels, *names], 300, log)[0]
    return run(pip + ["-e", "."] + [arg for plugin in PLUGINS for arg in ("-e", plugin)], 300, log)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", help="Install offline from the wheels in this folder.")
    parser.add_argument("--out", default="gpu-check", help="Folder for the runs and logs.")
    parser.add_argument("--skip-install", action="store_true")
    parser.add_argument("--timm-benchmark", help="timm's benchmark.py (from its repository; not in the package), "
                                                 "run beside the harness with the same model, batch and size.")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False): run it on a GPU machine")
        return 3
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rows = [("device", "ok", 0.0, f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")]
    if not args.skip_install:
        status = install(args.wheels, out / "install.log")
        rows.append(("install medcls + plugins", "ok" if status == 0 else f"failed ({status})", 0.0, "install.log"))
    medcls = [sys.executable, "-m", "medcls.cli"]
    # (name, command, time limit in seconds, the run folder whose figures the table shows, if any)
    steps = [
        ("tests (execution, inference, training, TTA, policies)",
         [sys.executable, "-m", "pytest", "-q", "-x", "tests/test_execution.py", "tests/test_inference.py",
          "tests/test_tta.py", "tests/test_training.py", "tests/test_policies.py", "-k", "not policies or gpu"],
         200, None),
        ("train resnet50 224 px bf16", medcls + ["train", "--device", "cuda", "--backbone", "resnet50",
                                                 "--no-pretrained", "--image-size", "224", "--set", "precision=bf16",
                                                 "--epochs", "2", "--finetune-epochs", "1", "--set", "bootstrap=200",
                                                 "--out", str(out / "train-2d")], 120, out / "train-2d"),
        ("bench harness on the GPU", [sys.executable, "benchmarks/harness.py", "--device", "cuda", "--backbone",
                                      "resnet50", "--batch-size", str(BATCH), "--image-size", "224", "--rounds", "2",
                                      "--json", str(out / "bench.json")], 150, None),
        ("augmentation alone on the GPU", [sys.executable, "benchmarks/augmentation_throughput.py", "--device",
                                           "cuda", "--backbone", "resnet50", "--batch", str(BATCH), "--channels", "3",
                                           "--size", "224", "--rounds", "5", "--json", str(out / "augment.json")],
         120, None),
        *([("timm benchmark.py, same model", [sys.executable, args.timm_benchmark, "--model", "resnet50", "--bench",
                                             "train", "-b", str(BATCH), "--img-size", "224", "--channels-last",
                                             "--amp", "--amp-dtype", "bfloat16", "--results-file",
                                             str(out / "timm.json"), "--results-format", "json"], 120, None)]
          if args.timm_benchmark else []),
        ("train monai:resnet10 3D", medcls + ["train", "--device", "cuda", "--data", "synthetic3d", "--backbone",
                                              "monai:resnet10", "--set", "volume_size=32", "--epochs", "3",
                                              "--finetune-epochs", "0", "--set", "bootstrap=200",
                                              "--out", str(out / "train-3d")], 90,
         out / "train-3d"),
        ("3D training step (stem, memory format)", [sys.executable, "benchmarks/volume_training.py"], 60, None),
    ]
    print("| check | result | seconds | figure |\n|---|---|---|---|", flush=True)
    for row in rows:
        print_row(*row)
    for name, command, limit, run_folder in steps:
        status, seconds, last = run(command, limit, out / f"{name.split()[0]}-{len(rows)}.log")
        verdict = "ok" if status == 0 else ("time limit" if status == 124 else f"failed ({status})")
        figure = run_figure(run_folder) if run_folder else FIGURES.get(name.split()[0], lambda o, last: last)(out, last)
        rows.append((name, verdict, seconds, figure))
        print_row(*rows[-1])  # row by row, so a run cut short still shows what it finished
    return 0 if all(r[1] == "ok" for r in rows) else 1


def print_row(name: str, verdict: str, seconds: float, figure: str) -> None:
    print(f"| {name} | {verdict} | {seconds:.0f} | {figure.replace('|', '/')} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
