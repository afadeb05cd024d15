"""Do medcls's 95% intervals cover the truth 95% of the time? Binormal scores (negatives N(0, 1),
positives N(delta, 1)) have a known ROC AUC = Phi(delta / sqrt(2)) and, at threshold t, a known
sensitivity 1 - Phi(t - delta) and specificity Phi(t). Each repetition draws a fresh sample.

    .venv/bin/python benchmarks/interval_coverage.py [--repetitions 1000] [--positives 50 --negatives 100]
"""

import argparse
import json
import time

import numpy as np
from scipy.stats import norm


def simulate(repetitions, positives, negatives, delta, threshold, bootstrap_resamples, seed=0):
    from medcls.stats.bootstrap import WeightedBinary, bootstrap_binary
    from medcls.stats.intervals import delong_interval, wilson

    rng = np.random.default_rng(seed)
    true_auc = norm.cdf(delta / np.sqrt(2))
    true_sens, true_spec = 1 - norm.cdf(threshold - delta), norm.cdf(threshold)
    y = np.r_[np.ones(positives, int), np.zeros(negatives, int)]
    hits = {"roc_auc DeLong": 0, "roc_auc bootstrap": 0, "sensitivity Wilson": 0, "specificity Wilson": 0,
            "sensitivity bootstrap": 0}
    for rep in range(repetitions):
        scores = np.r_[rng.normal(delta, 1, positives), rng.normal(0, 1, negatives)]
        p1 = norm.cdf(scores)  # any monotone map to [0, 1]
        yhat = (scores >= threshold).astype(int)
        low, high = delong_interval(y, p1)
        hits["roc_auc DeLong"] += low <= true_auc <= high
        tp, tn = int(yhat[:positives].sum()), int((1 - yhat[positives:]).sum())
        low, high = wilson(tp, positives)
        hits["sensitivity Wilson"] += low <= true_sens <= high
        low, high = wilson(tn, negatives)
        hits["specificity Wilson"] += low <= true_spec <= high
        if bootstrap_resamples:
            boot = bootstrap_binary(y, p1, yhat, {"auc": WeightedBinary.roc_auc, "sens": WeightedBinary.sensitivity},
                                    n_resamples=bootstrap_resamples, seed=rep)
            hits["roc_auc bootstrap"] += boot["auc"][0] <= true_auc <= boot["auc"][1]
            hits["sensitivity bootstrap"] += boot["sens"][0] <= true_sens <= boot["sens"][1]
    return {name: count / repetitions for name, count in hits.items() if bootstrap_resamples or "bootstrap" not in name}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repetitions", type=int, default=1000)
    parser.add_argument("--positives", type=int, default=50)
    parser.add_argument("--negatives", type=int, default=100)
    parser.add_argument("--delta", type=float, default=1.5)
    parser.add_argument("--threshold", type=float, default=0.75)
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples per repetition (0: skip)")
    args = parser.parse_args()
    start = time.perf_counter()
    coverage = simulate(args.repetitions, args.positives, args.negatives, args.delta, args.threshold, args.bootstrap)
    print(json.dumps({"settings": vars(args), "coverage": coverage, "seconds": time.perf_counter() - start}, indent=2))
    for name, value in coverage.items():
        verdict = "ok" if 0.93 <= value <= 0.97 else "OUTSIDE 93-97%"
        print(f"{name:24s} {value:.3f}  {verdict}")


if __name__ == "__main__":
    main()
