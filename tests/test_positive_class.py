"""The positive class is never a guess: a name that means negative makes the other class positive;
otherwise training stops with one line asking for positive_class. Integer labels sort numerically."""

import numpy as np
import pytest

from medcls.data.cases import Case
from medcls.data.loading import class_names
from medcls.errors import DataError
from tests.helpers import assert_one_line_error, run, TINY


def cases(*labels):
    return [Case(key=str(i), label=label) for i, label in enumerate(labels)]


@pytest.mark.parametrize("labels, expected", [
    (("yes", "no"), ["no", "yes"]),
    (("hyperplasia", "normal"), ["normal", "hyperplasia"]),  # not the last name: the one that is not normal
    (("True", "False"), ["False", "True"]),
    (("0", "1"), ["0", "1"]),
    (("malignant", "benign"), ["benign", "malignant"]),
    (("tumour", "no_tumour"), ["no_tumour", "tumour"]),
    (("Pneumonia", "Healthy"), ["Healthy", "Pneumonia"]),
    (("case", "control"), ["control", "case"]),
    (("10", "2", "1"), ["1", "2", "10"]),  # multi-class: numeric order, no positive class
])
def test_the_name_that_means_negative_decides(labels, expected):
    assert class_names(cases(*labels), None, "data") == expected


@pytest.mark.parametrize("labels, fragment", [(("cat", "dog"), "neither name says"),
                                              (("normal", "negative"), "both names say")])
def test_names_that_do_not_settle_it_are_an_error(labels, fragment):
    with pytest.raises(DataError, match=f"{fragment} which one is negative.*--set positive_class="):
        class_names(cases(*labels), None, "data")
    assert class_names(cases(*labels), labels[0], "data")[1] == labels[0]


def test_training_stops_before_it_starts_and_positive_class_settles_it(tmp_path):
    from tests.helpers import save_png

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        for i in range(10):
            save_png(tmp_path / "data" / label / f"{i}.png", (rng.random((16, 16)) * 255).astype(np.uint8))
    assert_one_line_error(run("train", *TINY, "--data", tmp_path / "data", "--out", tmp_path / "a"),
                          "'cat' and 'dog'", "--set positive_class=dog", code=4)
    assert not (tmp_path / "a" / "model.safetensors").exists()
    result = run("train", *TINY, "--data", tmp_path / "data", "--out", tmp_path / "b", "--set", "positive_class=cat")
    assert result.exit_code == 0, result.output
    import json

    assert json.loads((tmp_path / "b" / "model.json").read_text())["positive_class"] == "cat"


def test_npz_files_can_name_their_classes(tmp_path, registries):
    from medcls.config import make_config
    from medcls.data.loading import load_cases

    path = tmp_path / "named.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.array([[0], [1], [1], [0]]),
             class_names=np.array(["healthy", "effusion"]))
    found, _, _ = load_cases(make_config({"data": str(path)}), registries)
    assert [c.label for c in found] == ["healthy", "effusion", "effusion", "healthy"]
    assert class_names(found, None, str(path)) == ["healthy", "effusion"]
