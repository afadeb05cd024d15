"""The plan (`medcls plan`, medcls.plan): the data's fingerprint, each recipe key with whose choice it
is and why, the 3D rule for volumes, a user's key winning over every rule, and plan.json in a run."""

import json

import numpy as np
import pytest

import medcls
from tests.helpers import TINY, run


def test_the_plan_of_the_built_in_set_says_what_the_data_is_and_whose_each_key_is():
    found = medcls.plan("synthetic", epochs=3)
    fingerprint = found.fingerprint
    assert (fingerprint.images, fingerprint.patients, fingerprint.dims) == (400, 200, 2)
    assert fingerprint.classes == {"normal": 200, "tumour": 200} and fingerprint.minority_share == 0.5
    assert found["epochs"].value == 3 and found["epochs"].by == "you"
    assert found["finetune_epochs"].by == "default" and found["finetune_epochs"].value == medcls.TrainConfig().finetune_epochs
    side = fingerprint.short_side[0]
    assert found["image_size"].by == "rule" and found["image_size"].value == min(224, max(64, round(side / 16) * 16))
    assert f"({side} px)" in found["image_size"].reason
    assert any("validation images" in w for w in found.warnings)  # 400 images: about 60 choose the epoch
    assert found.to_json()["fingerprint"]["images"] == 400


def write_volumes(path, n=24, side=12):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        arrays[f"{split}_images"] = (rng.random((count, side, side, side)) * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def test_volumes_get_the_3d_recipe_unless_the_user_chose_a_backbone(tmp_path):
    pytest.importorskip("medcls_monai", reason="the 3D recipe's backbone comes with medcls-monai")
    from medcls.workflows.plan import VOLUME_RECIPE, data_dims

    data = write_volumes(tmp_path / "vol.npz")
    assert data_dims(medcls.TrainConfig(data=str(data))) == 3
    found = medcls.plan(data, ensemble=0)
    assert found.fingerprint.dims == 3 and found.fingerprint.own_split == {"train": 24, "val": 12, "test": 12}
    assert found["backbone"].value == VOLUME_RECIPE["backbone"] and found["backbone"].by == "rule"
    assert found["epochs"].value == 30 and found["epochs"].by == "rule"
    assert found["ensemble"].value == 0 and found["ensemble"].by == "you"  # the user's key wins
    assert "val_fraction" not in [c.key for c in found.choices]  # the data's own split is used
    chosen = medcls.plan(data, backbone="example_tiny_cnn3d")
    assert chosen["backbone"].by == "you" and chosen["epochs"].by == "default"


def test_a_2d_npz_is_not_taken_for_volumes(tmp_path):
    from medcls.workflows.plan import data_dims

    np.savez(tmp_path / "rgb.npz", train_images=np.zeros((4, 28, 28, 3), np.uint8), train_labels=np.zeros((4, 1)))
    np.savez(tmp_path / "grey.npz", train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 1)))
    assert data_dims(medcls.TrainConfig(data=str(tmp_path / "rgb.npz"))) == 2
    assert data_dims(medcls.TrainConfig(data=str(tmp_path / "grey.npz"))) == 2


@pytest.mark.slow
def test_a_run_records_its_plan_and_the_cli_prints_one(tmp_path):
    result = run("train", *TINY, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "r" / "plan.json").read_text())
    by_key = {c["key"]: c for c in recorded["choices"]}
    assert by_key["backbone"]["value"] == "test_resnet" and by_key["backbone"]["by"] == "you"
    assert by_key["image_size"]["value"] == 32 and by_key["image_size"]["by"] == "you"
    assert by_key["policy"]["by"] == "default" and recorded["fingerprint"]["images"] == 400
    printed = run("plan", "synthetic", "--set", "epochs=2", "--json", tmp_path / "plan.json")
    assert printed.exit_code == 0, printed.output
    assert "Fingerprint" in printed.stdout and "epochs              2" in printed.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["fingerprint"]["patients"] == 200
