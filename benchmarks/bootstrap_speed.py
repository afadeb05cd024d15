"""How fast are medcls's intervals? 2,000 stratified bootstrap resamples of every built-in binary
metric on 10,000 predictions (vectorised), DeLong on 10,000 and 1,000,000, against scikit-learn
called once per resample (the naive way), measured side by side in one run; and the multi-label
summary (macro and micro ROC AUC, sensitivity, specificity: 1,000 resamples of 2,000 cases x 14
findings, ChestMNIST's shape) vectorised against summary_figures called once per resample; and on
a large split (78,000 cases, ChestMNIST's training split) the score levels of 250 resamples (with the
2x2 tables) by one sparse product against gathering the weights in score order and summing runs of
ties (the levels alone), the ROC read at fixed specificities by a binary search per resample against
a pass over every threshold, the calibration slopes from the mean fit against Newton from 0, and a
whole split assessed (every built-in metric and the operating figures, as a run scores its splits).

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
    parser.add_argument("--multilabel-n", type=int, default=2000)
    parser.add_argument("--findings", type=int, default=14)
    parser.add_argument("--large-n", type=int, default=78_000)
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
    from medcls.stats import multilabel
    from medcls.stats.bootstrap import bootstrap_figures

    targets = (rng.random((args.multilabel_n, args.findings)) < 0.1).astype(np.float64)
    scores = np.clip(0.3 * targets + rng.random(targets.shape) * 0.7, 0, 1).astype(np.float32)
    targets[rng.random(targets.shape) < 0.05] = np.nan  # uncertain entries, left out
    decided = multilabel.decisions(scores, [0.4] * args.findings)
    summary_vectorised = timed(lambda: multilabel.summary_intervals(scores, targets, decided, n_resamples=1000),
                               args.repeats)
    summary_loop = timed(lambda: bootstrap_figures(  # one summary_figures call per resample; 50 timed, scaled
        lambda rows: multilabel.summary_figures(scores[rows], targets[rows], decided[rows]), len(targets),
        n_resamples=50), max(1, args.repeats // 2)) * 1000 / 50
    large = large_split(args.large_n, args.repeats)
    result = {
        **large,
        "n": args.n, "resamples": args.resamples, "metrics_bootstrapped": sorted(statistics_),
        "seconds_all_metrics_vectorised": all_metrics, "seconds_roc_auc_vectorised": auc_only,
        "seconds_roc_auc_sklearn_per_resample": naive, "speedup_roc_auc": naive / auc_only,
        "seconds_delong_10k": delong_small, "seconds_delong_1M": delong_big,
        "multilabel_cases": args.multilabel_n, "multilabel_findings": args.findings,
        "seconds_multilabel_summary_vectorised": summary_vectorised,
        "seconds_multilabel_summary_per_resample": summary_loop,
        "speedup_multilabel_summary": summary_loop / summary_vectorised,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{args.resamples} resamples x {args.n} predictions, median of {args.repeats}:")
    print(f"  all {len(statistics_)} metrics, vectorised   {all_metrics:6.2f} s")
    print(f"  ROC AUC, vectorised              {auc_only:6.2f} s")
    print(f"  ROC AUC, sklearn per resample    {naive:6.2f} s  ({naive / auc_only:.0f}x slower)")
    print(f"  DeLong interval: 10k {delong_small * 1e3:.1f} ms, 1M {delong_big:.2f} s (O(n log n))")
    print(f"multi-label summary, 1000 resamples x {args.multilabel_n} cases x {args.findings} findings:")
    print(f"  vectorised                       {summary_vectorised:6.2f} s")
    print(f"  summary_figures per resample     {summary_loop:6.2f} s  ({summary_loop / summary_vectorised:.0f}x slower)")
    print(f"large split, {args.large_n} cases, 250 resamples:")
    print(f"  levels and 2x2 tables, sparse    {large['seconds_levels_sparse']:6.2f} s")
    print(f"  levels alone, gather + reduceat  {large['seconds_levels_reduceat']:6.2f} s  "
          f"({large['seconds_levels_reduceat'] / large['seconds_levels_sparse']:.1f}x slower)")
    print(f"  2 fixed points, binary search    {large['seconds_fixed_points_search']:6.3f} s")
    print(f"  2 fixed points, pass per point   {large['seconds_fixed_points_pass']:6.3f} s  "
          f"({large['seconds_fixed_points_pass'] / large['seconds_fixed_points_search']:.0f}x slower)")
    print(f"  calibration slopes, from the mean fit {large['seconds_calibration_slope_warm']:6.2f} s")
    print(f"  calibration slopes, from 0            {large['seconds_calibration_slope_from_zero']:6.2f} s  "
          f"({large['seconds_calibration_slope_from_zero'] / large['seconds_calibration_slope_warm']:.1f}x slower)")
    print(f"  whole split assessed (2,000 resamples, every built-in metric): {large['seconds_assess_split']:.1f} s")


def large_split(n: int, repeats: int) -> dict:
    """The costs that grow with a large split: the per-resample score levels and fixed points, and
    one whole `assess` (timed once: it is the sum of the parts)."""
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries
    from medcls.stats.assess import assess
    from medcls.stats.bootstrap import WeightedBinary, newton_logistic, resample_weights
    from medcls.stats.metrics import logit

    rng = np.random.default_rng(1)
    y = (rng.random(n) < 0.1).astype(np.int64)
    p1 = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y)))
    W = next(resample_weights(y, None, 250, 0))

    def gather_and_reduceat():  # the straightforward way, as medcls did until 2026-12-06
        order = np.argsort(-p1, kind="stable")
        ordered = p1[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        in_order = W[:, order]
        return (np.add.reduceat(in_order * (y[order] == 1), starts, axis=1),
                np.add.reduceat(in_order * (y[order] == 0), starts, axis=1))

    stats = WeightedBinary.build(W, y, p1, (p1 >= 0.5).astype(np.int64))
    tpr, fpr = stats.roc
    targets = (0.90, 0.95)
    z, y_float = logit(p1), y.astype(np.float64)
    from_zero = np.zeros((len(W), 2))
    metrics = list(Registries(get_plugin_manager())["metrics"])
    start = time.perf_counter()
    assess(np.stack([1 - p1, p1], 1), y, 0.5, metrics)
    assessed = time.perf_counter() - start
    return {
        "large_n": n,
        "seconds_levels_sparse": timed(lambda: WeightedBinary.build(W, y, p1, y), repeats),
        "seconds_levels_reduceat": timed(gather_and_reduceat, repeats),
        "seconds_fixed_points_search": timed(lambda: [stats.sensitivity_at_specificity(t) for t in targets], repeats),
        "seconds_fixed_points_pass": timed(lambda: [np.where(fpr <= 1 - t + 1e-12, tpr, 0.0).max(1) for t in targets],
                                           repeats),
        "seconds_calibration_slope_warm": timed(stats.calibration_slope, repeats),
        "seconds_calibration_slope_from_zero": timed(
            lambda: newton_logistic(W.astype(np.float64), z, y_float, from_zero), repeats),
        "seconds_assess_split": assessed,
    }


if __name__ == "__main__":
    main()
