"""The CLI: fast help without heavy imports, listing, and a one-line error for every kind of bad input."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from medcls.cli import cli
from tests.helpers import assert_one_line_error, save_png


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_help_and_plugins_do_not_import_torch():
    code = ("import sys; from medcls.cli import cli\n"
            "try:\n    cli(['plugins'], standalone_mode=False)\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'timm', 'monai') if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_list_with_pattern():
    result = run("list", "backbones", "resnet5*")
    assert result.exit_code == 0 and "resnet50 " in result.stdout and "resnet18 " not in result.stdout
    assert "sensitivity" in run("list", "metrics").stdout
    verbose = run("list", "policies", "aggressive", "--verbose").stdout
    assert "shear = 0.2" in verbose and "rotate_deg = 40.0" in verbose


def test_missing_data_path(tmp_path):
    assert_one_line_error(run("train", "--data", str(tmp_path / "nope")), "does not exist")


def test_unknown_backbone_suggests_close_names():
    assert_one_line_error(run("train", "--backbone", "resnet5"), "unknown backbone 'resnet5'", "did you mean", "resnet50")


def test_unknown_policy_and_metric():
    assert_one_line_error(run("train", "--policy", "agressive"), "unknown policy", "'aggressive'")
    assert_one_line_error(run("train", "--set", "monitor=auroc"), "unknown metric 'auroc'")


def test_unknown_config_key(tmp_path):
    (tmp_path / "c.yaml").write_text("backbone: resnet18\nlearning_rate: 0.1\n")
    assert_one_line_error(run("train", "--config", str(tmp_path / "c.yaml")), "unknown key 'learning_rate'", "c.yaml")


@pytest.mark.parametrize("setting, message", [
    ("seed=abc", "seed = 'abc' is invalid: expected a whole number"),  # not int()'s "invalid literal"
    ("image_size=big", "image_size = 'big' is invalid: expected a whole number or 'auto'"),
    ("lr=fast", "lr = 'fast' is invalid: expected a number (e.g. 0.001 or 1e-3)"),
])
def test_text_that_is_no_number_says_what_is_expected(setting, message):
    result = run("train", "--set", setting)
    assert_one_line_error(result, message)
    assert "literal" not in result.output and "convert" not in result.output


def test_one_class_and_empty_class(image_folder):
    (image_folder / "empty").mkdir()
    assert_one_line_error(run("train", "--data", str(image_folder), "--no-pretrained"), "has no readable images")
    (image_folder / "empty").rmdir()
    shutil.rmtree(image_folder / "no")
    assert_one_line_error(run("train", "--data", str(image_folder), "--backbone", "test_resnet", "--no-pretrained"),
                          "only one class")


def test_class_too_small_to_split_is_named_with_its_data_source(image_folder):
    for extra in sorted((image_folder / "yes").iterdir())[2:]:
        extra.unlink()
    assert_one_line_error(run("train", "--data", str(image_folder), "--backbone", "test_resnet", "--no-pretrained"),
                          f"data source '{image_folder}'", "class 'yes' has only 2 patient/image group(s)",
                          "test set of 15%")


def test_a_copy_filed_under_both_classes_is_warned_about(image_folder, tmp_path):
    shutil.copy(image_folder / "yes" / "yes0.png", image_folder / "no" / "copy.png")
    result = run("train", "--data", str(image_folder), "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1",
                 "--finetune-epochs", "0", "--image-size", "32", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    expected = "1 copy of an image carries a different label from its first copy"
    assert expected in result.output and expected in (tmp_path / "run" / "report.md").read_text()
    assert "no/copy.png' (no) = '" in result.output and "yes0.png' (yes)" in result.output


@pytest.mark.parametrize("third_class", [False, True])
def test_a_val_split_without_one_class_is_refused_before_training(image_folder, tmp_path, third_class):
    # The data's own split, whose val folder lacks 'no' (binary: no threshold to choose; with a third
    # class: no ROC AUC to stop early on).
    layout = [("train", "no", range(0, 8)), ("train", "yes", range(0, 8)), ("val", "yes", range(8, 10)),
              ("test", "no", range(8, 12)), ("test", "yes", range(10, 12))]
    if third_class:
        layout += [("train", "maybe", range(0, 4)), ("val", "maybe", range(4, 6)), ("test", "maybe", range(6, 8))]
    rng = np.random.default_rng(0)
    for split, label, names in layout:
        for i in names:
            target = tmp_path / "data" / split / label / f"{label}{i}.png"
            if label == "maybe":
                save_png(target, rng.integers(0, 255, (40, 40), dtype=np.uint8))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(image_folder / label / f"{label}{i}.png", target)
    result = run("train", "--data", str(tmp_path / "data"), "--backbone", "test_resnet", "--no-pretrained",
                 "--out", str(tmp_path / "run"))
    images = 4 if third_class else 2
    assert_one_line_error(result, f"the val split ({images} images) has no case of class 'no'",
                          "add data, raise val_fraction")
    assert "epoch" not in result.output and not (tmp_path / "run").exists()


def test_csv_without_needed_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,finding\na.png,x\n")
    assert_one_line_error(run("train", "--data", str(tmp_path / "m.csv"), "--no-pretrained"),
                          "no column 'path'", "path_column")


def test_cuda_asked_for_but_absent(tmp_path, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run("train", "--device", "cuda", "--no-pretrained", "--backbone", "test_resnet"),
                          "no CUDA GPU is available", "--device cpu")
    assert not list((tmp_path / "runs").iterdir())  # the refused run leaves no empty runs/<name> behind


def test_pretrained_unreachable_offline_names_sources_and_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network
    result = run("train", "--backbone", "test_resnet", "--pretrained", "--epochs", "1")
    assert_one_line_error(result, "no pretrained weights for 'test_resnet'", "timm-hub", "--weights", "--no-pretrained")


def test_weights_file_must_be_safetensors(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"pickle")
    assert_one_line_error(run("train", "--backbone", "test_resnet", "--weights", str(tmp_path / "w.pth")),
                          "never unpickles")


def test_bad_run_folder(tmp_path):
    assert_one_line_error(run("evaluate", str(tmp_path)), "has no model.safetensors")


def test_existing_run_is_never_overwritten(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"previous run")
    result = run("train", "--backbone", "test_resnet", "--no-pretrained", "--out", str(tmp_path))
    assert_one_line_error(result, "already holds a run", "--set overwrite=true")
    assert (tmp_path / "model.safetensors").read_bytes() == b"previous run"


def test_experiment_rejects_bad_vary():
    assert_one_line_error(run("experiment", "--vary", "policy"), "give KEY=VALUE1[,VALUE2,...]")
    assert_one_line_error(run("experiment", "--vary", "colour=red,blue"), "not a configuration key")
    assert_one_line_error(run("experiment", "--vary", "finetune=scratch,half"), "unknown value 'half'")


@pytest.mark.slow
def test_train_without_out_keeps_its_run_in_runs(tmp_path):
    """`medcls train` without --out writes runs/<backbone>-<date>-<time> and the folder outlives the
    process (the notebook API's temporary folder must not be what the CLI user gets)."""
    done = subprocess.run([sys.executable, "-m", "medcls", "train", "--backbone", "test_resnet", "--no-pretrained",
                           "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0", "--set", "bootstrap=50",
                           "--set", "figures=false"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    kept = list((tmp_path / "runs").glob("test_resnet-*/model.safetensors"))
    assert len(kept) == 1 and f"Run folder: runs/{kept[0].parent.name} " in done.stdout
    assert "ResourceWarning" not in done.stderr
