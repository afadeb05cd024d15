"""`medcls predict`: probabilities and decisions for files, with a per-file error column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcls.data.cases import Case, ReaderTable
from medcls.errors import DataError


def expand_inputs(inputs, readers: ReaderTable) -> list[Path]:
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and readers.can_read(p)]
        else:
            files.append(path)
    if not files:
        raise DataError(f"no image files in {', '.join(map(str, inputs))}")
    return files


def predict_files(run, inputs, registries, batch_size: int = 32) -> tuple[list[dict], list[str]]:
    import torch

    from medcls.data.images import resize, to_channels
    from medcls.runs import load_model

    model, info = load_model(run, registries)
    readers = ReaderTable(registries["readers"], {"window": info.get("window"), "size": info["image_size"]})
    classes, threshold = info["classes"], info.get("threshold")
    columns = ["file", *[f"prob_{c}" for c in classes], "predicted", "error"]
    rows, images, positions = [], [], []
    for path in expand_inputs(inputs, readers):
        row = {"file": str(path), "predicted": "", "error": ""}
        try:
            if not path.exists():
                raise DataError(f"file '{path}' does not exist")
            image = resize(readers.read(Case(key=str(path), label="", path=path)), info["image_size"])
            images.append(to_channels(image, info["in_chans"]))
            positions.append(len(rows))
        except DataError as exc:
            row["error"] = str(exc)
        rows.append(row)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            probs = model(torch.stack(images[start:start + batch_size])).float().softmax(1).numpy()
            for offset, p in enumerate(probs):
                row = rows[positions[start + offset]]
                row.update({f"prob_{c}": f"{v:.6f}" for c, v in zip(classes, p)})
                decided = int(p[1] >= threshold) if len(classes) == 2 and threshold is not None else int(np.argmax(p))
                row["predicted"] = classes[decided]
    return rows, columns
