"""Stage 1 (frozen backbone, no augmentation) on features computed once against running the
frozen backbone every epoch: median epoch time and whole-stage time, same data, same seed, in
one process; the results are identical (tests/test_training.py checks that).

    .venv/bin/python benchmarks/stage1_features.py [--data synthetic] [--epochs 5] [--size 224]
"""

import argparse
import csv
import json
import statistics
import tempfile
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    from medcls.config import make_config
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries
    from medcls.workflows.train import train

    registries = Registries(get_plugin_manager())
    results, epoch_seconds = {}, {}
    for cache in (False, True, False, True):  # interleaved: machine noise hits both alike
        with tempfile.TemporaryDirectory() as out:
            config = make_config({"data": args.data, "backbone": args.backbone, "policy": "none",
                                  "epochs": args.epochs, "finetune_epochs": 0, "patience": 0,
                                  "image_size": args.size, "bootstrap": 200, "feature_cache": cache, "out": out})
            started = time.perf_counter()
            summary = train(config, registries)
            total = time.perf_counter() - started
            with open(f"{out}/history.csv") as fh:
                epochs = [float(row["seconds"]) for row in csv.DictReader(fh)]
        results.setdefault(cache, []).append((total, summary["results"]["test"]["roc_auc"]))
        epoch_seconds.setdefault(cache, []).extend(epochs)
    uncached = statistics.median(t for t, _ in results[False])
    cached = statistics.median(t for t, _ in results[True])
    epoch_uncached, epoch_cached = (statistics.median(epoch_seconds[c]) for c in (False, True))
    print(json.dumps({"settings": vars(args),
                      "median_epoch_seconds": {"backbone_every_epoch": epoch_uncached, "features_once": epoch_cached},
                      "speedup_per_epoch": epoch_uncached / max(epoch_cached, 1e-9),
                      "seconds_backbone_every_epoch": uncached,
                      "seconds_features_once": cached, "speedup_whole_run": uncached / cached,
                      "test_roc_auc": {str(k): [a for _, a in v] for k, v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
