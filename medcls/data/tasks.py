"""Auxiliary tasks for multi-task learning: more heads on the same backbone, each predicting another
manifest column (a binary or multi-class class, or a number such as age), trained by a weighted
sum of losses beside the main label (`tasks = "Age:regression:0.5, Sex:binary"`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from medcls.errors import ConfigError, DataError

KINDS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Task:
    """One auxiliary head: the manifest column it predicts, what kind of target that is, its loss
    weight, its classes (classification) or the training targets' mean and standard deviation
    (regression: the head predicts standardised values, so that years and probabilities weigh
    alike in the summed loss)."""

    name: str
    kind: str
    weight: float = 1.0
    classes: tuple = ()
    mean: float = 0.0
    std: float = 1.0

    @property
    def outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)

    def to_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


def parse_tasks(spec: str | None, key: str = "tasks") -> list[Task]:
    """`'Age:regression:0.5, Sex:binary'`: column, kind and optional loss weight (default 1) per head."""
    tasks = []
    for item in (part.strip() for part in (spec or "").split(",")):
        if not item:
            continue
        parts = [p.strip() for p in item.split(":")]
        if len(parts) not in (2, 3) or not parts[0] or parts[1] not in KINDS:
            raise ConfigError(f"{key} = {spec!r} is invalid: write COLUMN:KIND[:WEIGHT] with KIND one of "
                              f"{', '.join(KINDS)}, e.g. 'Age:regression:0.5, Sex:binary'")
        try:
            weight = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{key} = {spec!r} is invalid: the weight of {parts[0]!r} must be a number >= 0")
        if parts[0] in {t.name for t in tasks}:
            raise ConfigError(f"{key} = {spec!r} names column {parts[0]!r} twice")
        tasks.append(Task(parts[0], parts[1], weight))
    return tasks


def task_targets(cases, tasks: list[Task], source: str, main_column: str) -> tuple[list[Task], np.ndarray]:
    """The tasks with their classes, and an (N, tasks) float array of targets: class indices or
    numbers, NaN where the cell is blank (left out of that head's loss and figures)."""
    columns = sorted({k for c in cases for k in c.attributes})
    resolved, targets = [], np.full((len(cases), len(tasks)), np.nan)
    for j, task in enumerate(tasks):
        if task.name == main_column:
            raise ConfigError(f"tasks: {task.name!r} is the main label column; name another column")
        if task.name not in columns:
            raise DataError(f"data '{source}' has no column {task.name!r} for tasks (columns: "
                            f"{', '.join(columns) or 'none: only CSV manifests carry columns'})")
        cells = [str(c.attributes.get(task.name, "")).strip() for c in cases]
        if task.kind == "regression":
            for i, (case, cell) in enumerate(zip(cases, cells)):
                if not cell:
                    continue
                try:
                    targets[i, j] = float(cell)
                except ValueError:
                    targets[i, j] = math.nan
                if not math.isfinite(targets[i, j]):
                    raise DataError(f"data '{source}', '{case.key}': {task.name} = {cell!r} is not a number: fix it "
                                    "or leave it blank (blank cells are left out of that head)")
            resolved.append(task)
            continue
        from medcls.data.loading import sort_key

        classes = tuple(sorted({cell for cell in cells if cell}, key=sort_key))
        if len(classes) < 2 or (task.kind == "binary" and len(classes) != 2):
            raise DataError(f"data '{source}': column {task.name!r} has {len(classes)} value(s) "
                            f"({', '.join(classes[:5])}); a {task.kind} task needs "
                            f"{'two' if task.kind == 'binary' else 'at least two'}")
        targets[:, j] = [classes.index(cell) if cell else math.nan for cell in cells]
        resolved.append(Task(task.name, task.kind, task.weight, classes))
    return resolved, targets


def standardised(tasks: list[Task], targets: np.ndarray, train_rows: np.ndarray) -> list[Task]:
    """Regression tasks with the mean and standard deviation of their training targets (only the
    training split's: the held-out targets never shape the model)."""
    out = []
    for j, task in enumerate(tasks):
        if task.kind == "regression":
            values = targets[train_rows, j]
            values = values[~np.isnan(values)]
            if len(values) < 2:
                raise DataError(f"tasks: column {task.name!r} has {len(values)} training value(s): too few to learn")
            task = Task(task.name, task.kind, task.weight, (), float(values.mean()), float(values.std() or 1.0))
        out.append(task)
    return out


def from_info(rows: list[dict] | None) -> list[Task]:
    """The tasks a run recorded in model.json."""
    return [Task(r["name"], r["kind"], r.get("weight", 1.0), tuple(r.get("classes", ())), r.get("mean", 0.0),
                 r.get("std", 1.0)) for r in rows or []]
