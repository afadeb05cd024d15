"""Do medcls's 95 % intervals cover the truth 95 % of the time, for every built-in metric?

Each repetition draws a fresh test set from a known population and asks medcls for its intervals
exactly as a run does (`medcls.stats.assess.intervals`, `operating_figures` and the calibration
slope); the coverage is the fraction of repetitions whose interval holds the population value.

Population: patients are positive with probability 0.3; an image's score is
`s = 1.5 * y + u + e` with a patient effect `u ~ N(0, 0.8^2)` shared by the patient's images
(clustered data: two images per patient) or none (independent: one image each, `e` widened so the
image-level distribution is the same). Calibrated probabilities are P(y = 1 | s); miscalibrated ones
are sigmoid(2 logit(p) - 0.5) (over-confident, shifted). The threshold is 0.5. Population values
come from 4 million images.

    .venv/bin/python benchmarks/interval_coverage.py                # the full table (~15 min on 2 cores)
    .venv/bin/python benchmarks/interval_coverage.py --sizes 40 --repetitions 200 --kinds independent
"""

from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache

import numpy as np
from scipy.stats import norm

PREVALENCE, SHIFT, PATIENT_SD, IMAGE_SD = 0.3, 1.5, 0.8, 1.0
THRESHOLD = 0.5
METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "f1", "mcc", "roc_auc",
           "pr_auc", "brier", "ece")
OPERATING = ("sensitivity_at_specificity_0.90", "specificity_at_sensitivity_0.90")
ALL = METRICS + OPERATING + ("calibration_slope",)


def probabilities(scores: np.ndarray, calibrated: bool) -> np.ndarray:
    sd = np.hypot(PATIENT_SD, IMAGE_SD)
    positive = PREVALENCE * norm.pdf(scores, SHIFT, sd)
    p = positive / (positive + (1 - PREVALENCE) * norm.pdf(scores, 0, sd))
    if calibrated:
        return p
    z = np.log(np.clip(p, 1e-12, 1) / np.clip(1 - p, 1e-12, 1))
    return 1 / (1 + np.exp(-(2 * z - 0.5)))


def draw(rng, images: int, clustered: bool, calibrated: bool):
    """(labels, P(positive), patient ids) of one test set."""
    per_patient = 2 if clustered else 1
    patients = images // per_patient
    y = (rng.random(patients) < PREVALENCE).astype(np.int64)
    if clustered:
        u = rng.normal(0, PATIENT_SD, patients)
        scores = SHIFT * np.repeat(y, 2) + np.repeat(u, 2) + rng.normal(0, IMAGE_SD, 2 * patients)
    else:
        scores = SHIFT * y + rng.normal(0, np.hypot(PATIENT_SD, IMAGE_SD), patients)
    return np.repeat(y, per_patient), probabilities(scores, calibrated), np.repeat(np.arange(patients), per_patient)


@lru_cache(maxsize=None)
def population(calibrated: bool) -> dict:
    """Every metric's population value, from 4 million independent images (the image-level
    distribution is the same with or without patient effects)."""
    from medcls.stats.bootstrap import WeightedBinary
    from medcls.stats.calibration import calibration_slope_intercept

    y, p1, _ = draw(np.random.default_rng(12345), 4_000_000, False, calibrated)
    yhat = (p1 >= THRESHOLD).astype(np.int64)
    order = np.argsort(p1)
    keep = order[:: 4_000_000 // 400_000]  # the slope from a 400k subsample: its SE is < 0.005
    stats = WeightedBinary.build(np.ones((1, len(y)), np.float32), y, p1, yhat)
    values = {name: float(getattr(stats, name)()[0]) for name in METRICS}
    values["sensitivity_at_specificity_0.90"] = float(stats.sensitivity_at_specificity(0.90)[0])
    values["specificity_at_sensitivity_0.90"] = float(stats.specificity_at_sensitivity(0.90)[0])
    values["calibration_slope"] = calibration_slope_intercept(y[keep], p1[keep])["slope"]
    return values


def medcls_intervals(y, p1, patients, clustered: bool, resamples: int, seed: int, names=ALL) -> dict:
    """The intervals a medcls run reports for this test set, by metric name."""
    from medcls.stats.assess import intervals, operating_figures
    from medcls.stats.calibration import calibration_slope_intercept

    metrics = [entry for entry in registries()["metrics"] if entry.name in names]
    probs = np.stack([1 - p1, p1], 1)
    groups = patients if clustered else None
    found = {name: (v["low"], v["high"], v["method"]) for name, v in
             intervals(probs, y, THRESHOLD, metrics, groups=groups, n_resamples=resamples, seed=seed).items()}
    if set(OPERATING) & set(names):
        operating = operating_figures(probs, y, THRESHOLD, groups=groups, n_resamples=resamples, seed=seed)
        for name in OPERATING:
            v = operating.get("values", {}).get(name)
            if v:
                found[name] = (v["low"], v["high"], v["method"])
    if "calibration_slope" in names:
        slope = calibration_slope_intercept(y, p1, groups=groups, n_resamples=resamples, seed=seed)
        if "slope_low" in slope:
            found["calibration_slope"] = (slope["slope_low"], slope["slope_high"], slope["method"])
    return found


@lru_cache(maxsize=1)
def registries():
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries

    return Registries(get_plugin_manager(entry_points=False))


def coverage(images: int, clustered: bool, calibrated: bool, repetitions: int, resamples: int, seed: int = 0,
             names=ALL) -> dict:
    """{metric: {"coverage": fraction, "method": ..., "undefined": repetitions without an interval}}."""
    truth = population(calibrated)
    rng = np.random.default_rng(seed)
    hits = {name: 0 for name in names}
    defined = {name: 0 for name in names}
    methods = {}
    for rep in range(repetitions):
        y, p1, patients = draw(rng, images, clustered, calibrated)
        if len(np.unique(y)) < 2:
            continue
        for name, (low, high, method) in medcls_intervals(y, p1, patients, clustered, resamples, rep,
                                                          names).items():
            if name not in hits or not (np.isfinite(low) and np.isfinite(high)):
                continue
            defined[name] += 1
            hits[name] += low <= truth[name] <= high
            methods[name] = method
    return {name: {"coverage": hits[name] / defined[name] if defined[name] else float("nan"),
                   "method": methods.get(name, "none"), "undefined": repetitions - defined[name]} for name in names}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 200, 2000])
    parser.add_argument("--kinds", nargs="+", default=["independent", "clustered"])
    parser.add_argument("--calibration", nargs="+", default=["calibrated", "miscalibrated"])
    parser.add_argument("--repetitions", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", help="write the table here too")
    args = parser.parse_args()
    rows = []
    for kind in args.kinds:
        for calibration in args.calibration:
            for size in args.sizes:
                start = time.perf_counter()
                table = coverage(size, kind == "clustered", calibration == "calibrated", args.repetitions,
                                 args.resamples)
                rows.append({"kind": kind, "calibration": calibration, "images": size, "table": table,
                             "seconds": round(time.perf_counter() - start, 1)})
                print(f"{kind} {calibration} n={size} ({rows[-1]['seconds']} s)", flush=True)
    print()
    header = "| metric | method (independent / clustered) | " + " | ".join(
        f"{r['kind'][:5]} {r['calibration'][:3]} {r['images']}" for r in rows) + " |"
    print(header)
    print("|" + "---|" * (2 + len(rows)))
    for name in ALL:
        methods = " / ".join(dict.fromkeys(r["table"][name]["method"] for r in rows))
        cells = []
        for r in rows:
            value = r["table"][name]["coverage"]
            flag = "" if not np.isfinite(value) or 0.93 <= value <= 0.97 else ("*" if value < 0.93 else "+")
            cells.append(f"{value:.3f}{flag}")
        print(f"| {name} | {methods} | " + " | ".join(cells) + " |")
    print("\n* below 0.93, + above 0.97; settings:", json.dumps(vars(args)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
