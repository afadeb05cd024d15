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


def test_the_timed_warm_up_changes_nothing_the_run_trains_with():
    """Weights, batch-norm statistics, gradients, trainable flags and the mode are as before."""
    import torch

    from medcls.core.execution import Execution
    from medcls.core.timing import Workload, estimate

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                                torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.rand(2, 1, 16, 16))
    model[0].requires_grad_(False)  # a frozen block stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(8, 1, 16, 16)
    rng = torch.random.get_rng_state()
    plan = Workload(train_images=100, val_images=20, scored_images=140, frozen_epochs=2, full_epochs=3,
                cached_features=False)
    told = estimate(model, images, Execution(torch.device("cpu")), plan)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad and model.training
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert told.seconds > 0 and told.train_per_s > 0 and "100 images x 5 epochs" in told.describe()


def test_a_run_tells_its_time_before_the_first_epoch(tmp_path):
    from tests.helpers import TINY, run

    result = run("train", *TINY, "--data", "synthetic", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    told = next(i for i, line in enumerate(lines) if line.startswith("time: about "))
    first_epoch = next(i for i, line in enumerate(lines) if "epoch 1:" in line)
    assert told < first_epoch and "img/s training" in lines[told]


def test_a_notebook_gets_bars_for_stages_and_epochs(monkeypatch):
    """In a Jupyter kernel `progress=None` means tqdm's bars (widgets there); elsewhere none; False: none."""
    import sys
    import types

    from medcls.api import epoch_progress

    assert epoch_progress(None) is None and epoch_progress(False) is None
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert logs.in_notebook() and epoch_progress(None) is logs.epoch_bars
    assert epoch_progress(False) is None
    bar = logs.epoch_bars("frozen", 1)
    bar(16)
    bar.close()
