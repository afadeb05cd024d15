"""A run's experiment trackers (the `medcls_register_loggers` plugins: CSV, TensorBoard, MLflow):
opened with the run's configuration, nested under a parent run where the tracker can nest (cross-
validation folds, ensemble members, experiment runs), fed per-epoch figures, closed with the final
figures, their intervals and the run's files."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medcls.config import TrainConfig


def tracker_names(config: TrainConfig) -> list[str]:
    return [name.strip() for name in (config.loggers or "").split(",") if name.strip()]


def open_trackers(config: TrainConfig, registries, out: Path, parents: list | None = None) -> list:
    """The run's experiment trackers (medcls_register_loggers), started with its configuration; with
    `parents` (one per logger, in order), each is its parent's nested run where the tracker can
    nest (an optional `child(out)` method), else a run of its own."""
    import json

    trackers = []
    for index, name in enumerate(tracker_names(config)):
        parent = parents[index] if parents and index < len(parents) else None
        trackers.append(parent.child(out) if hasattr(parent, "child") else registries["loggers"].get(name).obj(out))
    params = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in config.to_dict().items()
              if v is not None}
    for tracker in trackers:
        tracker.start(params)
    return trackers


def epoch_values(epoch) -> dict:
    """Per-epoch figures, named `epoch_*` so they never collide with the final `<split>_*` ones."""
    values = {"epoch_train_loss": epoch.train_loss, "epoch_val_loss": epoch.val_loss, "epoch_lr": epoch.lr}
    values.update({f"epoch_val_{k}": v for k, v in epoch.val_metrics.items()
                   if isinstance(v, float) and np.isfinite(v)})
    return values


def finish_trackers(trackers: list, summary: dict, out: Path) -> None:
    """Every split's final figures with their interval bounds, and the run's files."""
    values = {}
    for split in ("train", "val", "test"):
        for name, value in summary["results"][split].items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                values[f"{split}_{name}"] = float(value)
                interval = summary["intervals"][split].get(name) or {}
                for bound in ("low", "high"):
                    if isinstance(interval.get(bound), float) and np.isfinite(interval[bound]):
                        values[f"{split}_{name}_{bound}"] = interval[bound]
    close_trackers(trackers, values, out)


def close_trackers(trackers: list, values: dict, out: Path) -> None:
    """Hand each tracker the final figures and the files in `out` (figures, reports, metrics)."""
    if not trackers:
        return
    artefacts = sorted(out.glob("*.png")) + [out / n for n in ("report.md", "report.html", "metrics.json", "model.json",
                                                               "model.safetensors", "MODEL_CARD.md", "cv_metrics.json",
                                                               "experiment.md", "experiment.csv") if (out / n).is_file()]
    for tracker in trackers:
        tracker.finish(values, artefacts)


@contextmanager
def ending_if_interrupted(trackers: list):
    """A run that fails or is interrupted (Ctrl-C) ends so in its trackers (MLflow's FAILED or
    KILLED) instead of staying RUNNING: a tracker's optional `fail(status)` is called, then the
    error goes on. (An attempt that starts again after a decoding surprise is a failed attempt,
    and its retry a run of its own.)"""
    try:
        yield
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
        for tracker in trackers:
            fail = getattr(tracker, "fail", None)
            if fail is not None:
                try:
                    fail(status)
                except Exception:  # the tracker's own trouble must not hide the run's error
                    pass
        raise
