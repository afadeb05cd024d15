"""How fast are medcls's intervals? 2,000 stratified bootstrap resamples of every built-in binary
metric on 10,000 predictions (vectorised), DeLong on 10,000 and 1,000,000, against scikit-learn
called once per resample (the naive way), measured side by side in one run.

    .venv/bin/python benchmarks/bootstrap_speed.py [--repeats 5]
"""

import argparse
import json
import statistics
import time

import numpy as np


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()

    from sklearn.metrics import roc_auc_score

    from medcls.stats.bootstrap import WeightedBinary, bootstrap_binary, resample_weights
    from medcls.stats.intervals import delong_interval
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, args.n)
    p1 = 1 / (1 + np.exp(-(rng.normal(0, 1, args.n) + 1.5 * y)))
    yhat = (p1 >= 0.5).astype(np.int64)
    statistics_ = {e.name: e.metadata["vectorised"] for e in Registries(get_plugin_manager())["metrics"]
                   if e.metadata.get("vectorised")}
    all_metrics = timed(lambda: bootstrap_binary(y, p1, yhat, statistics_, n_resamples=args.resamples), args.repeats)
    auc_only = timed(lambda: bootstrap_binary(y, p1, yhat, {"roc_auc": WeightedBinary.roc_auc},
                                              n_resamples=args.resamples), args.repeats)

    def naive_auc(resamples=200):  # sklearn once per resample; timed on 200 and scaled
        for W in resample_weights(y, None, resamples, 0):
            for row in W.astype(np.int64):
                index = np.repeat(np.arange(len(y)), row)
                roc_auc_score(y[index], p1[index])

    naive = timed(naive_auc, max(1, args.repeats // 2)) * args.resamples / 200
    big_n = 1_000_000
    y_big = rng.integers(0, 2, big_n)
    s_big = rng.normal(0, 1, big_n) + y_big
    delong_small = timed(lambda: delong_interval(y, p1), args.repeats)
    delong_big = timed(lambda: delong_interval(y_big, s_big), max(1, args.repeats // 2))
    result = {
        "n": args.n, "resamples": args.resamples, "metrics_bootstrapped": sorted(statistics_),
        "seconds_all_metrics_vectorised": all_metrics, "seconds_roc_auc_vectorised": auc_only,
        "seconds_roc_auc_sklearn_per_resample": naive, "speedup_roc_auc": naive / auc_only,
        "seconds_delong_10k": delong_small, "seconds_delong_1M": delong_big,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{args.resamples} resamples x {args.n} predictions, median of {args.repeats}:")
    print(f"  all {len(statistics_)} metrics, vectorised   {all_metrics:6.2f} s")
    print(f"  ROC AUC, vectorised              {auc_only:6.2f} s")
    print(f"  ROC AUC, sklearn per resample    {naive:6.2f} s  ({naive / auc_only:.0f}x slower)")
    print(f"  DeLong interval: 10k {delong_small * 1e3:.1f} ms, 1M {delong_big:.2f} s (O(n log n))")


if __name__ == "__main__":
    main()
