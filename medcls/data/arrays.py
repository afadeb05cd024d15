"""Images held in memory (numpy arrays or torch tensors) as cases: the Python API's `images=`.

Shapes: 2D images `(N, H, W)`, `(N, H, W, C)` or `(N, C, H, W)` with C in 1, 3 (4: RGBA, alpha
dropped); volumes `(N, D, H, W)` or `(N, 1, D, H, W)` when the backbone reads volumes. Values: uint8
(0-255), or floats already in [0, 1]. Each array is registered under a name `memory:<id>` that a
dataset layout resolves, so the rest of medcls reads it exactly as it reads files.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from medcls.data.cases import Case, DataOptions, normalise_split
from medcls.data.findings import as_text, from_matrix
from medcls.errors import DataError

PREFIX = "memory:"
SOURCES: dict[str, list[Case]] = {}  # name -> cases, for this process
_counter = itertools.count(1)


def as_numpy(values, name: str) -> np.ndarray:
    if values is None:
        raise DataError(f"{name} is missing")
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise DataError(f"{name} holds Python objects (dtype object): give a numeric array")
    return array


def to_unit(images: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from uint8 (0-255) or floats already in [0, 1]; anything else refused."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    if images.dtype == bool:
        return images.astype(np.float32)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"images have dtype {images.dtype}: give uint8 (0-255) or floats in [0, 1] "
                        "(scale other integer images to [0, 1] first)")
    if not np.isfinite(images).all():
        raise DataError("images contain NaN or infinite values: fix or drop those images")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise DataError(f"float images must lie in [0, 1], these span [{low:.4g}, {high:.4g}]: "
                        "scale them first (e.g. (x - x.min()) / (x.max() - x.min())) or give uint8")
    return images.astype(np.float32, copy=False)


def image_arrays(images, volumes: bool) -> list:
    """Each image as medcls reads it: float32 (C, H, W) in [0, 1], or a Volume for 3D backbones.
    A list (or tuple) may hold images of different sizes (each is resized later), as images read
    one by one from files or volumes from NIfTI files usually are."""
    from medcls.data.volumes import Volume

    if isinstance(images, (list, tuple)) and images:
        items = [as_numpy(item, f"images[{i}]") for i, item in enumerate(images)]
        if len({item.shape for item in items}) > 1:
            return [one_image(item, volumes, i) for i, item in enumerate(items)]
    array = as_numpy(images, "images")
    if array.ndim and not len(array):
        raise DataError(f"images of shape {array.shape} hold no image: give at least one")
    if volumes:
        if array.ndim == 5 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 4:
            raise DataError(f"images of shape {array.shape} are not volumes: a 3D backbone takes (N, D, H, W)")
        array = to_unit(array)
        return [Volume(np.ascontiguousarray(v), (1.0, 1.0, 1.0), source=f"volume {i}") for i, v in enumerate(array)]
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if array.shape[-1] in (1, 3, 4) and array.shape[1] not in (1, 3, 4):
            array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        elif array.shape[1] not in (1, 3, 4):
            raise DataError(f"images of shape {array.shape} have no channel axis of 1, 3 or 4 first or last: "
                            "give (N, H, W), (N, H, W, C) or (N, C, H, W); for volumes (N, D, H, W) choose a 3D "
                            "backbone or slices=3")
    else:
        raise DataError(f"images of shape {array.shape}: give (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if array.shape[1] == 4:
        array = array[:, :3]  # RGBA: the alpha channel carries no anatomy
    array = to_unit(array)
    return [np.ascontiguousarray(image) for image in array]


def one_image(item: np.ndarray, volumes: bool, index: int):
    """One image of a list whose sizes differ, read as a batch of one; errors name its position."""
    try:
        return image_arrays(item[None], volumes)[0]
    except DataError as exc:
        raise DataError(f"images[{index}] (shape {item.shape}): {exc}") from None


def array_cases(images, labels=None, *, patients=None, split=None, volumes: bool = False,
                name: str = "memory") -> list[Case]:
    """Cases from in-memory images with their labels (and optional patient ids and split names).
    Multi-label: `labels` an (N, findings) array of 1 / 0 / -1 (uncertain) / NaN (blank), or a
    dict of finding name -> (N,) such values."""
    arrays = image_arrays(images, volumes)
    count = len(arrays)
    found = None
    if isinstance(labels, dict) or (labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] > 1):
        names = list(labels) if isinstance(labels, dict) else None
        matrix = np.column_stack([as_numpy(v, f"labels[{k!r}]").reshape(-1) for k, v in labels.items()]) \
            if isinstance(labels, dict) else as_numpy(labels, "labels")
        if len(matrix) != count:
            raise DataError(f"labels has {len(matrix)} rows for {count} images: give one per image")
        found, labels = from_matrix(matrix, names, "labels"), None
    columns = {}
    for column, values in (("labels", labels), ("patients", patients), ("split", split)):
        if values is None:
            continue
        values = as_numpy(values, column).reshape(-1)
        if len(values) != count:
            raise DataError(f"{column} has {len(values)} entries for {count} images: give one per image")
        columns[column] = values
    cases = []
    for index, image in enumerate(arrays):
        label = columns["labels"][index] if "labels" in columns else ""
        if isinstance(label, (float, np.floating)):
            if not float(label).is_integer():
                raise DataError(f"labels[{index}] = {float(label)!r} is not a class: give integer or string labels")
            label = int(label)
        if found is not None:
            label = as_text(found[index])
        cases.append(Case(
            key=f"{name}#{index}", label=str(label), findings=None if found is None else found[index],
            patient_id=None if "patients" not in columns else str(columns["patients"][index]),
            split=None if "split" not in columns else normalise_split(columns["split"][index], f"split[{index}]"),
            array=image))
    return cases


def remember(cases: list[Case]) -> str:
    """Register in-memory cases under a new source name (`memory:<n>-<digest>`) and return it."""
    digest = hashlib.sha256("".join(c.key + c.label for c in cases[:64]).encode()).hexdigest()[:8]
    source = f"{PREFIX}{next(_counter)}-{digest}"
    SOURCES[source] = cases
    return source


def is_memory(source: str) -> bool:
    return str(source).startswith(PREFIX)


def held(source: str) -> bool:
    """This Python session holds the in-memory data `source` names."""
    return source in SOURCES


def load_memory(source: str, options: DataOptions) -> list[Case]:
    try:
        return SOURCES[source]
    except KeyError:
        raise DataError(f"in-memory data {source!r} belongs to another Python session: pass the arrays again "
                        "(run.evaluate(images=..., labels=...))") from None
