"""Dataset layouts: folder per class (with and without split folders), CSV manifests, MedMNIST npz."""

import shutil

import numpy as np
import pytest

from medcls.config import make_config
from medcls.data.loading import class_names, load_cases
from medcls.errors import DataError
from tests.helpers import save_png


def load(registries, **values):
    cases, name, _ = load_cases(make_config(values), registries)
    return cases, name


def test_folder_per_class(registries, image_folder):
    (image_folder / "yes" / "notes.txt").write_text("not an image")
    cases, name = load(registries, data=str(image_folder))
    assert name == "folder" and len(cases) == 24
    assert {c.label for c in cases} == {"no", "yes"} and all(c.split is None for c in cases)


def test_split_folders(registries, tmp_path):
    for split in ("train", "valid", "test"):
        for label in ("a", "b"):
            save_png(tmp_path / split / label / "x.png", np.zeros((8, 8), np.uint8))
    cases, _ = load(registries, data=str(tmp_path))
    assert sorted({c.split for c in cases}) == ["test", "train", "val"]


def test_empty_class_folder(registries, image_folder):
    (image_folder / "maybe").mkdir()
    with pytest.raises(DataError, match="class folder .*maybe' has no readable images"):
        load(registries, data=str(image_folder))


def test_missing_and_empty_paths(registries, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load(registries, data=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no class sub-folders"):
        load(registries, data=str(tmp_path))


def test_one_class_only(registries, image_folder):
    shutil.rmtree(image_folder / "no")
    cases, _ = load(registries, data=str(image_folder))
    with pytest.raises(DataError, match="only one class"):
        class_names(cases, None, str(image_folder))


def test_positive_class_reorders(registries, image_folder):
    cases, _ = load(registries, data=str(image_folder))
    assert class_names(cases, None, "x") == ["no", "yes"]
    assert class_names(cases, "no", "x") == ["yes", "no"]


def test_csv_with_mapped_columns(registries, image_folder, tmp_path):
    manifest = tmp_path / "m.csv"
    rows = ["file,finding,subject,fold"]
    for i, path in enumerate(sorted(image_folder.rglob("*.png"))):
        rows.append(f"{path.relative_to(image_folder)},{path.parent.name},p{i // 2},{'test' if i % 5 == 0 else 'train'}")
    manifest.write_text("\n".join(rows) + "\n")
    cases, name = load(registries, data=str(manifest), path_column="file", label_column="finding",
                       patient_column="subject", split_column="fold", image_root=str(image_folder))
    assert name == "csv" and len(cases) == 24
    assert cases[0].patient_id == "p0" and cases[0].split == "test" and cases[0].path.exists()


def test_semicolon_and_tab_separated_manifests_read_as_the_comma_one(registries, image_folder, tmp_path):
    # Spreadsheet programs in comma-decimal locales save "CSV" with ';' between cells.
    rows = [("path", "label", "patient_id")] + [(str(p), p.parent.name, f"p;{i // 2}" if i == 3 else f"p{i // 2}")
                                                for i, p in enumerate(sorted(image_folder.rglob("*.png")))]
    read = {}
    for name, separator in (("comma.csv", ","), ("semicolon.csv", ";"), ("tab.tsv", "\t")):
        quoted = [[f'"{cell}"' if separator in cell else cell for cell in row] for row in rows]
        (tmp_path / name).write_text("\n".join(separator.join(row) for row in quoted) + "\n")
        cases, _ = load(registries, data=str(tmp_path / name))
        read[name] = [(c.key, c.label, c.patient_id) for c in cases]
    assert read["comma.csv"] == read["semicolon.csv"] == read["tab.tsv"] and len(read["comma.csv"]) == 24
    assert read["comma.csv"][3][2] == "p;1"


def test_csv_missing_column_names_the_fix(registries, tmp_path):
    (tmp_path / "m.csv").write_text("dicom_name,Contrast\na.dcm,True\n")
    with pytest.raises(DataError, match=r"no column 'path' \(columns: dicom_name, Contrast\): set path_column"):
        load(registries, data=str(tmp_path / "m.csv"))


def test_csv_empty_label(registries, tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.png,\n")
    with pytest.raises(DataError, match="line 2: empty label"):
        load(registries, data=str(tmp_path / "m.csv"))


def test_npz_medmnist(registries, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(tmp_path / "pneumonia.npz", **arrays)
    cases, name = load(registries, data=str(tmp_path / "pneumonia.npz"))
    assert name == "npz" and len(cases) == 18 and cases[0].array.shape == (1, 28, 28)
    assert {c.split for c in cases} == {"train", "val", "test"}


def test_npz_multilabel_values_and_names_checked(registries, tmp_path):
    """(N, L) labels are multi-label (tests/test_multilabel.py); values other than 1/0/-1 and a
    class_names list of another length are refused by name."""
    labels = np.zeros((2, 3))
    labels[1, 2] = 2
    np.savez(tmp_path / "x.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=labels)
    with pytest.raises(DataError, match=r"train_labels\[1, 2\] = 2.0: multi-label arrays hold 1"):
        load(registries, data=str(tmp_path / "x.npz"))
    np.savez(tmp_path / "y.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 3)),
             class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match="has 3 findings but 2 names"):
        load(registries, data=str(tmp_path / "y.npz"))


def test_synthetic_is_deterministic(registries):
    first, name = load(registries, data="synthetic")
    second, _ = load(registries, data="synthetic")
    assert name == "synthetic" and len(first) == 400
    assert all(np.array_equal(a.array, b.array) for a, b in zip(first, second))
    assert len({c.patient_id for c in first}) == 200
