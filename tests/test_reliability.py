"""Bad input never gives a traceback or a silently wrong result, and nothing already written is lost:
one test (parametrised where there are several inputs) per root cause found by trying 182 bad
inputs against the CLI. Each asserts the one-line message, the documented exit status (3
configuration, 4 data, 5 file system) and that files written before are unchanged."""

import csv
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medcls.errors import CONFIG, DATA, FILE_SYSTEM
from tests.helpers import FIGURES, TINY, assert_one_line_error, run, save_png

def snapshot(folder: Path) -> dict:
    """Every file below `folder` with its content hash: what must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    rng = np.random.default_rng(0)
    for label in ("no", "yes"):
        for i in range(12):
            image = (rng.random((40, 40)) * 60).astype(np.uint8)
            if label == "yes":
                image[10:25, 12:28] = 220
            save_png(root / "data" / label / f"{label}{i}.png", image)
    result = run("train", *TINY, "--data", root / "data", "--out", root / "run")
    assert result.exit_code == 0, result.output
    return root


# 1. Numbers are range-checked before anything runs or is written.
@pytest.mark.parametrize("args, message", [
    (["--epochs", "-1"], "epochs = -1 is invalid"),
    (["--set", "val_fraction=1.5"], "val_fraction = 1.5 is invalid"),
    (["--lr", "-1"], "lr = -1.0 is invalid"),
    (["--lr", "nan"], "lr = nan is invalid"),
    (["--batch-size", "0"], "batch_size = 0 is invalid"),
    (["--image-size", "0"], "image_size = 0 is invalid"),
    (["--set", "dropout=2"], "dropout = 2.0 is invalid"),
    (["--ensemble", "-2"], "ensemble = -2 is invalid"),
    (["--set", "bootstrap=0"], "bootstrap = 0 is invalid"),
    (["--aug", "rotate_deg=abc"], "aug rotate_deg = 'abc' is invalid"),
    (["--set", "test_fraction=0"], "no test cases after splitting"),
])
def test_numbers_are_checked_before_training(args, message, tmp_path, image_folder):
    out = tmp_path / "run"
    result = run("train", "--backbone", "test_resnet", "--no-pretrained", "--data", image_folder, *args, "--out", out)
    assert_one_line_error(result, message)
    assert not (out / "model.safetensors").exists()


# 2. Run folders are verified on load.
@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "model.safetensors").write_bytes(b""), "not the file this run wrote"),
    (lambda run: (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:500]),
     "not the file this run wrote"),
    (lambda run: (run / "model.json").write_text("{not json"), "is not valid JSON"),
    (lambda run: edit_info(run, classes=None), "lacks classes"),
    (lambda run: edit_info(run, in_chans=3), "was edited after the run wrote it"),
    (lambda run: edit_info(run, classes=["a", "b", "c"]), "was edited after the run wrote it"),
    (lambda run: edit_info(run, classes=["yes", "no"]), "was edited after the run wrote it"),  # decisions inverted
    (lambda run: edit_info(run, backbone="test_efficientnet"), "was edited after the run wrote it"),
    (lambda run: edit_info(run, weights_sha256=None), "has no weights_sha256"),
    (lambda run: edit_info(run, info_sha256=None), "has no info_sha256"),
    (lambda run: edit_info(run, rehash=True, threshold=1.5), "threshold 1.5 is not a probability in [0, 1]"),
    (lambda run: edit_info(run, rehash=True, temperature=-1), "temperature -1 is not a positive number"),
    (lambda run: edit_info(run, rehash=True, classes=["no", "no"]), "name a class twice"),
    (lambda run: edit_info(run, rehash=True, in_chans=3), "does not fit the model"),
    (lambda run: edit_info(run, rehash=True, backbone="test_efficientnet"), "were saved from 'test_resnet'"),
])
@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "explain"])
def test_a_damaged_run_folder_is_a_one_line_error(trained, tmp_path, damage, message, command):
    run_copy = tmp_path / "run"
    shutil.copytree(trained / "run", run_copy)
    damage(run_copy)
    before = snapshot(run_copy)
    image = trained / "data" / "yes" / "yes0.png"
    args = {"predict": [run_copy, image], "evaluate": [run_copy], "export": [run_copy, "-o", tmp_path / "x"],
            "explain": [run_copy, image, "-o", tmp_path / "cams"]}[command]
    assert_one_line_error(run(command, *args), message, code=DATA)
    assert snapshot(run_copy) == before


def edit_info(run: Path, rehash: bool = False, **changes) -> None:
    """Change model.json's fields; `rehash` also updates its own hash, as a careful forger would."""
    import json

    from medcls.core.runs import info_digest

    info = json.loads((run / "model.json").read_text())
    for key, value in changes.items():
        if value is None:
            info.pop(key)
        else:
            info[key] = value
    if rehash:
        info["info_sha256"] = info_digest(info)
    (run / "model.json").write_text(json.dumps(info))


def test_any_one_edited_field_of_model_json_is_named_never_used(trained, tmp_path):
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from medcls.core.runs import read_model_info
    from medcls.errors import DataError

    run_copy = tmp_path / "run"
    shutil.copytree(trained / "run", run_copy)
    original = (run_copy / "model.json").read_text()
    fields = sorted(json.loads(original))
    values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=5),
                       st.lists(st.text(max_size=3), max_size=3))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(field=st.sampled_from(fields), value=values)
    def edited(field, value):
        info = json.loads(original)
        if info[field] == value:
            return
        info[field] = value
        (run_copy / "model.json").write_text(json.dumps(info))
        with pytest.raises(DataError) as error:
            read_model_info(run_copy)
        assert "\n" not in str(error.value) and "model.json" in str(error.value)

    edited()
    (run_copy / "model.json").write_text(original)
    assert read_model_info(run_copy)["classes"] == ["no", "yes"]


# 3. A data set whose own split has no test cases gets a held-out test split, said in a warning.
def test_own_split_without_test_gets_a_held_out_test(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for label in ("no", "yes"):
            for i in range(10):
                image = (rng.random((32, 32)) * 60).astype(np.uint8)
                image[8:20, 8:20] += 150 if label == "yes" else 0
                save_png(tmp_path / "data" / split / label / f"{label}{i}.png", image)
    result = run("train", *TINY, "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "own split has no test cases" in result.stderr
    with open(tmp_path / "run" / "splits.csv") as fh:
        splits = [row["split"] for row in csv.DictReader(fh)]
    assert splits.count("test") >= 2 and splits.count("val") == 20


# 4 and 5. NaN/inf pixels and malformed .npz arrays are refused with the file and the array named.
@pytest.mark.parametrize("arrays, message", [
    ({"train_images": np.full((8, 8, 8), np.nan, np.float32)}, "NaN or infinite"),
    ({"train_images": np.full((8, 8, 8), np.inf, np.float32)}, "NaN or infinite"),
    ({"train_labels": np.array([0.5, 1, 0, 1, 0, 1, 0, 1])}, "train_labels[0] = 0.5 is not a class"),
    ({"train_images": np.zeros((8, 64), np.uint8)}, "give (N, H, W)"),
    ({"train_images": np.zeros((8, 8, 8, 7), np.uint8)}, "no channel axis of 1, 3 or 4"),
    ({"train_images": np.array([np.zeros(3), None] * 4, dtype=object)}, "without unpickling"),
])
def test_bad_npz_arrays_are_refused(tmp_path, arrays, message):
    payload = {"train_images": np.zeros((8, 8, 8), np.uint8), "train_labels": np.array([0, 1] * 4)}
    payload.update(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **payload)
    assert_one_line_error(run("train", *TINY, "--data", path, "--out", tmp_path / "run"), "bad.npz", message,
                          code=DATA)


def test_a_nifti_with_nan_voxels_is_skipped_and_named(tmp_path):
    import nibabel

    from medcls.data.synthetic import write_synthetic_volumes

    write_synthetic_volumes(tmp_path / "vol", 16, 16, fmt="nifti")
    victim = sorted((tmp_path / "vol").rglob("*.nii*"))[0]
    image = nibabel.load(victim)
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    voxels[0, 0, 0] = np.nan
    nibabel.save(nibabel.Nifti1Image(voxels, image.affine), victim)
    result = run("train", "--backbone", "example_tiny_cnn3d", "--no-pretrained", "--data", tmp_path / "vol",
                 "--set", "volume_size=8", "--epochs", "1", "--finetune-epochs", "0", "--set", "bootstrap=50",
                 "--out", tmp_path / "run", "--strict")
    assert_one_line_error(result, victim.name, "NaN or infinite", code=DATA)



@pytest.mark.parametrize("kind", ["nifti", "tiff"])
def test_non_finite_2d_pixels_are_refused_before_scaling(tmp_path, kind):
    import nibabel
    from PIL import Image

    from medcls.data.readers import read_nifti, read_pil
    from medcls.errors import DataError

    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    pixels[2, 3] = np.nan if kind == "nifti" else np.inf  # the percentiles of this were NaN: a black image
    path = tmp_path / ("slice.nii.gz" if kind == "nifti" else "slice.tiff")
    if kind == "nifti":
        nibabel.save(nibabel.Nifti1Image(pixels, np.eye(4)), path)
    else:
        Image.fromarray(pixels, mode="F").save(path)
    with pytest.raises(DataError, match=r"slice\.(nii\.gz|tiff)' has 1 NaN or infinite pixel\(s\) of 64"):
        (read_nifti if kind == "nifti" else read_pil)(path)

# 6 and 7. Manifests: other encodings and binary files, missing and inconsistent labels.
@pytest.mark.parametrize("content, message", [
    ("path,label\nnö.png,yes\n".encode("latin-1"), "is not UTF-8 text"),
    (bytes(range(256)) * 4, "manifest"),
    (b"path,label\na.png,yes\nb.png,nan\n", "line 3: label 'nan' means a missing label"),
    (b"path,label\na.png,True\nb.png,true\n", "line 3: label 'true' differs from 'True' (line 2) only in case"),
])
def test_manifest_problems_name_the_line(tmp_path, content, message):
    for name in ("a.png", "b.png", "nö.png"):
        save_png(tmp_path / name, np.zeros((8, 8), np.uint8))
    (tmp_path / "m.csv").write_bytes(content)
    assert_one_line_error(run("train", *TINY, "--data", tmp_path / "m.csv", "--out", tmp_path / "run"), message,
                          code=DATA)


# 9. Text from the data never reaches a parser: class names with mathtext characters.
def test_class_names_with_dollar_signs_are_drawn_as_written(tmp_path):
    rng = np.random.default_rng(2)
    for label in ("$x^$", "normal"):
        for i in range(12):
            image = (rng.random((32, 32)) * 60).astype(np.uint8)
            image[8:20, 8:20] += 150 if label == "normal" else 0
            save_png(tmp_path / "data" / label / f"{i}.png", image)
    result = run("train", *TINY, *FIGURES, "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "confusion_matrix.png").stat().st_size > 0


# 10. Run folders: an interrupted, cross-validated or ensemble run is never overwritten; default
# names never collide.
@pytest.mark.parametrize("markers, message", [
    (["config.yaml", "checkpoint.safetensors"], "continue it with --resume"),
    (["config.yaml", "cv_metrics.json"], "already holds a run"),
    (["config.yaml", "metrics.json"], "already holds a run"),
])
@pytest.mark.parametrize("mode", [[], ["--folds", "2"], ["--ensemble", "2"]])
def test_any_run_folder_is_protected(tmp_path, image_folder, markers, message, mode):
    out = tmp_path / "run"
    out.mkdir()
    for marker in markers:
        (out / marker).write_text("earlier work")
    before = snapshot(out)
    assert_one_line_error(run("train", *TINY, "--data", image_folder, "--out", out, *mode), message, code=CONFIG)
    assert snapshot(out) == before


def test_default_run_folders_started_in_the_same_second_differ(tmp_path):
    from medcls.workflows.train import reserve_folder

    first, second = reserve_folder(tmp_path / "runs" / "a"), reserve_folder(tmp_path / "runs" / "a")
    assert first != second and first.is_dir() and second.is_dir()


# 11. File-system errors are one line with their own exit status.
def test_an_unwritable_out_is_a_one_line_error(tmp_path, image_folder):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run("train", *TINY, "--data", image_folder, "--out", blocker / "run")
    assert_one_line_error(result, "cannot read or write", code=FILE_SYSTEM)
    assert blocker.read_text() == "not a folder"


# 12. evaluate checks the files against the hashes in splits.csv.
def test_evaluate_refuses_a_changed_test_file(trained, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(trained / "data", data)
    run_copy = tmp_path / "run"
    shutil.copytree(trained / "run", run_copy)
    # the run's config points at the original data: re-point it at the copy, then change a test file
    config = (run_copy / "config.yaml").read_text().replace(str(trained / "data"), str(data))
    (run_copy / "config.yaml").write_text(config)
    splits = (run_copy / "splits.csv").read_text().replace(str(trained / "data"), str(data))
    (run_copy / "splits.csv").write_text(splits)
    with open(run_copy / "splits.csv") as fh:
        rows = list(csv.DictReader(fh))
    test_file = Path(next(r["key"] for r in rows if r["split"] == "test"))
    train_file = Path(next(r["key"] for r in rows if r["split"] == "train" and r["label"] == test_file.parent.name))
    shutil.copyfile(train_file, test_file)  # a training image in the test set's place
    assert_one_line_error(run("evaluate", run_copy, "--bootstrap", "100"), "changed since run", test_file.name,
                          "--allow-changed", code=DATA)
    allowed = run("evaluate", run_copy, "--bootstrap", "100", "--allow-changed")
    assert allowed.exit_code == 0 and "evaluated anyway" in allowed.stderr


# Also: predict fails (after writing its CSV) when no input could be read.
def test_predict_exits_non_zero_when_nothing_could_be_read(trained, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "p.csv"
    result = run("predict", trained / "run", broken, "-o", out)
    assert result.exit_code == DATA and "none of the inputs could be read" in result.stderr
    assert "cannot be decoded" in out.read_text()


def test_predict_and_compare_never_replace_an_existing_file_unasked(trained, tmp_path):
    image = next((trained / "data").rglob("*.png"))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png,yes\n")  # the user's own file, named by mistake
    for args in (("predict", trained / "run", image), ("compare", trained / "run", trained / "run")):
        refused = run(*args, "-o", labels)
        assert refused.exit_code == 3 and "exists: give a new file name or pass --overwrite" in refused.stderr
        assert labels.read_text() == "path,label\na.png,yes\n"
    replaced = run("predict", trained / "run", image, "-o", labels, "--overwrite")
    assert replaced.exit_code == 0 and labels.read_text().startswith("file,prob_")


def test_exit_statuses_are_documented():
    from medcls import errors

    assert (errors.USAGE, errors.CONFIG, errors.DATA, errors.FILE_SYSTEM) == (2, 3, 4, 5)
    assert errors.DataError.exit_code == 4 and errors.ConfigError.exit_code == 3
    assert os.path.exists(Path(__file__).resolve().parents[1] / "docs" / "reliability.md")


def test_library_warnings_are_one_medcls_line_each(tmp_path):
    """A raw library warning (here Pillow's decompression-bomb check on a huge image) is shown once
    as a medcls warning line, not as Python's multi-line warning."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for label in ("no", "yes"):
        for i in range(8):
            save_png(tmp_path / "data" / label / f"{i}.png", (rng.random((16, 16)) * 60 + 150 * (label == "yes")).astype(np.uint8))
    Image.new("L", (200, 200)).save(tmp_path / "data" / "yes" / "big.png")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 20_000  # 40,000 pixels is over it (and under twice it): a warning, not an error
    try:
        result = run("train", *TINY, "--data", tmp_path / "data", "--out", tmp_path / "run", "--set", "cache=memory")
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "DecompressionBombWarning" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: DecompressionBombWarning from PIL: ")


@pytest.mark.parametrize("command", [
    lambda run, other, image: ["export", run, "--format", "hf", "-o", other],
    lambda run, other, image: ["export", run, "-o", run],
    lambda run, other, image: ["export", run, "--format", "monai-bundle", "-o", other],
    lambda run, other, image: ["explain", run, image, "-o", other],
    lambda run, other, image: ["evaluate", run, "--out", other],
])
def test_no_command_writes_into_a_run_folder(trained, tmp_path, command):
    """Another run's folder (or the run's own) as the target of an export, explanation or
    evaluation: one line naming it, and not a byte of either folder changes."""
    run_copy, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(trained / "run", run_copy)
    shutil.copytree(trained / "run", other)
    before = snapshot(run_copy), snapshot(other)
    result = run(*command(run_copy, other, trained / "data" / "yes" / "yes0.png"))
    assert_one_line_error(result, "holds a run (", "nothing in a run folder is replaced", code=CONFIG)
    assert (snapshot(run_copy), snapshot(other)) == before


def test_an_explicit_out_is_claimed_before_training(trained, tmp_path):
    from medcls.config import make_config
    from medcls.folders import CLAIM
    from medcls.workflows.train import run_folder

    config = make_config({"data": str(trained / "data"), "out": str(tmp_path / "shared")})
    first = run_folder(config)  # what a first `medcls train --out shared` does before reading any data
    assert (first / CLAIM).is_file()
    result = run("train", *TINY, "--data", trained / "data", "--out", tmp_path / "shared")
    assert_one_line_error(result, "is being written by another command", code=CONFIG)
    assert [p.name for p in first.iterdir()] == [CLAIM]  # the second run wrote nothing there


@pytest.mark.parametrize("name, content, fragments", [
    ("run.yaml", "lr: 0.01\nepochs: 3\nlr: 0.1\n", ["key 'lr' is given twice (lines 1 and 3)", "keep one"]),
    ("run.yaml", "optimisation:\n  lr: 0.01\n  lr: 0.02\n", ["key 'lr' is given twice (lines 2 and 3)"]),
    ("run.toml", 'lr = "0.001"\n', ["lr = '0.001' is text where a number belongs", "lr = 0.001"]),
    ("run.toml", 'epochs = "1"\n', ["epochs = '1' is text where a number belongs"]),
])
def test_config_files_are_read_strictly(tmp_path, name, content, fragments):
    from medcls.config import read_config_file
    from medcls.errors import ConfigError

    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError) as error:
        read_config_file(tmp_path / name)
    assert all(f in str(error.value) for f in fragments) and "\n" not in str(error.value), str(error.value)


def test_yaml_numbers_that_pyyaml_reads_as_text_still_work(tmp_path):
    from medcls.config import make_config, read_config_file

    (tmp_path / "run.yaml").write_text("lr: 1e-3\nimage_size: auto\n")  # PyYAML: '1e-3' is a string
    assert make_config(read_config_file(tmp_path / "run.yaml")).lr == 0.001


@pytest.mark.parametrize("returned, fragment", [
    ({"a.png": "yes"}, "it returned a dict, not a list of medcls.data.cases.Case"),
    (["a.png"], "it returned item 0 a str, not a medcls.data.cases.Case"),
])
def test_a_layout_plugin_returning_the_wrong_type_is_one_line(tmp_path, returned, fragment):
    import medcls
    from medcls.plugins.manager import unregister_in_process

    class Layout:
        @medcls.hookimpl
        def medcls_register_datasets(self, register):
            register("broken_layout", lambda source, options: returned, description="returns the wrong type",
                     detect=lambda source: source.endswith(".broken"))

    medcls.register_plugin(Layout(), name="broken-layout")
    try:
        (tmp_path / "cases.broken").write_text("")
        with pytest.raises(medcls.PluginError, match="layout 'broken_layout' of plugin 'broken-layout' breaks the "
                                                     "layout contract: " + fragment.replace(".", r"\.")):
            medcls.train(str(tmp_path / "cases.broken"), backbone="test_resnet", pretrained=False, epochs=1)
    finally:
        unregister_in_process("broken-layout")


def test_saving_a_run_whose_folder_vanished_is_one_line(tmp_path):
    import medcls

    from tests.helpers import SMALL, phantoms

    images, labels, patients = phantoms(40, 24)
    trained = medcls.train(images=images, labels=labels, patients=patients, **{**SMALL, "image_size": 24, "epochs": 1})
    shutil.rmtree(trained.path)
    with pytest.raises(medcls.DataError, match="is gone \\(its model.json with it\\): nothing is left to save"):
        trained.save(tmp_path / "kept")
    assert not (tmp_path / "kept").exists()
