"""`medcls augment preview`: what a policy does to real images, before training with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcls.config import TrainConfig
from medcls.core.augment import make_policy
from medcls.data.prepared import prepare_data
from medcls.reports.plots import preview_grid


def preview(config: TrainConfig, registries, *, count: int, views: int, out: Path) -> tuple[int, int]:
    """A PNG grid: `count` images drawn with the config's seed, each beside `views` augmented versions."""
    transform, _ = make_policy(config, registries)
    prepared = prepare_data(config, registries, split=False)
    rng = np.random.default_rng(config.seed)
    rows = sorted(rng.choice(len(prepared.cache.kept), size=min(count, len(prepared.cache.kept)), replace=False))
    images = [prepared.cache.batch([r])[0] for r in rows]
    titles = [prepared.cases[prepared.cache.kept[r]].label for r in rows]
    return preview_grid(images, transform, views, out, titles)
