"""The benchmark harness (benchmarks/harness.py) runs every comparison end to end (tiny settings)
and refuses bad input in one line."""

import json

import pytest
from click.testing import CliRunner

from benchmarks.harness import bench
from tests.helpers import assert_one_line_error


def run(*args):
    return CliRunner().invoke(bench, list(args))


@pytest.mark.slow
def test_bench_writes_every_figure_and_the_table(tmp_path):
    out = tmp_path / "bench.json"
    result = run("--limit", "16", "--image-size", "32", "--batch-size", "8", "--rounds", "1",
                 "--steps", "1", "--json", str(out))
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["loader"]["images"] == 16 and figures["loader"]["naive_monai_img_s"] > 0
    for key in ("end_to_end_vs_model", "stage1_features_vs_backbone", "default_vs_fp32_nchw", "data_wait_fraction"):
        assert figures["model"][key] > 0, key
    assert figures["reader"]["ratio"] > 0 and figures["machine"]["torch"]
    assert "end-to-end training / model only" in result.stdout and "naive MONAI" in result.stdout


def test_bench_compresses_only_dicom(tmp_path):
    assert_one_line_error(run("--limit", "2", "--compress", "rle"), "--compress applies to DICOM")


@pytest.mark.slow
def test_gpu_check_says_why_it_cannot_run_and_reads_each_run_s_own_figures(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from benchmarks.gpu_check import augment_figure, harness_figure, run_figure, timm_figure

    if not torch.cuda.is_available():  # CI: one line, status 3, nothing installed or written
        done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "g")],
                              capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 3 and "no CUDA GPU is visible" in done.stdout and not (tmp_path / "g").exists()
    # The table's figure for a training step comes from that step's own run folder only.
    run = tmp_path / "train-3d"
    assert run_figure(run) == "no finished run in train-3d/"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"seconds": 12.5, "device": "cuda:0"}))
    (run / "metrics.json").write_text(json.dumps({"test": {"roc_auc": 0.91234}}))
    assert run_figure(run) == "12.5 s on cuda:0, test ROC AUC 0.912"
    # The harness and timm rows read their own JSON; without it the step's last output line stands.
    assert harness_figure(tmp_path, "last line") == timm_figure(tmp_path, "last line") == "last line"
    (tmp_path / "bench.json").write_text(json.dumps({"model": {"img_s": {"end_to_end": 2710.4, "default": 2890.0},
                                                               "gpu_busy_fraction": 0.934}}))
    (tmp_path / "timm.json").write_text(json.dumps({"model": "resnet50", "train_samples_per_sec": 2950.2}))
    assert harness_figure(tmp_path, "") == "train img/s end to end 2710, model alone 2890; GPU busy 0.93"
    assert timm_figure(tmp_path, "") == "train img/s 2950 (timm benchmark.py)"
    assert augment_figure(tmp_path, "last line") == "last line"
    name = "policy interpretable, batched"
    (tmp_path / "augment.json").write_text(json.dumps({"images_per_second": {name: 9100.4, "train step, top 2": 3000.0},
                                                       "ratios": {name: {"vs_stage1": 1.5, "vs_stage2": 3.03}}}))
    assert augment_figure(tmp_path, "") == "interpretable 9100 img/s (3.0x a top-2-blocks step)"
