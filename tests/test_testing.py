"""medcls.testing: the contract checks pass on the built-ins and catch each kind of broken plugin object."""

import numpy as np
import pytest
import torch
from torch import nn

from medcls.testing import check_backbone, check_layout, check_metric, check_policy, check_reader


def test_the_builtins_keep_their_contracts(registries, tmp_path):
    from tests.helpers import save_png

    check_backbone(registries["backbones"].get("test_resnet").obj)
    for name in ("none", "interpretable", "aggressive"):
        entry = registries["policies"].get(name)
        check_policy(entry.obj, entry.metadata["params"])
    for name in ("roc_auc", "sensitivity", "brier"):
        entry = registries["metrics"].get(name)
        check_metric(entry.obj, needs_threshold=entry.metadata["needs_threshold"])
    png = save_png(tmp_path / "a" / "x" / "i.png", np.zeros((8, 8), np.uint8))
    save_png(tmp_path / "a" / "y" / "j.png", np.full((8, 8), 200, np.uint8))
    check_reader(registries["readers"].get("image").obj, png)
    check_layout(registries["datasets"].get("folder").obj, str(tmp_path / "a"))


class NoFeatures(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


class WrongWidth(nn.Module):
    num_features = 7

    def forward(self, x):
        return x.mean((2, 3))


class Crop:
    def __call__(self, image):
        return image[..., 2:, 2:]


@pytest.mark.parametrize("check, message", [
    (lambda: check_backbone(lambda c: NoFeatures()), "num_features is None"),
    (lambda: check_backbone(lambda c: WrongWidth()), "not (2, 7)"),
    (lambda: check_backbone(lambda c: "net"), "not an nn.Module"),
    (lambda: check_policy(lambda: Crop()), "changed the shape"),
    (lambda: check_policy(lambda: (lambda image: image * 3)), "left [0, 1]"),
    (lambda: check_policy(lambda: (lambda image: image.double())), "not float32"),
    (lambda: check_metric(lambda y, p, yhat: 1, needs_threshold=True), "not a float"),
    (lambda: check_metric(lambda y, p, yhat: 1 / 0 if len(set(y)) < 2 else 0.5, needs_threshold=True), None),
])
def test_broken_objects_fail_with_the_reason(check, message):
    pattern = None if message is None else message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    with pytest.raises((AssertionError, ZeroDivisionError), match=pattern):
        check()


def test_broken_readers_and_layouts(tmp_path):
    from medcls.data.cases import Case

    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    with pytest.raises(AssertionError, match="not float32"):
        check_reader(lambda p: np.zeros((1, 4, 4), np.float64), path)
    with pytest.raises(AssertionError, match="not \\(C, H, W\\)"):
        check_reader(lambda p: np.zeros((4, 4), np.float32), path)
    with pytest.raises(AssertionError, match="keys must be unique"):
        check_layout(lambda s, o: [Case(key="a", label="x", path=path), Case(key="a", label="y", path=path)], "s")
    torch.manual_seed(0)
