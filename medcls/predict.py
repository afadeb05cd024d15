"""`medcls predict`: probabilities and decisions for files, with a per-file error column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcls.data.cases import Case, ReaderTable
from medcls.errors import DataError


def expand_inputs(inputs, readers: ReaderTable) -> list[Path]:
    """Files as given; folders searched for readable files (and, for volume models, series folders)."""
    from medcls.data.cases import DataOptions
    from medcls.data.layouts import candidate_files

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


def read_inputs(info: dict, inputs, registries, progress=None) -> tuple[list[dict], list, list[int]]:
    """Each input brought to the run's grid: (one row per file with its error, if any, the
    images of the readable ones, and their row positions)."""
    from medcls.data.images import prepare_one, to_channels
    from medcls.data.volumes import make_grid

    dims = int(info.get("spatial_dims", 2))
    readers = ReaderTable(registries["readers"], {"window": info.get("window"), "size": info["image_size"]}, dims=dims)
    grid = info["image_size"] if dims == 2 else make_grid(info["volume_size"], info.get("volume_spacing"),
                                                          info.get("window"))
    rows, images, positions = [], [], []
    for path in expand_inputs(inputs, readers):
        row = {"file": str(path), "error": ""}
        try:
            if not path.exists():
                raise DataError(f"file '{path}' does not exist")
            image = prepare_one(readers.read(Case(key=str(path), label="", path=path)), grid)
            images.append(to_channels(image, info["in_chans"]))
            positions.append(len(rows))
        except DataError as exc:
            row["error"] = str(exc)
        rows.append(row)
        if progress is not None:
            progress(1)
    return rows, images, positions


def decide(probs: np.ndarray, classes: list[str], threshold) -> str:
    """The class at the stored operating point (binary) or the most probable one."""
    decided = int(probs[1] >= threshold) if len(classes) == 2 and threshold is not None else int(np.argmax(probs))
    return classes[decided]


def predict_files(run, inputs, registries, batch_size: int = 32, progress=None) -> tuple[list[dict], list[str]]:
    import torch

    from medcls.runs import load_model

    model, info = load_model(run, registries)
    classes, threshold = info["classes"], info.get("threshold")
    columns = ["file", *[f"prob_{c}" for c in classes], "predicted", "error"]
    rows, images, positions = read_inputs(info, inputs, registries, progress)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            probs = model(torch.stack(images[start:start + batch_size])).float().softmax(1).numpy()
            if info.get("temperature"):
                from medcls.evaluation.calibration import apply_temperature

                probs = apply_temperature(probs.astype(np.float64), info["temperature"])
            for offset, p in enumerate(probs):
                row = rows[positions[start + offset]]
                row.update({f"prob_{c}": f"{v:.6f}" for c, v in zip(classes, p)})
                row["predicted"] = decide(p, classes, threshold)
    for row in rows:
        row.setdefault("predicted", "")
    return rows, columns
