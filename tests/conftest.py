"""Shared fixtures: a fresh plugin manager per test, fake installed distributions, image folders."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from medcls.plugins.manager import get_plugin_manager
from medcls.plugins.registry import Registries
from tests.helpers import save_png




@pytest.fixture(autouse=True, scope="session")
def image_store_in_tmp(tmp_path_factory):
    """Runs keep decoded images in a disk store; tests (and the CLI they start) use a temporary one."""
    import os

    os.environ["MEDCLS_CACHE_DIR"] = str(tmp_path_factory.mktemp("medcls-cache"))


@pytest.fixture
def pm():
    return get_plugin_manager()


@pytest.fixture
def registries(pm):
    return Registries(pm)


@pytest.fixture
def make_distribution(tmp_path, monkeypatch):
    """Install a fake distribution (dist-info + module) that importlib.metadata really finds."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(dist_name: str, module: str, source: str, entry_point: str | None = None, version: str = "1.0"):
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[medcls]\n{entry_point or module} = {module}\n")
        import importlib

        importlib.invalidate_caches()
        return site

    yield make
    import sys

    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]


@pytest.fixture
def image_folder(tmp_path):
    """A folder-per-class data set of 2 x 12 small greyscale PNGs: bright square = 'yes'."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for label in ("no", "yes"):
        for i in range(12):
            image = (rng.random((40, 40)) * 60).astype(np.uint8)
            if label == "yes":
                image[10:25, 12:28] = 220
            save_png(root / label / f"{label}{i}.png", image)
    return root
