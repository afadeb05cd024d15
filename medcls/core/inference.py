"""The one inference path: a trained model turns images in [0, 1] into calibrated class probabilities.

Every caller scores through `Predictor`: validation during training, the final scoring of every
split, `evaluate`, `predict`, `explain`, test-time augmentation, the export check, cross-validation,
ensembles and the Python API's `Run.predict`. Preprocessing as trained (`read_cases`), the run's
temperature, its device and precision, batching and TTA views live here and nowhere else, so that
the same image gets the same probability and the same decision whichever way it is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
from torch import nn

from medcls.core.execution import Execution, choose_execution, resolve_device
from medcls.core.tta import views
from medcls.data.cases import Case, DataOptions, ReaderTable
from medcls.data.images import as_stored
from medcls.data.tasks import from_info
from medcls.data.layouts import candidate_files
from medcls.data.volumes import make_grid
from medcls.errors import DataError
from medcls.stats.calibration import apply_temperature
from medcls.stats.conformal import refer as conformal_refer
from medcls.stats.metrics import decisions

if TYPE_CHECKING:
    from medcls.core.runs import RunInfo

Batches = Callable[[int], Iterable[torch.Tensor]]  # batch_size -> (B, C, ...) tensors in [0, 1]


@dataclass
class Predictor:
    """A trained model ready to score: where it runs, its temperature and its operating point."""

    model: nn.Module
    execution: Execution
    classes: list[str] = field(default_factory=list)
    temperature: float | None = None  # temperature scaling fitted on validation (None: uncalibrated)
    threshold: float | list[float] | None = None  # binary: the operating point chosen on validation; multi-label: one per finding
    batch_size: int = 64
    conformal: dict | None = None  # prediction-set thresholds fitted on validation (medcls.stats.conformal)
    multi_label: bool = False  # `classes` are findings: a sigmoid probability and a decision per finding
    tasks: list = field(default_factory=list)  # multi-task: auxiliary heads after the main outputs (data.tasks.Task)
    task_thresholds: dict = field(default_factory=dict)  # multi-task: binary heads' operating points

    @classmethod
    def for_model(cls, model: nn.Module, *, device="auto", precision: str = "auto", channels_last=None,
                  **settings) -> "Predictor":
        """A predictor on `device` ('auto': the GPU when there is one), in the run's precision."""
        device = resolve_device(device) if isinstance(device, str) else device
        execution = choose_execution(device, model, precision, channels_last)
        return cls(execution.prepare(model), execution, **settings)

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """The run's temperature applied to raw probabilities (unchanged without one)."""
        return apply_temperature(probs, self.temperature) if self.temperature else probs

    def probabilities(self, batches: Batches | torch.Tensor, *, calibrated: bool = True, tta: str = "none",
                      mirrors: bool = True) -> np.ndarray:
        """(N, K) float64 class probabilities, without augmentation or dropout; with `tta`, averaged
        over the scheme's views (medcls.core.tta)."""
        return self.probabilities_and_single_view(batches, calibrated=calibrated, tta=tta, mirrors=mirrors)[0]

    @torch.no_grad()
    def probabilities_and_single_view(self, batches: Batches | torch.Tensor, *, calibrated: bool = True,
                                      tta: str = "none", mirrors: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities averaged over the TTA views, probabilities of the images themselves); the
        image itself is scored once, also when it is one of the views (flip)."""
        self.model.eval()
        averaged, single = [], []
        for images in as_batches(batches)(self.batch_size):
            images = images.to(self.execution.device)
            batch_views = views(images, tta, mirrors)
            scored = [self.raw(view) for view in batch_views]
            averaged.append(torch.stack(scored).mean(0) if len(scored) > 1 else scored[0])
            single.append(scored[0] if batch_views[0] is images else self.raw(images))
        if not averaged:
            empty = np.zeros((0, len(self.classes)))
            return empty, empty
        out = tuple(torch.cat(p).cpu().numpy().astype(np.float64) for p in (averaged, single))
        return tuple(self.calibrate(p) for p in out) if calibrated else out

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated probabilities of one batch, on the device."""
        with self.execution.autocast():
            logits = self.model(self.execution.inputs(images)).float()
        if self.tasks:  # the main task's outputs come first
            logits = logits[:, :len(self.classes)]
        return logits.sigmoid() if self.multi_label else logits.softmax(1)

    @torch.no_grad()
    def task_outputs(self, batches: Batches | torch.Tensor) -> dict[str, np.ndarray]:
        """Multi-task: each auxiliary head's output per image: class probabilities (N, classes) or
        the predicted value (N,) in the column's own units."""
        self.model.eval()
        start, collected = len(self.classes), {task.name: [] for task in self.tasks}
        for images in as_batches(batches)(self.batch_size):
            with self.execution.autocast():
                logits = self.model(self.execution.inputs(images.to(self.execution.device))).float()
            offset = start
            for task in self.tasks:
                out = logits[:, offset:offset + task.outputs]
                offset += task.outputs
                collected[task.name].append(out[:, 0] * task.std + task.mean if task.kind == "regression"
                                            else out.softmax(1))
        return {name: (torch.cat(parts).cpu().numpy().astype(np.float64) if parts else np.zeros(0))
                for name, parts in collected.items()}

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class index per row: positive at or above the stored operating point (binary tasks with
        one), else the most probable class. Multi-label: (N, L) 0/1, each finding at its own
        operating point (0.5 before one is chosen)."""
        return decisions(probs, self.threshold, self.multi_label)

    def refer(self, probs: np.ndarray) -> np.ndarray | None:
        """Per row, whether the case goes to a human reader: its conformal prediction set is not a
        single class. None for runs without abstention."""
        return None if self.conformal is None else conformal_refer(np.atleast_2d(probs), self.conformal)


def run_predictor(model: nn.Module, info: RunInfo, *, device="auto", precision: str = "auto", channels_last=None,
                  batch_size: int = 64) -> Predictor:
    """The predictor of a saved run: its model with the temperature and operating point of its model.json."""
    return Predictor.for_model(model, device=device, precision=precision, channels_last=channels_last,
                               classes=list(info.classes), temperature=info.temperature,
                               threshold=info.threshold, batch_size=batch_size,
                               conformal=info.conformal, multi_label=bool(info.multi_label),
                               tasks=from_info(info.tasks),
                               task_thresholds={t["name"]: t.get("threshold") for t in info.tasks or []})


def as_batches(source: Batches | torch.Tensor | np.ndarray) -> Batches:
    """A data set's batch iterator as it is, or one over a stacked (N, C, ...) tensor."""
    if callable(source):
        return source
    images = torch.as_tensor(source)

    def iterate(batch_size: int):
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]

    return iterate


@dataclass
class ReadInputs:
    """Inputs brought to the run's grid: one row per input (its name and error, if any), the images
    of the readable ones and their row positions."""

    rows: list[dict]
    images: list[torch.Tensor]
    positions: list[int]

    def stacked(self) -> torch.Tensor:
        return torch.stack(self.images) if self.images else torch.zeros(0)


def input_readers(info: RunInfo, registries) -> ReaderTable:
    dims = int(info.spatial_dims)
    return ReaderTable(registries["readers"], {"window": info.window, "size": info.image_size,
                                               "interpolation": info.interpolation,
                                               "crop_foreground": bool(info.crop_foreground)}, dims=dims)


def run_grid(info: RunInfo):
    """The grid a run was trained on: `image_size` pixels square, or its volume grid."""

    if int(info.spatial_dims) == 2:
        return info.image_size
    return make_grid(info.volume_size, info.volume_spacing, info.window)


def expand_paths(inputs, readers: ReaderTable) -> list[Path]:
    """Files as given; folders searched for readable files (and, for volume models, series folders)."""

    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not readers.can_read(path):
            files += candidate_files(path, DataOptions(readers=readers))
        else:
            files.append(path)
    if not files:
        raise DataError(f"no image files in {', '.join(map(str, inputs))}")
    return files


def read_cases(info: RunInfo, cases: list[Case], registries, progress=None) -> ReadInputs:
    """Each case read and preprocessed exactly as training read it (reader, grid, channels)."""

    readers, grid = input_readers(info, registries), run_grid(info)
    result = ReadInputs([], [], [])
    for case in cases:
        row = {"file": case.key, "error": ""}
        try:
            if case.array is None and not case.path.exists():
                raise DataError(f"file '{case.path}' does not exist")
            image = readers.prepared(case, grid)
            result.images.append(as_stored(image, info.in_chans))
            result.positions.append(len(result.rows))
        except DataError as exc:
            row["error"] = str(exc)
        result.rows.append(row)
        if progress is not None:
            progress(1)
    return result


def read_paths(info: RunInfo, inputs, registries, progress=None) -> ReadInputs:
    """Files, folders, DICOM series folders or NIfTI volumes read as the run was trained."""
    paths = expand_paths(inputs, input_readers(info, registries))
    return read_cases(info, [Case(key=str(p), label="", path=p) for p in paths], registries, progress)
