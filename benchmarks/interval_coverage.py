"""Do medcls's 95 % intervals cover the truth 95 % of the time, for every figure it prints, on test
sets shaped like clinical ones (few patients, several images each, rare positives)?

The grid was fixed before any result was looked at (issue 43): images n in {40, 100, 300, 1000} x
independent (one image a patient) or clustered (2-4 images a patient, a latent intra-patient
correlation of 0.6) x patient prevalence {0.1, 0.3, 0.5} x two models (calibrated, over-confident),
200 replicates a cell. Each replicate draws a fresh test set and asks medcls for its intervals as a
run does (`medcls.stats.assess.assess`, the per-split function training, evaluate, score and
cross-validation call, and the calibration slope); every replicate is counted: an interval that
holds the population value is a hit, one that does not, or has a NaN bound, a miss, and a figure
printed without an interval (medcls's refusal, or a split with one class) a refusal, reported apart.
Coverage is hits / (hits + misses), with its Monte Carlo standard error.

Population: a patient is positive with the prevalence; each of its images has the latent score
s = 1.5 y + u + e, u ~ N(0, 0.6) shared by the patient's images, e ~ N(0, 0.4) (independent data:
u + e drawn afresh per image). So s | y ~ N(1.5 y, 1) for every image either way, and the population
value of every figure follows by numerical integration over s (no medcls code): calibrated
probabilities are P(y = 1 | s), over-confident ones sigmoid(2 logit P - 0.5); the threshold is 0.5.

Two more parts: `--part compare`, the type-I error and power of `medcls compare`'s paired AUC test
(two models sharing half of each patient's effect, each with its own other half; equal AUCs, or
AUC 0.86 against 0.92) with and without the patient column; `--part subgroups`, the family-wise false-alarm rate of the subgroup comparison of
four sites (assigned per patient, no site effect: every flag is false); `--part operating`, how often
a threshold chosen on validation reaches its target sensitivity in the population (sizes are then
validation positives).

    .venv/bin/python benchmarks/interval_coverage.py --json cov.json       # the grid (~1 h on 2 cores)
    .venv/bin/python benchmarks/interval_coverage.py --part compare --repetitions 400
    .venv/bin/python benchmarks/interval_coverage.py --sizes 100 --kinds clustered --prevalences 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import lru_cache
from multiprocessing import Pool

import numpy as np
from scipy.stats import norm

SHIFT, PATIENT_VAR, IMAGE_VAR = 1.5, 0.6, 0.4
THRESHOLD = 0.5
METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy", "f1", "mcc", "roc_auc",
           "pr_auc", "brier", "ece")
OPERATING = ("sensitivity_at_specificity_0.90", "sensitivity_at_specificity_0.95",
             "specificity_at_sensitivity_0.90", "specificity_at_sensitivity_0.95")
ALL = METRICS + OPERATING + ("calibration_slope",)
GRID = dict(sizes=(40, 100, 300, 1000), kinds=("independent", "clustered"), prevalences=(0.1, 0.3, 0.5),
            models=("calibrated", "overconfident"))
ECE_BINS = 15  # medcls.stats.metrics.ECE_BINS


def reported(p: np.ndarray, model: str) -> np.ndarray:
    """The probability the model reports, from the true P(y = 1 | s)."""
    if model == "calibrated":
        return p
    z = np.log(np.clip(p, 1e-300, 1)) - np.log(np.clip(1 - p, 1e-300, 1))
    return 1 / (1 + np.exp(-(2 * z - 0.5)))


def true_probability(s: np.ndarray, prevalence: float) -> np.ndarray:
    log_pos = np.log(prevalence) + norm.logpdf(s, SHIFT, 1)
    log_neg = np.log(1 - prevalence) + norm.logpdf(s, 0, 1)
    return 1 / (1 + np.exp(log_neg - log_pos))


@lru_cache(maxsize=None)
def population(prevalence: float, model: str) -> dict:
    """Every figure's population value, by integration over the score s on a fine grid."""
    s = np.linspace(-9, 11, 400_001)
    ds = s[1] - s[0]
    f_pos, f_neg = norm.pdf(s, SHIFT, 1), norm.pdf(s, 0, 1)
    r = reported(true_probability(s, prevalence), model)
    cut = s[np.searchsorted(r, THRESHOLD)]  # r rises with s: decided positive above `cut`
    sens, spec = norm.sf(cut - SHIFT), norm.cdf(cut)
    pi = prevalence
    tp, fn, tn, fp = pi * sens, pi * (1 - sens), (1 - pi) * spec, (1 - pi) * (1 - spec)
    ppv, npv = tp / (tp + fp), tn / (tn + fn)
    values = {"sensitivity": sens, "specificity": spec, "ppv": ppv, "npv": npv, "accuracy": tp + tn,
              "balanced_accuracy": (sens + spec) / 2, "f1": 2 * ppv * sens / (ppv + sens),
              "mcc": (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)),
              "roc_auc": norm.cdf(SHIFT / math.sqrt(2))}
    # Average precision: the integral of the precision at each threshold over the recall it gives.
    recall_above, fpr_above = norm.sf(s - SHIFT), norm.sf(s)
    precision = pi * recall_above / np.maximum(pi * recall_above + (1 - pi) * fpr_above, 1e-300)
    values["pr_auc"] = float((precision * f_pos).sum() * ds)
    values["brier"] = float(((pi * f_pos * (1 - r) ** 2) + ((1 - pi) * f_neg * r ** 2)).sum() * ds)
    bins = np.minimum((r * ECE_BINS).astype(int), ECE_BINS - 1)
    gap = np.bincount(bins, weights=pi * f_pos - (pi * f_pos + (1 - pi) * f_neg) * r, minlength=ECE_BINS) * ds
    values["ece"] = float(np.abs(gap).sum())
    for target in (0.90, 0.95):
        values[f"sensitivity_at_specificity_{target:.2f}"] = float(norm.sf(norm.ppf(target) - SHIFT))
        values[f"specificity_at_sensitivity_{target:.2f}"] = float(norm.cdf(SHIFT + norm.ppf(1 - target)))
    # logit P = (logit r + 0.5) / 2 for the over-confident model: the calibration slope is 1/2.
    values["calibration_slope"] = 1.0 if model == "calibrated" else 0.5
    return {k: float(v) for k, v in values.items()}


def draw(rng, images: int, clustered: bool, prevalence: float, model: str, shift: float = SHIFT):
    """(labels, reported P(positive), patient ids) of one test set of `images` images."""
    if clustered:
        sizes = rng.integers(2, 5, images)  # more than enough patients; cut at `images` images
        sizes = sizes[: np.searchsorted(np.cumsum(sizes), images) + 1]
        sizes[-1] -= sizes.sum() - images
        sizes = sizes[sizes > 0]
    else:
        sizes = np.ones(images, dtype=np.int64)
    y = (rng.random(len(sizes)) < prevalence).astype(np.int64)
    patients = np.repeat(np.arange(len(sizes)), sizes)
    u = rng.normal(0, math.sqrt(PATIENT_VAR), len(sizes))[patients] if clustered else 0.0
    noise = rng.normal(0, math.sqrt(IMAGE_VAR if clustered else 1.0), images)
    s = shift * y[patients] + u + noise
    return y[patients], reported(true_probability(s, prevalence), model), patients


@lru_cache(maxsize=1)
def metrics():
    from medcls.plugins.manager import get_plugin_manager
    from medcls.plugins.registry import Registries

    registries = Registries(get_plugin_manager(entry_points=False))
    return [entry for entry in registries["metrics"] if entry.name in METRICS]


def medcls_intervals(y, p1, patients, clustered: bool, resamples: int, seed: int) -> dict:
    """{figure: (low, high, method)} as a run reports them; low None where medcls refuses."""
    from medcls.stats.assess import assess
    from medcls.stats.calibration import calibration_slope_intercept

    probs = np.stack([1 - p1, p1], 1)
    groups = patients if clustered else None
    found = assess(probs, y, THRESHOLD, metrics(), patients=groups, n_resamples=resamples, seed=seed)
    out = {name: (v.get("low"), v.get("high"), v.get("refused") or v["method"]) for name, v in found["intervals"].items()}
    for name, v in found["operating"].get("values", {}).items():
        out[name] = (v.get("low"), v.get("high"), v.get("refused") or v["method"])
    slope = calibration_slope_intercept(y, p1, groups=groups, n_resamples=resamples, seed=seed)
    out["calibration_slope"] = (slope.get("slope_low"), slope.get("slope_high"),
                                slope.get("refused") or slope.get("method") or slope.get("not_computable", "none"))
    return out


def coverage_cell(cell: dict) -> dict:
    """One cell of the grid: per figure hits, misses, refusals, coverage and its Monte Carlo SE."""
    truth = population(cell["prevalence"], cell["model"])
    rng = np.random.default_rng(cell["seed"])
    counts = {name: {"hit": 0, "miss": 0, "refused": 0} for name in ALL}
    methods = {name: {} for name in ALL}
    start = time.perf_counter()
    for rep in range(cell["repetitions"]):
        y, p1, patients = draw(rng, cell["images"], cell["kind"] == "clustered", cell["prevalence"], cell["model"])
        found = medcls_intervals(y, p1, patients, cell["kind"] == "clustered", cell["resamples"], rep)
        for name in ALL:
            low, high, method = found.get(name, (None, None, "not reported"))
            if low is None or high is None:
                counts[name]["refused"] += 1
                outcome = "refused"
            else:
                outcome = "hit" if (math.isfinite(low) and math.isfinite(high) and low <= truth[name] <= high) else "miss"
                counts[name][outcome] += 1
            key = method if outcome != "refused" else f"refused: {method}"
            key = key.split(" (")[0] if outcome != "refused" else key[:60]
            methods[name][key] = methods[name].get(key, 0) + 1
    table = {}
    for name in ALL:
        c = counts[name]
        printed = c["hit"] + c["miss"]
        cov = c["hit"] / printed if printed else float("nan")
        table[name] = {**c, "coverage": cov, "mc_se": math.sqrt(cov * (1 - cov) / printed) if printed else float("nan"),
                       "methods": methods[name]}
    return {**{k: cell[k] for k in ("kind", "model", "prevalence", "images")}, "table": table,
            "seconds": round(time.perf_counter() - start, 1)}


def mark(cov: float, se: float) -> str:
    if not math.isfinite(cov):
        return ""
    tolerance = 2 * max(se, 1e-9)
    return "*" if cov < 0.93 - tolerance else "+" if cov > 0.97 + tolerance else ""


def print_grid(rows: list[dict]) -> None:
    """One table per kind x model: a row per figure, a column per (prevalence, n): coverage, with
    the refused share after a slash where medcls refused some replicates."""
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):
            chosen = [r for r in rows if r["kind"] == kind and r["model"] == model]
            if not chosen:
                continue
            print(f"\n{kind}, {model} model: coverage (refused share); * below 0.93 - 2 SE, + above 0.97 + 2 SE\n")
            print("| figure | " + " | ".join(f"p={r['prevalence']} n={r['images']}" for r in chosen) + " |")
            print("|---|" + "---|" * len(chosen))
            for name in ALL:
                cells = []
                for r in chosen:
                    t = r["table"][name]
                    total = t["hit"] + t["miss"] + t["refused"]
                    refused = f" ({t['refused'] / total:.0%} ref.)" if t["refused"] else ""
                    cells.append("refused" if not (t["hit"] + t["miss"]) else
                                 f"{t['coverage']:.3f}{mark(t['coverage'], t['mc_se'])}{refused}")
                print(f"| {name} | " + " | ".join(cells) + " |")


def compare_part(repetitions: int, sizes, seed: int = 0) -> list[dict]:
    """Type-I error (equal AUCs) and power (AUC 0.86 vs 0.92) of the paired AUC test at 0.05."""
    from medcls.stats.intervals import paired_delong

    rows = []
    for kind in ("independent", "clustered"):
        for images in sizes:
            for effect in (0.0, 0.5):
                rng = np.random.default_rng(seed)
                rejected = {"with patients": 0, "ignoring patients": 0}
                done = 0
                for _ in range(repetitions):
                    clustered = kind == "clustered"
                    y, _, patients = draw(rng, images, clustered, 0.3, "calibrated")
                    if len(np.unique(y)) < 2:
                        continue
                    # The models share half of each patient's effect (the anatomy both see) and each has
                    # its own other half (what each makes of that patient), as two real models would;
                    # the image noise is their own too.
                    half = math.sqrt(PATIENT_VAR / 2)
                    count = patients.max() + 1
                    shared = rng.normal(0, half, count)[patients] if clustered else 0.0
                    own_a, own_b = ((rng.normal(0, half, count)[patients], rng.normal(0, half, count)[patients])
                                    if clustered else (0.0, 0.0))
                    sd = math.sqrt(IMAGE_VAR if clustered else 1.0)
                    a = SHIFT * y + shared + own_a + rng.normal(0, sd, images)
                    b = (SHIFT + effect) * y + shared + own_b + rng.normal(0, sd, images)
                    done += 1
                    rejected["with patients"] += paired_delong(y, a, b, patients if clustered else None)["p_value"] < 0.05
                    rejected["ignoring patients"] += paired_delong(y, a, b)["p_value"] < 0.05
                rows.append({"kind": kind, "images": images, "auc_difference": round(
                    norm.cdf((SHIFT + effect) / math.sqrt(2)) - norm.cdf(SHIFT / math.sqrt(2)), 3), "replicates": done,
                    **{k: v / done for k, v in rejected.items()}})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def subgroup_part(repetitions: int, sizes, seed: int = 0) -> list[dict]:
    """Family-wise false alarms of compare_subgroups over 4 sites with no site effect."""
    from medcls.stats.subgroups import compare_subgroups

    rows = []
    for kind in ("independent", "clustered"):
        for images in sizes:
            rng = np.random.default_rng(seed)
            any_flag = flags = tests = done = 0
            for _ in range(repetitions):
                clustered = kind == "clustered"
                y, p1, patients = draw(rng, images, clustered, 0.3, "calibrated")
                if len(np.unique(y)) < 2:
                    continue
                site = rng.integers(0, 4, patients.max() + 1)[patients]
                found = compare_subgroups(np.stack([1 - p1, p1], 1), y, THRESHOLD, site.astype(str),
                                          patients=patients if clustered else None, n_resamples=500, seed=0)
                marks = [f["flagged"] for v in found.values() if "not_compared" not in v for f in v.values()]
                done += 1
                tests += len(marks)
                flags += sum(marks)
                any_flag += any(marks)
            rows.append({"kind": kind, "images": images, "replicates": done, "family_wise_false_alarm": any_flag / done,
                         "flags_per_comparison": flags / max(tests, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def operating_part(repetitions: int, sizes, seed: int = 0) -> list[dict]:
    """How often the threshold chosen on validation reaches its target sensitivity in the
    population: target_sensitivity against confident_sensitivity (validation: `sizes` positives)."""
    from medcls.errors import DataError
    from medcls.stats.operating_points import choose_threshold

    rows = []
    for positives in sizes:
        for target in (0.90, 0.95):
            rng = np.random.default_rng(seed)
            reached = {"target_sensitivity": 0, "confident_sensitivity": 0}
            refused = 0
            for _ in range(repetitions):
                y = np.r_[np.ones(positives, np.int64), np.zeros(2 * positives, np.int64)]
                s = SHIFT * y + rng.normal(0, 1, len(y))  # P(positive) is monotone in s: thresholds on s
                for rule in reached:
                    try:
                        t = choose_threshold(rule, y, s, target=target)
                    except DataError:
                        refused += rule == "confident_sensitivity"
                        continue
                    reached[rule] += norm.sf(t - SHIFT) >= target
            rows.append({"validation_positives": positives, "target": target, "replicates": repetitions,
                         **{f"{rule} reaches": v / repetitions for rule, v in reached.items()},
                         "confident_sensitivity refused": refused / repetitions})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("intervals", "compare", "subgroups", "operating"), default="intervals")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GRID["sizes"]))
    parser.add_argument("--kinds", nargs="+", default=list(GRID["kinds"]))
    parser.add_argument("--prevalences", type=float, nargs="+", default=list(GRID["prevalences"]))
    parser.add_argument("--models", nargs="+", default=list(GRID["models"]))
    parser.add_argument("--repetitions", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (a run's default)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if args.part == "compare":
        rows = compare_part(args.repetitions, args.sizes)
    elif args.part == "subgroups":
        rows = subgroup_part(args.repetitions, args.sizes)
    elif args.part == "operating":
        rows = operating_part(args.repetitions, args.sizes)
    else:
        cells = [dict(kind=k, model=m, prevalence=p, images=n, repetitions=args.repetitions, resamples=args.resamples,
                      seed=1000 * i) for i, (k, m, p, n) in enumerate(
                     (k, m, p, n) for k in args.kinds for m in args.models for p in args.prevalences for n in args.sizes)]
        with Pool(args.workers) as pool:
            rows = []
            for row in pool.imap(coverage_cell, cells):
                rows.append(row)
                print(f"{row['kind']} {row['model']} prevalence {row['prevalence']} n={row['images']}: "
                      f"{row['seconds']} s", flush=True)
        print_grid(rows)
    print("\nsettings:", json.dumps(vars(args)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": vars(args), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
