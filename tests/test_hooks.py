"""One test per hook: a third-party plugin registers through it and medcls uses what it registered."""

import numpy as np
import pytest
import torch

import medcls
from medcls.errors import WeightsUnavailableError
from medcls.core.models import build_classifier
from medcls.plugins.manager import get_plugin_manager, register_plugin
from medcls.plugins.registry import Registries


def registries_with(plugin):
    pm = get_plugin_manager(entry_points=False)
    register_plugin(pm, plugin, "third_party")
    return Registries(pm)


class TinyNet(torch.nn.Module):
    num_features = 4

    def __init__(self, in_chans):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 4, 3)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)


class BackbonePlugin:
    @medcls.hookimpl
    def medcls_register_backbones(register):
        register("tiny_net", TinyNet, description="test net")


def test_medcls_register_backbones():
    registries = registries_with(BackbonePlugin)
    model, origin = build_classifier(registries, "tiny_net", num_classes=3, in_chans=1, dropout=0.0, pretrained=False)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    assert registries["backbones"].get("tiny_net").plugin == "third_party"


class WeightsPlugin:
    @medcls.hookimpl
    def medcls_register_backbones(register):
        register("tiny_net", TinyNet)

    @medcls.hookimpl
    def medcls_register_weight_sources(register):
        def source(name):
            if name != "tiny_net":
                return None
            return {"conv.weight": torch.ones(4, 3, 3, 3), "conv.bias": torch.zeros(4)}

        register("tiny_weights", source, offline=True)


def test_medcls_register_weight_sources_adapts_the_stem_to_greyscale():
    registries = registries_with(WeightsPlugin)
    model, origin = build_classifier(registries, "tiny_net", num_classes=2, in_chans=1, dropout=0.0, pretrained=True)
    assert "tiny_weights" in origin
    # timm's adapt_input_conv sums the RGB kernels for one channel: 3 x ones.
    assert torch.allclose(model.backbone.conv.weight, torch.full((4, 1, 3, 3), 3.0))


def test_unavailable_weights_never_fall_back_to_random():
    registries = registries_with(BackbonePlugin)
    with pytest.raises(WeightsUnavailableError, match="--no-pretrained"):
        build_classifier(registries, "tiny_net", num_classes=2, in_chans=1, dropout=0.0, pretrained=True)


class PolicyPlugin:
    @medcls.hookimpl
    def medcls_register_policies(register):
        register("invert", lambda strength=1.0: (lambda img: (1 - img) * strength), params={"strength": 1.0},
                 description="invert intensities")


def test_medcls_register_policies():
    entry = registries_with(PolicyPlugin)["policies"].get("invert")
    out = entry.obj(**entry.metadata["params"])(torch.zeros(1, 4, 4))
    assert torch.equal(out, torch.ones(1, 4, 4))


class MetricPlugin:
    @medcls.hookimpl
    def medcls_register_metrics(register):
        register("error_rate", lambda y, p, yhat: float((y != yhat).mean()), needs_threshold=True,
                 higher_is_better=False)


def test_medcls_register_metrics_appear_in_results():
    from medcls.stats.assess import split_results

    metrics = list(registries_with(MetricPlugin)["metrics"])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    results = split_results(probs, np.array([0, 1, 1]), 0.5, metrics)
    assert results["error_rate"] == pytest.approx(1 / 3)


class ReaderPlugin:
    @medcls.hookimpl
    def medcls_register_readers(register):
        register("raw_npy", lambda path: np.load(path).astype(np.float32)[None], extensions=(".npy",))


def test_medcls_register_readers(tmp_path):
    from medcls.data.cases import Case, ReaderTable

    np.save(tmp_path / "a.npy", np.full((5, 5), 0.25))
    table = ReaderTable(registries_with(ReaderPlugin)["readers"])
    image = table.read(Case(key="a", label="x", path=tmp_path / "a.npy"))
    assert image.shape == (1, 5, 5) and image.dtype == np.float32


class DatasetPlugin:
    @medcls.hookimpl
    def medcls_register_datasets(register):
        from medcls.data.cases import Case

        def load(source, options):
            return [Case(key=f"flat#{i}", label="ab"[i % 2], array=np.full((1, 8, 8), i % 2, np.float32))
                    for i in range(10)]

        register("flat", load, detect=lambda source: source == "flat://")


def test_medcls_register_datasets():
    from medcls.config import make_config
    from medcls.data.loading import load_cases

    cases, name, _ = load_cases(make_config({"data": "flat://"}), registries_with(DatasetPlugin))
    assert name == "flat" and len(cases) == 10


class NoFeaturesPlugin:
    @medcls.hookimpl
    def medcls_register_backbones(register):
        register("featureless", lambda in_chans: torch.nn.Conv2d(in_chans, 4, 3))
        register("not_a_module", lambda in_chans: "a string")


@pytest.mark.parametrize("name, fragment", [("featureless", "num_features = None"), ("not_a_module", "(str)")])
def test_a_backbone_breaking_the_contract_is_named_with_its_plugin(name, fragment):
    registries = registries_with(NoFeaturesPlugin)
    with pytest.raises(medcls.PluginError, match=rf"backbone '{name}' of plugin 'third_party' breaks the backbone "
                                                 rf"contract \({fragment.replace('(', '').replace(')', '')}"):
        build_classifier(registries, name, num_classes=2, in_chans=1, dropout=0.0, pretrained=False)
