"""Pretrained weights the timm way: the hub's cache and offline setting decide, timm loads the file
(`pretrained_cfg_overlay`), a user's file is safetensors only."""

import time

import pytest
import torch

from medcls.core.models import build_classifier
from medcls.errors import WeightsUnavailableError
from medcls.plugins.builtin import weights as hub

REPO, REVISION = "timm/test_resnet.r160_in1k", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache and offline mode, set through the hub library's own settings."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def put_in_cache(cache, state: dict) -> None:
    """`state` as the hub client stores a download: snapshots/<revision>/model.safetensors + refs/main."""
    from safetensors.torch import save_file

    folder = cache / f"models--{REPO.replace('/', '--')}"
    (folder / "snapshots" / REVISION).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    save_file(state, str(folder / "snapshots" / REVISION / "model.safetensors"))


def test_cached_weights_load_offline_through_timm(registries, hub_cache):
    import timm

    source = timm.create_model("test_resnet", num_classes=1000)  # a full model, classifier included
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    put_in_cache(hub_cache, {k: v.contiguous() for k, v in source.state_dict().items()})
    model, origin = build_classifier(registries, "test_resnet", 2, 1, 0.0, pretrained=True)
    assert "timm-hub" in origin
    own = model.backbone.state_dict()
    key = "conv1.0.weight"  # the stem: timm summed the three input channels' filters into one
    assert torch.allclose(own[key], source.state_dict()[key].sum(1, keepdim=True))
    assert torch.equal(own["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    assert not any(k.startswith("fc.") for k in own)  # the classifier was left out
    assert model.frozen_batchnorm  # pretrained batch-norm statistics are kept while fine-tuning


def test_offline_without_cache_fails_at_once_with_the_reason(registries, hub_cache):
    started = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE is set") as info:
        build_classifier(registries, "test_resnet", 2, 3, 0.0, pretrained=True)
    assert time.perf_counter() - started < 5  # no retries against an unreachable hub
    assert "\n" not in str(info.value) and "--no-pretrained" in str(info.value)


def test_hub_location_of_a_tag_and_of_an_hf_hub_name():
    assert hub.hub_location("test_resnet.r160_in1k") == (REPO, None)
    assert hub.hub_location("hf-hub:org/model@v2") == ("org/model", "v2")
    assert hub.hub_location("not_a_timm_model") is None
    with pytest.raises(WeightsUnavailableError, match="timm publishes no pretrained weights for 'test_maxvit'"):
        hub.hub_location("test_maxvit")


def test_a_user_file_is_loaded_by_timm(registries, tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_resnet", num_classes=0)
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() + 1.0 for k, v in source.state_dict().items()}, str(path))
    model, origin = build_classifier(registries, "test_resnet", 2, 3, 0.0, pretrained=False, weights_file=str(path))
    assert str(path) in origin
    assert torch.allclose(model.backbone.state_dict()["layer1.0.conv1.weight"],
                          source.state_dict()["layer1.0.conv1.weight"] + 1.0)


def test_a_file_for_another_architecture_is_one_line(registries, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"something.weight": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsUnavailableError, match="weights for 'test_resnet' miss") \
            as info:
        build_classifier(registries, "test_resnet", 2, 3, 0.0, pretrained=False, weights_file=str(path))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_images_are_resized_as_the_backbone_was_pretrained_in_training_and_in_predict(tmp_path, image_folder):
    """timm's pretrained_cfg says bicubic for resnet18: the training cache, model.json and the
    predict path all resize that way (and test_resnet's bilinear stays bilinear)."""
    import medcls
    from medcls.data.images import resize
    from medcls.data.loading import backbone_interpolation
    from medcls.data.readers import read_pil

    assert backbone_interpolation("resnet18") == "bicubic" and backbone_interpolation("test_resnet") == "bilinear"
    assert backbone_interpolation("monai:resnet10") == "bilinear"  # not timm's: bilinear
    run = medcls.train(str(image_folder), backbone="resnet18", pretrained=False, epochs=1, finetune_epochs=0,
                       image_size=24, bootstrap=50, figures=False, out=tmp_path / "run")
    assert run.info["interpolation"] == "bicubic"
    path = next(image_folder.rglob("*.png"))
    read = run.read([path]).images[0].float()
    pixels = read_pil(path)
    bicubic, bilinear = resize(pixels, 24, "bicubic"), resize(pixels, 24, "bilinear")
    assert not torch.allclose(bicubic, bilinear)
    assert torch.allclose(read, bicubic, atol=1 / 65535 * 2)  # the cache stores 16-bit levels


def test_the_missions_resnet50_offline_stops_before_any_data_is_read_and_names_what_works(hub_cache, tmp_path,
                                                                                          monkeypatch):
    """`medcls train --backbone resnet50` on a machine without its weights: one line within seconds, before
    the data is touched, naming the backbones whose weights are here (the lite plugin's) and the ways
    to bring resnet50's."""
    from click.testing import CliRunner

    import medcls.workflows.train as workflow
    from medcls.cli import cli

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the weights were found")

    monkeypatch.setattr(workflow, "prepare_data", no_data)
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["train", "--backbone", "resnet50", "--data", "synthetic", "--out",
                                      str(tmp_path / "run")])
    assert time.perf_counter() - started < 10
    assert result.exit_code == 3 and "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    for fragment in ("no pretrained weights for 'resnet50'", "work on this machine: efficientnet_lite0",
                     "--backbone efficientnet_lite0", "--weights FILE.safetensors", "HF_HOME", "--no-pretrained"):
        assert fragment in line, (fragment, line)
    assert not (tmp_path / "run").exists()  # no run folder left behind


def test_backbones_in_the_hub_cache_are_named_as_working_offline(registries, hub_cache):
    put_in_cache(hub_cache, {"w": torch.zeros(1)})
    assert hub.cached_backbones() == ["test_resnet.r160_in1k"]
    with pytest.raises(WeightsUnavailableError, match="work on this machine: .*test_resnet.r160_in1k"):
        build_classifier(registries, "resnet18", 2, 3, 0.0, pretrained=True)


def test_the_default_backbone_has_weights_offline(registries, hub_cache):
    """A user who names no backbone trains a pretrained model on a machine without a network."""
    from medcls.config import TrainConfig

    default = TrainConfig().backbone
    model, origin = build_classifier(registries, default, 2, 1, 0.0, pretrained=True)
    assert "efficientnet-lite0-pypi" in origin
