"""The recipe suite: medcls's defaults on every development set x seeds, and a candidate setting
against them, paired by set and seed (`python benchmarks/suite.py`).

    .venv/bin/python benchmarks/suite.py --json docs/bench/suite-defaults.json
    .venv/bin/python benchmarks/suite.py --candidate image_size=128 --baseline docs/bench/suite-defaults.json

Each run is the command a user types on that set: `medcls train --data SET --seed K`, with only the
keys that describe the data (which column holds the label, where the files are), never recipe keys.
The figure is the test split's ROC AUC (macro one-vs-rest for several classes) with its interval,
beside accuracy and balanced accuracy and the run's minutes.

The rule for defaults (docs/benchmarks.md, "Changing a default"): a candidate replaces today's
default only when the paired difference in test ROC AUC, candidate minus default, averaged over
every set and seed, is above 0 with its 95 % bootstrap interval (sets resampled, then seeds within
each set) above 0, and no set's mean difference is below minus that set's seed spread (the standard
deviation of the default's figure over the seeds). A run that fails counts as ROC AUC 0.5.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class DevSet:
    """A development set: where it is and the keys that describe it (not how to train on it)."""

    name: str
    data: str
    keys: dict = field(default_factory=dict)
    note: str = ""

    def available(self) -> bool:
        return self.data == "synthetic" or Path(self.data).exists()


SETS = (
    DevSet("brain-tumour", str(SHARED / "brain-tumour-mri"), note="253 JPEG/PNG slices, binary, no split given "
           "(medcls's split keeps the 22 duplicate sets on one side)"),
    DevSet("ct-contrast", str(SHARED / "ct-contrast-dicom" / "overview.csv"),
           {"path_column": "dicom_name", "label_column": "Contrast", "image_root": "dicom_dir",
            "patient_from_dicom": True}, note="100 DICOM slices of 54 patients, binary, split by patient"),
    DevSet("retinamnist", str(SHARED / "medmnist" / "retinamnist.npz"), note="1,600 fundus images at 28 px, "
           "5 grades, the official split"),
    DevSet("vesselmnist3d", str(SHARED / "medmnist" / "vesselmnist3d.npz"), note="1,908 volumes at 28^3, binary, "
           "the official split"),
    DevSet("pbc-blood", str(SHARED / "pbc-blood"), note="4,000 blood-cell JPEGs at native size, 8 classes, "
           "image-level split"),
)
EXTRA = {"synthetic": DevSet("synthetic", "synthetic", note="the built-in phantoms (for checking the suite)")}


def parse_settings(values) -> dict:
    """KEY=VALUE pairs read as the CLI's --set reads them."""
    from medcls.cli import yaml_value

    settings = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r} is not KEY=VALUE (e.g. image_size=128)")
        settings[key.strip()] = yaml_value(value.strip())
    return settings


def run_one(devset: DevSet, seed: int, settings: dict, workdir: Path, arm: str) -> dict:
    """One training with `settings` over the defaults: its test figures and minutes."""
    import medcls

    started = time.perf_counter()
    out = workdir / f"{arm}-{devset.name}-seed{seed}"
    # One test split per set whatever the seed: a set's own split, else medcls's patient-grouped
    # split drawn with split seed 0, so seeds vary training only and pairs compare the same cases.
    fixed = {} if "split_seed" in settings else {"split_seed": 0}
    try:
        run = medcls.train(devset.data, out=str(out), seed=seed, **devset.keys, **fixed, **settings)
    except medcls.MedclsError as exc:  # a recipe that cannot run on a set is a result, and the worst one
        return {"set": devset.name, "seed": seed, "settings": settings, "roc_auc": None, "low": None, "high": None,
                "accuracy": None, "balanced_accuracy": None, "n_test": 0, "error": str(exc).splitlines()[0],
                "minutes": (time.perf_counter() - started) / 60}
    test = run.metrics.test
    auc = test["roc_auc"]
    row = {"set": devset.name, "seed": seed, "settings": settings, "roc_auc": auc.value, "low": auc.low,
           "high": auc.high, "accuracy": test["accuracy"].value,
           "balanced_accuracy": test["balanced_accuracy"].value if "balanced_accuracy" in test else None,
           "n_test": test.n, "minutes": (time.perf_counter() - started) / 60}
    return row


FAILED = 0.5  # a run that failed scores as chance: every replicate counts, none is dropped


def figure(row: dict) -> float:
    return FAILED if row.get("roc_auc") is None else row["roc_auc"]


def spread(values) -> float:
    """The seed spread: the sample standard deviation over seeds (0 for a single seed)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def paired(baseline: list[dict], candidate: list[dict], *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Candidate minus default in test ROC AUC, paired by set and seed: per set (mean difference,
    the default's seed spread, whether the set loses more than its spread), the mean over every
    set and seed with a two-level bootstrap interval (sets, then seeds within a set), the worst
    set, and whether the rule for changing a default holds."""
    base = {(r["set"], r["seed"]): figure(r) for r in baseline}
    pairs: dict[str, list[float]] = {}
    for row in candidate:
        key = (row["set"], row["seed"])
        if key not in base:
            raise click.UsageError(f"the default has no run of {row['set']} with seed {row['seed']}: run both arms "
                                   "on the same sets and seeds")
        pairs.setdefault(row["set"], []).append(figure(row) - base[key])
    if not pairs:
        raise click.UsageError("no candidate runs to compare")
    per_set = {}
    for name, diffs in pairs.items():
        spread_here = spread([figure(r) for r in baseline if r["set"] == name])
        mean = float(np.mean(diffs))
        per_set[name] = {"mean_difference": mean, "seeds": len(diffs), "seed_spread": spread_here,
                         "loses_beyond_spread": mean < -spread_here}
    names = sorted(pairs)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        drawn = []
        for name in rng.choice(names, size=len(names)):
            diffs = pairs[name]
            drawn += [diffs[i] for i in rng.integers(0, len(diffs), len(diffs))]
        means[b] = np.mean(drawn)
    overall = float(np.mean([d for name in names for d in pairs[name]]))
    low, high = (float(v) for v in np.quantile(means, [0.025, 0.975]))
    worst = min(names, key=lambda name: per_set[name]["mean_difference"])
    passes = low > 0 and overall > 0 and not any(s["loses_beyond_spread"] for s in per_set.values())
    return {"per_set": per_set, "mean_difference": overall, "low": low, "high": high, "worst_set": worst,
            "worst_difference": per_set[worst]["mean_difference"], "runs": sum(len(d) for d in pairs.values()),
            "rule_holds": passes}


def set_table(rows: list[dict]) -> list[str]:
    """One line per set: the figure of each seed with its interval, the mean and the spread."""
    lines = ["| set | seed | test ROC AUC (95 % interval) | accuracy | balanced accuracy | minutes |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if row["roc_auc"] is None:
            lines.append(f"| {row['set']} | {row['seed']} | failed: {row.get('error', '?')} | | | {row['minutes']:.1f} |")
            continue
        interval = f" ({row['low']:.3f}-{row['high']:.3f})" if row["low"] is not None else " (no interval)"
        balanced = "" if row["balanced_accuracy"] is None else f"{row['balanced_accuracy']:.3f}"
        lines.append(f"| {row['set']} | {row['seed']} | {row['roc_auc']:.3f}{interval} | {row['accuracy']:.3f} | "
                     f"{balanced} | {row['minutes']:.1f} |")
    by_set: dict[str, list[float]] = {}
    for row in rows:
        by_set.setdefault(row["set"], []).append(FAILED if row["roc_auc"] is None else row["roc_auc"])
    lines += ["", "| set | seeds | mean test ROC AUC | seed spread (SD) |", "|---|---|---|---|"]
    lines += [f"| {name} | {len(v)} | {np.mean(v):.3f} | {spread(v):.3f} |" for name, v in by_set.items()]
    return lines


def difference_table(result: dict) -> list[str]:
    lines = ["| set | seeds | mean difference (candidate - default) | default's seed spread | beyond spread |",
             "|---|---|---|---|---|"]
    for name, s in result["per_set"].items():
        lines.append(f"| {name} | {s['seeds']} | {s['mean_difference']:+.3f} | {s['seed_spread']:.3f} | "
                     f"{'yes' if s['loses_beyond_spread'] else 'no'} |")
    lines += ["", f"Over {result['runs']} paired runs: mean difference {result['mean_difference']:+.3f} "
                  f"({result['low']:+.3f} to {result['high']:+.3f}); worst set {result['worst_set']} "
                  f"({result['worst_difference']:+.3f}). Rule for a new default: "
                  f"{'holds' if result['rule_holds'] else 'does not hold'}."]
    return lines


def chosen_sets(names: str | None) -> list[DevSet]:
    known = {s.name: s for s in SETS} | EXTRA
    if names is None:
        return [s for s in SETS if s.available()]
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in known:
            raise click.BadParameter(f"unknown set {name!r}; known: {', '.join(known)}", param_hint="--sets")
        if not known[name].available():
            raise click.BadParameter(f"set {name!r} is not on this machine ('{known[name].data}')", param_hint="--sets")
        chosen.append(known[name])
    return chosen


@click.command()
@click.option("--sets", "names", default=None, help="comma-separated sets (default: every development set here)")
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated seeds")
@click.option("--candidate", "candidate", multiple=True, help="KEY=VALUE: the changed setting (repeatable)")
@click.option("--base", "base", multiple=True, help="KEY=VALUE for both arms (a quicker check, never a default)")
@click.option("--baseline", "baseline_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the default's rows from an earlier --json run of the same sets and seeds (not run again)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="write every row here")
@click.option("--workdir", type=click.Path(file_okay=False), default=None, help="keep the runs here")
def main(names, seeds, candidate, base, baseline_file, json_out, workdir):
    """Today's defaults on every development set x seeds; with --candidate, the paired difference."""
    import medcls  # noqa: F401  (the suite measures the installed medcls)

    sets = chosen_sets(names)
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    base_settings, changes = parse_settings(base), parse_settings(candidate)
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(workdir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        if baseline_file:
            stored = json.loads(Path(baseline_file).read_text())
            if stored.get("base", {}) != base_settings:
                raise click.UsageError(f"'{baseline_file}' was run with --base {stored.get('base')}, not {base_settings}")
            baseline = [r for r in stored["default"] if r["set"] in {s.name for s in sets} and r["seed"] in seed_list]
        else:
            baseline = []
            for devset in sets:
                for seed in seed_list:
                    baseline.append(run_one(devset, seed, base_settings, folder, "default"))
                    click.echo(set_table([baseline[-1]])[2], err=True)
        click.echo(f"## Defaults ({started}, {len(sets)} sets x {len(seed_list)} seeds)\n")
        click.echo("\n".join(set_table(baseline)))
        result = {"started": started, "base": base_settings, "default": baseline}
        if changes:
            rows = []
            for devset in sets:
                for seed in seed_list:
                    rows.append(run_one(devset, seed, {**base_settings, **changes}, folder, "candidate"))
                    click.echo(set_table([rows[-1]])[2], err=True)
            result |= {"candidate": changes, "candidate_rows": rows, "paired": paired(baseline, rows)}
            click.echo(f"\n## Candidate {changes}\n")
            click.echo("\n".join(set_table(rows)))
            click.echo("\n" + "\n".join(difference_table(result["paired"])))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
