"""medcls logs through `logging.getLogger("medcls")` and never prints: progress at INFO, problems
the user should see at WARNING. The CLI attaches a handler that writes them to stderr. In a notebook
or script that configured no logging, `DefaultHandler` shows INFO and above on stderr; once the
user configures logging (`logging.basicConfig`, a root handler), their configuration decides."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

logger = logging.getLogger("medcls")


class DefaultHandler(logging.Handler):
    """medcls's messages on stderr while nobody has configured logging (what a notebook user sees
    without `logging.basicConfig`); once the root logger has a handler, records go to the root's
    handlers instead, each at its own level or, where it has none, at the root's level (so
    `basicConfig(level=WARNING)` hides medcls's INFO lines as it hides everyone's)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        if any(handler is not self for handler in logger.handlers):
            return  # handlers attached to medcls's logger itself (a test's capture, the user's) take it
        root = logging.getLogger()
        if root.handlers:
            for handler in root.handlers:
                if record.levelno >= (handler.level or root.getEffectiveLevel()):
                    handler.handle(record)
            return
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        print(prefix + record.getMessage(), file=sys.stderr, flush=True)


def in_notebook() -> bool:
    """A Jupyter (IPython kernel) session: bars there are tqdm's notebook widgets."""
    return "ipykernel" in sys.modules


def auto_stage_bars(description: str, total: int | None, unit: str):
    """A stage's bar as tqdm.auto draws it (a widget in a notebook, text on a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(desc=description, total=total, unit=unit, leave=False)


def epoch_bars(stage: str, epoch: int):
    """A per-epoch progress callback (images done) over a tqdm.auto bar: `medcls.train(progress=...)`."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"{stage} epoch {epoch}", unit="img", leave=False)

    class Progress:
        def __call__(self, n):
            bar.update(n)

        def close(self):
            bar.close()

    return Progress()


def default_epoch_bars():
    """What `progress=None` means for training from Python: bars in a notebook, none elsewhere."""
    return epoch_bars if in_notebook() else None


def install_default_handler() -> None:
    """Show INFO in a session without logging configuration (done once, at import): only when the
    medcls logger has no handler and its level was not set by the user."""
    if not logger.handlers and logger.level == logging.NOTSET:
        logger.addHandler(DefaultHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False  # DefaultHandler forwards to the root's handlers itself
    if in_notebook() and _bars is None:
        show_progress_bars(auto_stage_bars)


install_default_handler()
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
