"""Progress for every long stage: a bar on a terminal (the CLI installs it), one log line with the
stage's time otherwise (logs, CI, notebooks); decoding counts every image."""

import logging

import pytest
from click.testing import CliRunner

from medcls import logs
from medcls.cli import cli


class Recorder:
    def __init__(self):
        self.bars = []

    def __call__(self, description, total, unit):
        recorder = self

        class Bar:
            def __init__(self):
                self.description, self.total, self.unit, self.done, self.closed = description, total, unit, 0, False
                recorder.bars.append(self)

            def update(self, n):
                self.done += n

            def close(self):
                self.closed = True

        return Bar()


@pytest.fixture
def bars():
    recorder = Recorder()
    logs.show_progress_bars(recorder)
    yield recorder
    logs.show_progress_bars(None)


def test_a_stage_is_one_log_line_without_a_terminal(caplog):
    logs.show_progress_bars(None)
    with caplog.at_level(logging.INFO, logger="medcls"):
        with logs.stage("bootstrap intervals", total=3, unit="split") as advance:
            for _ in range(3):
                advance()
    lines = [r.getMessage() for r in caplog.records if r.name == "medcls"]
    assert len(lines) == 1 and lines[0].startswith("bootstrap intervals: ") and lines[0].endswith(" s")


def test_a_stage_drives_a_bar_and_closes_it_even_on_error(bars):
    with pytest.raises(RuntimeError):
        with logs.stage("folds", total=5, unit="fold") as advance:
            advance(2)
            raise RuntimeError("a fold failed")
    (bar,) = bars.bars
    assert (bar.description, bar.total, bar.unit, bar.done, bar.closed) == ("folds", 5, "fold", 2, True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.helpers import FAST

    out = tmp_path_factory.mktemp("progress") / "run"
    result = CliRunner().invoke(cli, ["train", *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_logs_one_line_per_stage(trained, tmp_path):
    run, output = trained
    assert "decoding 400 images (or reading them from the disk cache): " in output
    assert "figures and 200-resample intervals of train, val, test: " in output
    exported = CliRunner().invoke(cli, ["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "ts")])
    assert exported.exit_code == 0 and "as torchscript, checked against medcls's probabilities: " in exported.output


def test_decoding_and_intervals_report_progress(trained, bars, tmp_path):
    import medcls

    medcls.load_run(trained[0], device="cpu").evaluate(out=tmp_path / "ev", bootstrap=100)
    described = {bar.description: bar for bar in bars.bars}
    decoding = next(bar for name, bar in described.items() if name.startswith("decoding 400 images"))
    assert decoding.total == decoding.done == 400 and decoding.closed
    assert any(name.startswith("figures and 100-resample intervals of") for name in described)


NOTEBOOK = """
import logging, sys
import medcls
from medcls.logs import logger, stage
with stage("decoding 3 images", total=3):
    pass
logger.info("plain info")
if sys.argv[1] == "configured":
    logging.basicConfig(level=logging.WARNING, format="root: %(message)s")
    logger.info("hidden by the user's level")
    logger.warning("through the user's handler")
"""


@pytest.mark.parametrize("mode", ["bare", "configured"])
def test_a_session_without_logging_configuration_sees_info_and_a_configured_one_decides(mode):
    """A notebook (no basicConfig) sees medcls's progress lines; once the user configures logging,
    their level and format apply: INFO hidden at WARNING, warnings in their format, nothing twice."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", NOTEBOOK, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("decoding 3 images: ") and lines[1] == "plain info"
    if mode == "configured":
        assert lines[2:] == ["root: through the user's handler"]
    else:
        assert len(lines) == 2
