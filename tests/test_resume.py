"""Resume: a training process killed mid-run continues from its last checkpoint and ends exactly
where the uninterrupted run ends; checkpoints are replaced atomically and never unpickled."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from medcls.cli import cli
from tests.helpers import assert_one_line_error

ARGS = ["--backbone", "test_resnet", "--no-pretrained", "--image-size", "32", "--epochs", "8", "--finetune-epochs",
        "4", "--set", "patience=0", "--set", "bootstrap=100", "--set", "figures=false", "--set", "cache=memory"]


def checkpoint_epoch(run) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(run / "checkpoint.safetensors"), framework="pt") as handle:
            return json.loads(handle.metadata()["medcls"])["epoch_number"]
    except Exception:  # not written yet
        return 0


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen([sys.executable, "-m", "medcls", "train", *ARGS, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while checkpoint_epoch(killed) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # mid-run: no chance to clean up
    process.wait()
    done = checkpoint_epoch(killed)
    assert 2 <= done < 12 and not (killed / "model.safetensors").exists()

    resumed = CliRunner().invoke(cli, ["train", "--resume", str(killed)])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming after epoch {done}" in resumed.output
    assert CliRunner().invoke(cli, ["train", *ARGS, "--out", str(whole)]).exit_code == 0

    a, b = (json.loads((run / "metrics.json").read_text()) for run in (killed, whole))
    for split in ("train", "val", "test"):
        assert a[split]["roc_auc"] == pytest.approx(b[split]["roc_auc"], abs=1e-9)
        assert a[split]["loss"] == pytest.approx(b[split]["loss"], abs=1e-6)
    # Every epoch's losses and metrics, all but the last column (seconds), agree line for line.
    history = [[row.rsplit(",", 1)[0] for row in (run / "history.csv").read_text().splitlines()] for run in (killed, whole)]
    assert len(history[0]) == 13 and history[0] == history[1]
    assert not (killed / "checkpoint.safetensors").exists()  # a finished run keeps only its model


@pytest.mark.slow
def test_resume_errors_are_one_line(tmp_path):
    assert_one_line_error(CliRunner().invoke(cli, ["train", "--resume", str(tmp_path), "--epochs", "3"]),
                          "give no other options")
    (tmp_path / "run").mkdir()
    CliRunner().invoke(cli, ["train", *ARGS[:-2], "--epochs", "1", "--finetune-epochs", "0", "--out",
                             str(tmp_path / "done")])
    assert_one_line_error(CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "done")]),
                          "has no checkpoint.safetensors: it finished")
    (tmp_path / "done" / "checkpoint.safetensors").write_bytes(b"garbage")
    assert_one_line_error(CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "done")]),
                          "cannot be read")
