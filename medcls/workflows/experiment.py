"""One-factor experiments: vary one setting across values, everything else fixed (same split, same
seeds), repeat over seeds, and say which differences exceed the seed-to-seed spread."""

from __future__ import annotations

import csv
import dataclasses
import difflib
import math
import time
from pathlib import Path

import numpy as np

from medcls.config import FIELDS, TrainConfig, coerce
from medcls.errors import ConfigError
from medcls.logs import logger, quiet, stage
from medcls.reports.plots import plain, subplots
from medcls.workflows.tracking import close_trackers, open_trackers
from medcls.workflows.train import check_names, train

# Virtual settings: one name standing for a combination of real keys.
FINETUNE = {
    "scratch": {"pretrained": False},  # random initialisation, every block trained
    "frozen": {"pretrained": True, "finetune_epochs": 0},  # pretrained backbone frozen, new head only
    "top": {"pretrained": True},  # then the top `unfreeze_blocks` blocks at a lower rate
    "all": {"pretrained": True, "unfreeze_blocks": -1},  # then every block at a lower rate
}
VIRTUAL = {"finetune": FINETUNE}
TABLE_METRICS = ("roc_auc", "sensitivity", "specificity", "accuracy")


def parse_vary(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    key = key.strip().replace("-", "_")
    options = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not options:  # one value: the seed spread of a single setting
        raise ConfigError(f"--vary {text!r}: give KEY=VALUE1[,VALUE2,...]")
    if key not in FIELDS and key not in VIRTUAL:
        close = difflib.get_close_matches(key, [*FIELDS, *VIRTUAL], n=1)
        hint = f": did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"--vary {key!r} is not a configuration key (nor one of {', '.join(VIRTUAL)}){hint}")
    repeated = sorted({v for v in options if options.count(v) > 1})
    if repeated:
        raise ConfigError(f"--vary {key}: {repeated[0]!r} is given twice: list each value once")
    if key in VIRTUAL:
        unknown = [v for v in options if v not in VIRTUAL[key]]
        if unknown:
            raise ConfigError(f"--vary {key}: unknown value {unknown[0]!r}; use {', '.join(VIRTUAL[key])}")
    return key, options


def settings_for(key: str, value: str) -> dict:
    if key in VIRTUAL:
        return dict(VIRTUAL[key][value])
    return {key: coerce(key, value, "--vary")}


def exceeds_spread(a: np.ndarray, b: np.ndarray) -> bool | None:
    """Whether two settings' mean results differ by more than twice the standard error of the
    difference estimated from the seed-to-seed spread (about a 95% criterion); None when there is
    no spread to judge by (one seed, or identical results across seeds)."""
    if len(a) < 2 or len(b) < 2:
        return None
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    difference = abs(a.mean() - b.mean())
    if se < 1e-9:  # identical results across seeds (floating-point noise aside)
        return False if difference < 1e-9 else None
    return bool(difference > 2 * se)


def run_experiment(base: TrainConfig, key: str, values: list[str], seeds: list[int], registries, *, out: Path) -> dict:
    """Train every (value, seed) with the split fixed by the base seed; tabulate and plot test results.
    Every value and seed is checked before the first run trains, so a misspelled last value does
    not stop the experiment hours in."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"experiment seeds {list(seeds)}: give at least one seed, each once (e.g. 0,1,2)")
    for value in values:
        check_names(dataclasses.replace(base, **settings_for(key, value)), registries)
    out.mkdir(parents=True, exist_ok=True)
    split_seed = base.split_seed if base.split_seed is not None else base.seed
    trackers = open_trackers(base, registries, out)  # the experiment's runs are logged as its nested runs
    rows = []
    with stage(f"experiment {key}: {len(values) * len(seeds)} runs", total=len(values) * len(seeds),
               unit="run") as advance:
        for value in values:
            for seed in seeds:
                config = dataclasses.replace(base, **settings_for(key, value), seed=seed, split_seed=split_seed,
                                             out=str(out / f"{key}={value}" / f"seed{seed}"))
                logger.info(f"experiment: {key}={value}, seed {seed}")
                started = time.perf_counter()
                with quiet():
                    summary = train(config, registries, parent_trackers=trackers)
                test, gap_ = summary["results"]["test"], summary["results"]["gap"]
                row = {"value": value, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
                       "epochs": summary["epochs_run"], "train_test_gap_roc_auc": gap_.get("roc_auc")}
                for metric in TABLE_METRICS:
                    interval = summary["intervals"]["test"].get(metric, {})
                    row[f"test_{metric}"] = test.get(metric)
                    row[f"test_{metric}_low"], row[f"test_{metric}_high"] = interval.get("low"), interval.get("high")
                rows.append(row)
                logger.info(f"  test ROC AUC {row['test_roc_auc']:.3f}, gap {row['train_test_gap_roc_auc']:+.3f}, "
                    f"{row['seconds']:.0f}s")
                advance()
    summary = summarise(rows, values)
    write_outputs(rows, summary, key, values, out)
    close_trackers(trackers, {f"{key}.{tracked_name(value)}.test_roc_auc_mean": s["roc_auc_mean"]
                              for value, s in summary.items() if np.isfinite(s["roc_auc_mean"])}, out)
    return {"rows": rows, "summary": summary, "out": str(out)}


def tracked_name(value: str) -> str:
    """A setting's value as a metric-name part trackers accept (letters, digits, _ - . /)."""
    return "".join(ch if ch.isalnum() or ch in "_-./" else "_" for ch in value)


def finite_mean(values) -> float:
    """The mean of the finite values; nan when there are none (a metric a run could not compute)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def summarise(rows: list[dict], values: list[str]) -> dict:
    baseline_rows = [r for r in rows if r["value"] == values[0]]
    baseline = np.array([r["test_roc_auc"] for r in baseline_rows], dtype=float)
    # The test set's own sampling uncertainty: the baseline's mean 95% interval for ROC AUC.
    base_low = float(np.nanmean([r["test_roc_auc_low"] for r in baseline_rows]))
    base_high = float(np.nanmean([r["test_roc_auc_high"] for r in baseline_rows]))
    summary = {}
    for value in values:
        chosen = [r for r in rows if r["value"] == value]
        auc = np.array([r["test_roc_auc"] for r in chosen], dtype=float)
        summary[value] = {
            "runs": len(chosen),
            **{f"{m}_mean": finite_mean([r.get(f"test_{m}", np.nan) for r in chosen]) for m in TABLE_METRICS},
            "roc_auc_sd": float(np.std(auc, ddof=1)) if len(auc) > 1 else float("nan"),
            "gap_mean": float(np.nanmean([r["train_test_gap_roc_auc"] for r in chosen])),
            "seconds_mean": float(np.mean([r["seconds"] for r in chosen])),
            "vs_baseline_exceeds_spread": None if value == values[0] else exceeds_spread(auc, baseline),
            "within_baseline_interval": None if value == values[0] else bool(base_low <= np.nanmean(auc) <= base_high),
        }
    return summary


def fmt(row: dict, metric: str) -> str:
    """A run's test value with its 95 % interval (the value alone where none was computed)."""
    value, low, high = (row.get(f"test_{metric}{part}") for part in ("", "_low", "_high"))
    if value is None:
        return "-"
    return f"{value:.3f}" if low is None or high is None else f"{value:.3f} ({low:.3f}-{high:.3f})"


def write_outputs(rows, summary, key, values, out: Path) -> None:
    with open(out / "experiment.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Experiment: {key} = {', '.join(values)}", "",
             f"Test split fixed; {summary[values[0]]['runs']} seed(s) per value. Means over seeds. "
             "'Beyond seed spread' compares each value with the first: |difference| > 2 x its standard "
             "error from the seed-to-seed spread (n/a: no spread to judge by). 'Inside test CI' says "
             f"whether the mean ROC AUC lies inside {values[0]}'s mean 95% interval, i.e. whether the "
             "test set itself could tell the two apart.", "",
             "| value | test ROC AUC (sd) | sensitivity | specificity | accuracy | train-test gap | s/run | "
             f"beyond seed spread | inside {values[0]}'s test CI |", "|---|---|---|---|---|---|---|---|---|"]
    for value in values:
        s = summary[value]
        spread = s["vs_baseline_exceeds_spread"]
        inside = s["within_baseline_interval"]
        spread_text = "-" if value == values[0] else "n/a" if spread is None else "yes" if spread else "no"
        inside_text = "-" if inside is None else "yes" if inside else "no"
        lines.append(f"| {value} | {s['roc_auc_mean']:.3f} ({s['roc_auc_sd']:.3f}) | {s['sensitivity_mean']:.3f} | "
                     f"{s['specificity_mean']:.3f} | {s['accuracy_mean']:.3f} | {s['gap_mean']:+.3f} | {s['seconds_mean']:.0f} | {spread_text} | "
                     f"{inside_text} |")
    lines += ["", "Per run (test values with 95% intervals):", "",
              "| value | seed | ROC AUC | sensitivity | specificity | accuracy | gap | epochs | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['value']} | {r['seed']} | {fmt(r, 'roc_auc')} | {fmt(r, 'sensitivity')} | "
                     f"{fmt(r, 'specificity')} | {fmt(r, 'accuracy')} | {r['train_test_gap_roc_auc']:+.3f} | {r['epochs']} | {r['seconds']} |")
    lines += ["", "![experiment](experiment.png)", ""]
    (out / "experiment.md").write_text("\n".join(lines), encoding="utf-8")
    plot(rows, values, key, out / "experiment.png")


def plot(rows, values, key, path: Path) -> None:
    fig, ax = subplots(figsize=(1.8 * len(values) + 2, 4))
    for i, value in enumerate(values):
        chosen = [r for r in rows if r["value"] == value]
        offsets = np.linspace(-0.15, 0.15, len(chosen)) if len(chosen) > 1 else [0.0]
        for offset, r in zip(offsets, chosen):
            low, high = r["test_roc_auc_low"], r["test_roc_auc_high"]
            ax.errorbar(i + offset, r["test_roc_auc"], yerr=[[r["test_roc_auc"] - low], [high - r["test_roc_auc"]]],
                        fmt="o", color=f"C{i}", capsize=3)
    ax.set_xticks(range(len(values)), [plain(v) for v in values])
    ax.set_xlabel(key)
    ax.set_ylabel("test ROC AUC (95% CI), one point per seed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def rewrite_from_csv(out: Path, key: str) -> dict:
    """Re-tabulate a finished experiment from its experiment.csv (e.g. after changing the summary)."""
    def parse(column: str, text: str):
        if column == "value":
            return text
        if column in ("seed", "epochs"):
            return int(float(text))
        return float(text) if text not in ("", "None") else float("nan")

    with open(out / "experiment.csv", newline="") as fh:
        rows = [{k: parse(k, v) for k, v in r.items()} for r in csv.DictReader(fh)]
    values = list(dict.fromkeys(r["value"] for r in rows))
    summary = summarise(rows, values)
    write_outputs(rows, summary, key, values, out)
    return summary
