"""Where a command writes: one rule for every output folder. A folder is claimed before anything is
written into it (created by this process with an atomic mkdir, or an empty folder taken by an
exclusively created claim file), never one that holds a run or anything else, so two commands
started together never share a folder and nothing already written is replaced."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from medcls.errors import ConfigError

CLAIM = ".medcls-claim"  # who claimed the folder, and when; its presence keeps every other command out
# Files that make a folder a run (finished, interrupted, cross-validated or an ensemble's).
RUN_MARKERS = ("model.safetensors", "checkpoint.safetensors", "cv_metrics.json", "metrics.json", "config.yaml",
               "model.json")


def run_marker(folder: Path) -> str | None:
    """The first file that makes `folder` a run folder, else None."""
    return next((marker for marker in RUN_MARKERS if (folder / marker).exists()), None)


def claim_folder(out, name: str = "--out", by: str = "medcls") -> Path:
    """`out`, claimed for this process: refused when it is a file, holds a run or anything else, or
    another process claimed it first (a one-line ConfigError naming the folder and the fix)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{name} '{out}' is a file: give a folder")
    if out.is_dir():
        marker = run_marker(out)
        if marker:
            raise ConfigError(f"{name} '{out}' holds a run ({marker}): write outside it, e.g. '{out.parent / (out.name + '-' + by.split()[-1])}'; nothing in a run folder is replaced")
        if any(out.iterdir()):
            raise ConfigError(f"{name} '{out}' exists and is not an empty folder: give a new one (nothing is overwritten)")
    else:
        with contextlib.suppress(FileExistsError):  # made by someone else a moment ago: the claim decides
            out.mkdir(parents=True)  # an unwritable place raises OSError: the CLI's file-system error
    try:
        with open(out / CLAIM, "x", encoding="utf-8") as fh:
            fh.write(f"claimed by `{by}` (process {os.getpid()}) at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    except FileExistsError:
        raise ConfigError(f"{name} '{out}' was claimed by another command a moment ago: give another folder") from None
    return out


def reserve_folder(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ...: the first that this process creates itself (atomic mkdir)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        candidate = base if number == 1 else base.with_name(f"{base.name}-{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"cannot create a new folder next to '{base}': give --out")


@contextlib.contextmanager
def removed_if_left_empty(folder: Path | None):
    """A folder claimed for this job is removed again when the job stops before writing anything
    into it but its claim: a refused run leaves no empty folder behind."""
    try:
        yield
    except BaseException:
        if folder is not None:
            with contextlib.suppress(OSError):
                if [p.name for p in folder.iterdir()] == [CLAIM]:
                    (folder / CLAIM).unlink()
                folder.rmdir()  # only succeeds on an empty folder: nothing written is lost
        raise
