"""medcls logs through `logging.getLogger("medcls")` and never prints: progress at INFO, problems
the user should see at WARNING. The CLI attaches a handler that writes them to stderr; a notebook
sees warnings through Python's default handler and can ask for more with `logging.basicConfig`."""

from __future__ import annotations

import contextlib
import logging
import time

logger = logging.getLogger("medcls")
# Set by the CLI when stderr is a terminal: bars(description, total, unit) -> an object with
# update(n) and close(). Without it (notebooks, logs, CI) a stage is one INFO line when it ends.
_bars = None


def show_progress_bars(bars) -> None:
    """Show a progress bar for every long stage (`None`: one log line per stage instead)."""
    global _bars
    _bars = bars


@contextlib.contextmanager
def stage(description: str, total: int | None = None, unit: str = "it"):
    """A long step (decoding a data set, bootstrap intervals, folds, an experiment's runs,
    explain, export, evaluate): a bar on a terminal, and one INFO line with its time when it
    ends. Yields `advance(n=1)`, to call as the work gets done."""
    started = time.perf_counter()
    bar = _bars(description, total, unit) if _bars is not None else None

    def advance(n: int = 1) -> None:
        if bar is not None:
            bar.update(n)

    try:
        yield advance
    finally:
        if bar is not None:
            bar.close()
    logger.info(f"{description}: {time.perf_counter() - started:.1f} s")


@contextlib.contextmanager
def quiet(level: int = logging.WARNING):
    """Only messages at `level` or above while inside (e.g. the many runs of an experiment)."""
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)
