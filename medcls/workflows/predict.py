"""`medcls predict`: calibrated probabilities and decisions for files, folders, DICOM series and
NIfTI volumes, read as the run was trained, with one error per input that could not be read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcls.core.inference import read_paths, run_predictor
from medcls.core.runs import load_model
from medcls.logs import stage
from medcls.stats.metrics import decisions


@dataclass
class Predictions:
    """One row per input: its name, class probabilities (NaN where it could not be read), the
    decision at the run's operating point (None where unreadable) and the error, if any."""

    inputs: list[str]
    classes: list[str]
    probabilities: np.ndarray  # (N, K) float64, calibrated
    decisions: list[str | None]
    errors: list[str]
    referred: list[bool | None] | None = None  # conformal abstention: refer to a reader (runs that fit it)
    findings: np.ndarray | None = None  # multi-label: (N, L) 1/0 decision per finding (-1 where unreadable)
    tasks: list | None = None  # multi-task: the auxiliary heads (medcls.data.tasks.Task), with...
    task_outputs: dict | None = None  # ... each head's output per input: (N, classes) or (N,), NaN where unreadable
    task_thresholds: dict | None = None  # binary heads' operating points, chosen on validation

    @property
    def failed(self) -> int:
        return sum(1 for e in self.errors if e)

    def rows(self) -> list[dict]:
        """As CSV rows: file, prob_<class>..., predicted, [refer,] error."""
        rows = []
        for i, (name, p, decided, error) in enumerate(zip(self.inputs, self.probabilities, self.decisions,
                                                          self.errors)):
            row = {"file": name, **{f"prob_{c}": ("" if np.isnan(v) else f"{v:.6f}") for c, v in zip(self.classes, p)},
                   "predicted": decided or ""}
            if self.findings is not None:
                row.update({f"present_{c}": ("" if d < 0 else "yes" if d else "no")
                            for c, d in zip(self.classes, self.findings[i])})
            for task in self.tasks or []:
                row.update(task_cells(task, self.task_outputs[task.name][i], (self.task_thresholds or {}).get(task.name)))
            if self.referred is not None:
                row["refer"] = "" if self.referred[i] is None else ("yes" if self.referred[i] else "no")
            rows.append({**row, "error": error})
        return rows

    @property
    def columns(self) -> list[str]:
        return ["file", *[f"prob_{c}" for c in self.classes], "predicted",
                *([f"present_{c}" for c in self.classes] if self.findings is not None else []),
                *[column for task in self.tasks or [] for column in task_columns(task)],
                *(["refer"] if self.referred is not None else []), "error"]


def task_columns(task) -> list[str]:
    """A head's predict columns: its value (regression), or a probability per class and the decision."""
    return [task.name] if task.kind == "regression" else [*[f"prob_{task.name}_{c}" for c in task.classes], task.name]


def task_cells(task, output, threshold) -> dict:
    if task.kind == "regression":
        return {task.name: "" if np.isnan(output) else f"{output:.6g}"}
    if np.isnan(output).any():
        return {column: "" for column in task_columns(task)}
    decided = int(decisions(output[None, :], threshold if task.kind == "binary" else None)[0])
    return {**{f"prob_{task.name}_{c}": f"{v:.6f}" for c, v in zip(task.classes, output)}, task.name: task.classes[decided]}


def predict_files(run, inputs, registries, *, batch_size: int = 32, progress=None, device: str = "auto") -> Predictions:
    model, info = load_model(run, registries)
    predictor = run_predictor(model, info, device=device, batch_size=batch_size)
    read = read_paths(info, inputs, registries, progress)
    return predictions_for(read, predictor)


def predictions_for(read, predictor) -> Predictions:
    """Score the readable inputs through the predictor; unreadable ones keep their error."""
    classes = predictor.classes
    probabilities = np.full((len(read.rows), len(classes)), np.nan)
    decisions: list[str | None] = [None] * len(read.rows)
    referred: list[bool | None] | None = None if predictor.conformal is None else [None] * len(read.rows)
    findings = np.full((len(read.rows), len(classes)), -1) if predictor.multi_label else None
    if read.images:
        with stage(f"scoring {len(read.images)} image(s)"):
            probs = predictor.probabilities(read.stacked())
        probabilities[read.positions] = probs
        for position, decided in zip(read.positions, predictor.decide(probs)):
            if findings is not None:  # the findings called present, '|'-separated ('none')
                findings[position] = decided
                decisions[position] = "|".join(c for c, d in zip(classes, decided) if d) or "none"
            else:
                decisions[position] = classes[int(decided)]
        if referred is not None:
            for position, flag in zip(read.positions, predictor.refer(probs)):
                referred[position] = bool(flag)
    tasks = predictor.tasks or None
    outputs = None
    if tasks:
        outputs = {t.name: np.full((len(read.rows),) if t.kind == "regression" else (len(read.rows), t.outputs), np.nan)
                   for t in tasks}
        if read.images:
            for name, values in predictor.task_outputs(read.stacked()).items():
                outputs[name][read.positions] = values
    return Predictions([r["file"] for r in read.rows], classes, probabilities, decisions,
                       [r["error"] for r in read.rows], referred, findings, tasks, outputs, predictor.task_thresholds)
