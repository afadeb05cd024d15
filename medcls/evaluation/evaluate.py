"""`medcls evaluate`: score a finished run at its stored operating point on its own or new data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from medcls.errors import DataError


def stored_splits(run: Path) -> dict[str, str]:
    path = run / "splits.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["key"]: row["split"] for row in csv.DictReader(fh)}


def evaluate_run(run, registries, *, data: str | None = None, split: str | None = None, out=None, log=print) -> dict:
    from medcls.config import make_config, read_config_file
    from medcls.engine import predict_probs
    from medcls.evaluation import report
    from medcls.runs import load_model
    from medcls.training import prepare_data, resolve_device

    run = Path(run)
    model, info = load_model(run, registries)
    config = make_config(read_config_file(run / "config.yaml"), where=f"run config '{run / 'config.yaml'}'")
    own_data = data is None or data == config.data
    if data is not None:
        config.data = data
    config.image_size, config.channels = info["image_size"], str(info["in_chans"])
    split = split or ("test" if own_data else "all")
    prepared = prepare_data(config, registries, split=False)
    unknown = sorted(set(c.label for c in prepared.cases) - set(info["classes"]))
    if unknown:
        raise DataError(f"data '{config.data}' has classes {unknown} that run '{run}' was not trained on ({info['classes']})")
    labels = np.array([info["classes"].index(c.label) for c in prepared.cases])
    rows = prepared.rows()
    if split != "all":
        membership = stored_splits(run)
        missing = [c.key for c in prepared.cases if c.key not in membership]
        if missing:
            raise DataError(f"'{missing[0]}' is not in run '{run}' splits.csv: evaluate new data with --split all")
        wanted = np.array([membership[prepared.cases[i].key] == split for i in prepared.cache.kept])
        rows = rows[wanted]
    if not len(rows):
        raise DataError(f"no readable images in split {split!r} of '{config.data}'")
    device = resolve_device("auto")
    model = model.to(device)
    probs = predict_probs(model, prepared.batches(rows), device)
    y = labels[prepared.cache.kept[rows]]
    threshold = info.get("threshold")
    metrics = report.split_results(probs, y, threshold, list(registries["metrics"]))
    intervals = report.split_intervals(probs, y, threshold)
    out = Path(out) if out else run / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    report.write_metrics_json(out / "metrics.json", {split: metrics}, {split: intervals},
                              {"threshold": threshold, "data": config.data})
    lines = [f"# Evaluation of {run} on {config.data} ({split}, n = {len(y)})", "",
             f"Operating point {threshold} (stored with the model).", "", "| metric | value (95% CI) |", "|---|---|"]
    lines += [f"| {k} | {report.format_value(v, intervals.get(k))} |" for k, v in metrics.items()
              if isinstance(v, float)]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for warning in prepared.warnings:
        log(f"warning: {warning}")
    return {"split": split, "n": int(len(y)), "metrics": metrics, "intervals": intervals, "out": str(out)}
