"""Contract checks a plugin's own test suite calls: each builds or calls the registered object the way
medcls will and raises AssertionError with a message naming what breaks the contract
(`medcls.plugins.hookspecs` documents each contract).

    from medcls.testing import check_backbone, check_metric

    def test_my_backbone():
        check_backbone(my_plugin.create_net)

    def test_my_metric():
        check_metric(my_plugin.youden_index, needs_threshold=True)
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Callable

import numpy as np


def check_backbone(create: Callable, *, in_chans: tuple[int, ...] = (1, 3), spatial_dims: int = 2, size: int = 32,
                   **backbone_args) -> None:
    """`create(in_chans)` returns an nn.Module with an int `num_features` mapping a float batch
    (B, C, H, W) (or (B, C, D, H, W)) to finite features (B, num_features); a deep copy works."""
    import torch
    from torch import nn

    from medcls.core.models import output_width

    for chans in in_chans:
        model = create(chans, **backbone_args)
        assert isinstance(model, nn.Module), f"create({chans}) returned {type(model).__name__}, not an nn.Module"
        features = getattr(model, "num_features", None)
        assert isinstance(features, int) and not isinstance(features, bool) and features > 0, \
            f"create({chans}).num_features is {features!r}: it must be a positive int"
        model.eval()
        with torch.no_grad():
            out = model(torch.rand(2, chans, *([size] * spatial_dims)))
        assert tuple(out.shape) == (2, output_width(model)), \
            f"create({chans}) maps a batch of 2 to {tuple(out.shape)}, not (2, {output_width(model)})"
        assert torch.isfinite(out).all(), f"create({chans}) gives non-finite features"
        copy.deepcopy(model)


def check_policy(create: Callable, params: dict | None = None, *, channels: int = 1, spatial_dims: int = 2,
                 size: int = 32, seed: int = 0) -> None:
    """`create(**params)` returns a transform keeping a (C, H, W) (or (C, D, H, W)) float32 image in
    [0, 1] the same shape, dtype and range; its `batch()` (if any) does the same for (B, C, ...);
    two transforms given the same seed (`set_random_state(seed=...)`) make the same images, so a
    run's augmentation repeats with its seed."""
    import torch

    transform = create(**(params or {}))
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)
    image = torch.rand(channels, *([size] * spatial_dims), generator=torch.Generator().manual_seed(seed))
    checks = [("transform(image)", image, transform(image.clone()))]
    if callable(getattr(transform, "batch", None)):
        checks.append(("transform.batch(images)", image[None].repeat(2, *[1] * image.dim()),
                       transform.batch(image[None].repeat(2, *[1] * image.dim()))))
    for what, given, out in checks:
        out = torch.as_tensor(out)
        assert tuple(out.shape) == tuple(given.shape), f"{what} changed the shape {tuple(given.shape)} -> {tuple(out.shape)}"
        assert out.dtype == torch.float32, f"{what} returned {out.dtype}, not float32"
        assert torch.isfinite(out).all() and out.min() >= -1e-6 and out.max() <= 1 + 1e-6, \
            f"{what} left [0, 1]: [{float(out.min()):.3f}, {float(out.max()):.3f}]"
    first, again = create(**(params or {})), create(**(params or {}))
    for made in (first, again):
        if hasattr(made, "set_random_state"):
            made.set_random_state(seed=seed)
    for _ in range(8):
        assert torch.equal(torch.as_tensor(first(image.clone())), torch.as_tensor(again(image.clone()))), \
            "two transforms with the same seed made different images: give the policy set_random_state(seed=...) " \
            "and draw from its own generator, not the global one"


def check_metric(fn: Callable, *, needs_threshold: bool, classes: int = 2) -> None:
    """`fn(y_true, probs, y_pred)` returns a float for a whole split, NaN (not an exception) when
    undefined (one class only), and does not change its inputs."""
    rng = np.random.default_rng(0)
    y = np.arange(40) % classes
    probs = rng.dirichlet(np.ones(classes), size=40)
    y_pred = probs.argmax(1)
    before = (y.copy(), probs.copy(), y_pred.copy())
    value = fn(y, probs, y_pred if needs_threshold else y_pred)
    assert isinstance(value, (float, np.floating)) and not isinstance(value, bool), \
        f"the metric returned {type(value).__name__}, not a float"
    assert math.isfinite(value), f"the metric is {value} on a split with every class"
    for given, kept in zip((y, probs, y_pred), before):
        assert np.array_equal(given, kept), "the metric changed its inputs"
    one_class = fn(np.zeros(10, dtype=int), probs[:10], np.zeros(10, dtype=int))
    assert isinstance(one_class, (float, np.floating)), "the metric must return a float (NaN) for one class only"


def check_reader(read: Callable, path: str | Path, *, dims: int = 2, **settings) -> None:
    """`read(path)` returns float32 (C, H, W) with C in 1 or 3, finite, in [0, 1]; a volume reader
    (dims=3) returns a medcls.data.volumes.Volume with 3D voxels and a positive spacing."""
    image = read(Path(path), **settings)
    if dims == 3:
        from medcls.data.volumes import Volume

        assert isinstance(image, Volume), f"a volume reader returned {type(image).__name__}, not Volume"
        assert image.voxels.ndim == 3 and all(s > 0 for s in image.spacing), "voxels must be 3D, spacing positive"
        return
    image = np.asarray(image)
    assert image.dtype == np.float32, f"the reader returned {image.dtype}, not float32"
    assert image.ndim == 3 and image.shape[0] in (1, 3), f"the reader returned shape {image.shape}, not (C, H, W)"
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1, "pixels must be finite, in [0, 1]"


def check_layout(load: Callable, source: str, options=None) -> list:
    """`load(source, options)` returns Cases with unique keys, a label each, and a file or an
    array each; returns them for further checks."""
    from medcls.data.cases import Case, DataOptions

    cases = load(source, options or DataOptions())
    assert isinstance(cases, list) and cases, "the layout returned no cases"
    assert all(isinstance(c, Case) for c in cases), "the layout must return medcls.data.cases.Case objects"
    keys = [c.key for c in cases]
    assert len(set(keys)) == len(keys), "case keys must be unique (the first repeated: " \
        f"{next(k for k in keys if keys.count(k) > 1)!r})"
    assert all(str(c.label).strip() for c in cases), "every case needs a label"
    assert all((c.path is None) != (c.array is None) for c in cases), "each case has a path or an array, not both"
    return cases
