"""The benchmark harness (benchmarks/harness.py) runs every comparison end to end (tiny settings)
and refuses bad input in one line."""

import json

from click.testing import CliRunner

from benchmarks.harness import bench
from tests.test_cli import assert_one_line_error


def run(*args):
    return CliRunner().invoke(bench, list(args))


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
