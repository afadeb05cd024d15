"""DDP: two CPU processes on the gloo backend, launched by torchrun (`--devices 2`), give the same
metrics as one process; only rank 0 writes; options that cannot shard are refused."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from medcls.cli import cli

# Full-batch steps on a pretrained, batch-norm-frozen backbone without dropout or augmentation:
# two half-batches averaged by DDP are then the same gradient as one whole batch, so the runs
# must agree to rounding (stated tolerance: 1e-6 on ROC AUC, 1e-5 on the loss).
ARGS = ["--backbone", "efficientnet_lite0", "--pretrained", "--image-size", "32", "--policy", "none",
        "--set", "dropout=0", "--epochs", "2", "--finetune-epochs", "1", "--lr", "0.01", "--batch-size", "1000",
        "--set", "bootstrap=100", "--set", "figures=false", "--set", "patience=0", "--set", "cache=memory"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    pytest.importorskip("medcls_efficientnet_lite", reason="the offline ImageNet weights plugin is not installed")
    one = CliRunner().invoke(cli, ["train", *ARGS, "--out", str(tmp_path / "one")])  # in this process: no start-up
    assert one.exit_code == 0, one.output
    two = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "medcls", "train", *ARGS, "--devices", "2", "--out", str(two)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    assert done.stdout.count("Run folder:") == 1  # rank 1 neither reports nor writes
    for split in ("train", "val", "test"):
        assert runs["two"][split]["roc_auc"] == pytest.approx(runs["one"][split]["roc_auc"], abs=1e-6)
        assert runs["two"][split]["loss"] == pytest.approx(runs["one"][split]["loss"], abs=1e-5)


def test_options_that_cannot_shard_are_refused():
    from medcls.config import make_config
    from medcls.core.distributed import Distributed, check_config
    from medcls.errors import ConfigError

    two = Distributed(rank=0, world=2)
    with pytest.raises(ConfigError, match="class_balance=sampler cannot shard"):
        check_config(make_config({"class_balance": "sampler"}), two)
    with pytest.raises(ConfigError, match="--folds and --ensemble run one process per model"):
        check_config(make_config({"folds": 3}), two)
    check_config(make_config({"class_balance": "sampler"}), Distributed())  # one process: anything goes


def test_devices_is_removed_from_the_command_torchrun_runs():
    from medcls.core.distributed import without_option

    argv = ["train", "--devices", "2", "--data", "x", "--devices=4", "--epochs", "1"]
    assert without_option(argv, "--devices") == ["train", "--data", "x", "--epochs", "1"]
