"""The template plugin's own tests: what a third party copies along with the code."""

import numpy as np
import torch

import medcls_example
from medcls.plugins.manager import get_plugin_manager
from medcls.plugins.registry import Registries


def test_plugin_registers_backbone_and_metric():
    registries = Registries(get_plugin_manager())
    assert registries["backbones"].get("example_tiny_cnn").plugin == "example"
    assert registries["metrics"].get("youden_index").metadata["needs_threshold"] is True


def test_backbone_gives_features():
    model = medcls_example.tiny_cnn(in_chans=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, model.num_features)


def test_youden_index():
    y = np.array([0, 0, 1, 1])
    assert medcls_example.youden_index(y, None, np.array([0, 0, 1, 1])) == 1.0
    assert medcls_example.youden_index(y, None, np.array([0, 1, 1, 0])) == 0.0
