"""medcls logs through `logging.getLogger("medcls")` and never prints: progress at INFO, problems
the user should see at WARNING. The CLI attaches a handler that writes them to stderr; a notebook
sees warnings through Python's default handler and can ask for more with `logging.basicConfig`."""

from __future__ import annotations

import contextlib
import logging

logger = logging.getLogger("medcls")


@contextlib.contextmanager
def quiet(level: int = logging.WARNING):
    """Only messages at `level` or above while inside (e.g. the many runs of an experiment)."""
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)
