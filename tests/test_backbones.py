"""Backbones: a smoke test per plugin-registered backbone and a representative timm family each,
greyscale and colour; fine-tuning unfreezes exactly the top blocks."""

import pytest
import torch

import medcls

from medcls.core.models import build_classifier
from medcls.plugins.manager import get_plugin_manager
from medcls.plugins.registry import Registries

REGISTRY = Registries(get_plugin_manager())["backbones"]
# timm registers ~1,300 architectures; one per family keeps this suite fast while covering every
# way a backbone can be built (CNN, depthwise, dense, transformer, hybrid).
TIMM_FAMILIES = ["resnet18", "resnet50", "efficientnet_lite0", "densenet121", "mobilenetv3_small_100",
                 "convnext_atto", "vit_tiny_patch16_224", "test_efficientnet", "test_vit"]
NON_TIMM = sorted(e.name for e in REGISTRY if e.plugin != "medcls.plugins.builtin.backbones")


@pytest.mark.parametrize("name", TIMM_FAMILIES + NON_TIMM)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_backbone_smoke(registries, name, in_chans):
    model, _ = build_classifier(registries, name, num_classes=2, in_chans=in_chans, dropout=0.2, pretrained=False)
    model.eval()
    size = 224 if "vit" in name and "test" not in name else 64
    dims = REGISTRY.get(name).metadata.get("spatial_dims", 2)
    with torch.no_grad():
        out = model(torch.rand(2, in_chans, *([size] * 2 if dims == 2 else [32] * 3)))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    assert len(model.blocks()) >= 2


def test_set_trainable_unfreezes_only_top_blocks(registries):
    model, _ = build_classifier(registries, "resnet18", num_classes=2, in_chans=1, dropout=0.0, pretrained=False)
    blocks = model.blocks()
    model.set_trainable(0)
    assert all(p.requires_grad for p in model.head.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.set_trainable(2)
    trainable = [any(p.requires_grad for p in b.parameters()) for b in blocks]
    assert trainable == [False] * (len(blocks) - 2) + [True, True]
    model.set_trainable(-1)
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_stays_in_inference_mode(registries):
    model, _ = build_classifier(registries, "resnet18", num_classes=2, in_chans=1, dropout=0.0, pretrained=False)
    model.frozen_batchnorm = True
    model.set_trainable(-1)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.head.training


def test_a_copy_of_a_classifier_unfreezes_its_own_parameters(registries):
    """Nothing is bolted onto the timm module: the block grouping is a function of the module, so
    a deepcopy (an EMA or SWA copy) groups, freezes and unfreezes its own parameters, and pickles."""
    import copy
    import pickle

    from medcls.core.models import build_classifier

    model, _ = build_classifier(registries, "test_resnet", 2, 1, 0.0, pretrained=False)
    assert not any(name.startswith("medcls") for name in vars(model.backbone))  # no attribute added
    twin = copy.deepcopy(model)
    model.set_trainable(0)
    twin.set_trainable(1)
    top = twin.blocks()[-1]
    assert all(p.requires_grad for p in top.parameters())
    assert not any(p.requires_grad for p in model.blocks()[-1].parameters())  # the original is untouched
    assert all(any(p is q for q in twin.parameters()) for p in top.parameters())  # the copy's own blocks
    assert pickle.loads(pickle.dumps(twin)).blocks()


def test_a_tagged_timm_name_and_backbone_args_reach_the_constructor(registries):
    """`resnet50.a1_in1k`-style names (any pretrained tag) and `backbone_args` go to timm.create_model."""
    model, _ = build_classifier(registries, "test_resnet.r160_in1k", 2, 1, 0.0, pretrained=False,
                                backbone_args={"drop_path_rate": 0.1})
    assert model.backbone.pretrained_cfg["tag"] == "r160_in1k"
    rates = [m.drop_prob for m in model.backbone.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)
    assert "test_resnet.r160_in1k" in registries["backbones"].pretrained_names("test_resnet")
    with pytest.raises(medcls.UnknownNameError, match="unknown backbone 'test_resnet.bogus'"):
        registries["backbones"].get("test_resnet.bogus")
    with pytest.raises(medcls.ConfigError, match="does not take backbone_args"):
        build_classifier(registries, "test_resnet", 2, 1, 0.0, pretrained=False, backbone_args={"nonsense": 1})


def test_the_cli_lists_pretrained_tags_and_trains_with_backbone_args(tmp_path, image_folder):
    import json

    from click.testing import CliRunner

    from medcls.cli import cli

    listed = CliRunner().invoke(cli, ["list", "backbones", "--pretrained", "test_resnet"])
    assert listed.exit_code == 0 and "test_resnet.r160_in1k" in listed.stdout
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--backbone", "test_resnet.r160_in1k", "--no-pretrained",
                                      "--backbone-arg", "drop_path_rate=0.05", "--data", str(image_folder),
                                      "--image-size", "32", "--epochs", "1", "--finetune-epochs", "0",
                                      "--set", "bootstrap=50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "model.json").read_text())
    assert info["backbone_args"] == {"drop_path_rate": 0.05} and len(info["normalisation"]["mean"]) == 1
    assert info["plugins"]["backbone"]["distribution"] == "medcls"
    manifest = json.loads((out / "manifest.json").read_text())
    assert {row["name"] for row in manifest["plugins"]} >= {"test_resnet.r160_in1k", "interpretable", "folder"}
    assert medcls.load_run(out).predict(str(next(image_folder.rglob("*.png")))).shape == (1, 2)
