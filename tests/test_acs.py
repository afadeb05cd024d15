"""ACS convolutions (2D backbones read in 3D, their weights kept) and precise batch norm."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medcls.core.acs import ACSConv, to_acs
from medcls.errors import ConfigError


@pytest.mark.parametrize("groups, stride", [(1, 1), (1, 2), (6, 1)])
def test_each_third_of_the_kernels_is_a_2d_convolution_of_one_view(groups, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 3, stride=stride, padding=1, groups=groups)
    out = ACSConv(conv)(volume := torch.rand(1, 6, 7, 8, 9))

    def planar(channels: slice, plane: torch.Tensor) -> torch.Tensor:
        """The 2D convolution of one plane by the kernels of `channels` (a third of them)."""
        inputs, count = (plane, 1) if groups == 1 else (plane[:, channels], channels.stop - channels.start)
        return F.conv2d(inputs, conv.weight[channels], conv.bias[channels], stride, 1, groups=count)

    axial, coronal, sagittal = slice(0, 2), slice(2, 4), slice(4, 6)  # two output channels (or groups) each
    for i, d in enumerate(range(0, 7, stride)):  # every axial slice (depth is strided too)
        torch.testing.assert_close(out[:, axial, i], planar(axial, volume[:, :, d]))
    for i, h in enumerate(range(0, 8, stride)):  # every coronal plane: (depth, width)
        torch.testing.assert_close(out[:, coronal, :, i], planar(coronal, volume[:, :, :, h]))
    for i, w in enumerate(range(0, 9, stride)):  # every sagittal plane: (depth, height)
        torch.testing.assert_close(out[:, sagittal, ..., i], planar(sagittal, volume[..., w]))


def test_a_timm_backbone_keeps_its_2d_weights_and_names_and_reads_volumes():
    import timm

    backbone = timm.create_model("test_resnet", num_classes=0, in_chans=1)
    weights = {k: v.clone() for k, v in backbone.state_dict().items()}
    converted = to_acs(backbone)
    state = converted.state_dict()
    assert state.keys() == weights.keys()  # a 2D checkpoint loads into it, and it saves as one
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert not any(isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.MaxPool2d) for m in converted.modules())
    assert converted(torch.rand(2, 1, 32, 32, 32)).shape == (2, converted.num_features)


def test_a_pretrained_backbone_reads_volumes_with_its_imagenet_weights(registries):
    """The offline EfficientNet-Lite0 weights reach the 3D model: a volume whose slices are all
    one image gives axial responses equal to the 2D model's on that image."""
    from medcls.core.models import build_classifier

    two_d, _ = build_classifier(registries, "efficientnet_lite0", 2, 1, 0.0, pretrained=True)
    three_d, origin = build_classifier(registries, "efficientnet_lite0", 2, 1, 0.0, pretrained=True, acs=True)
    assert "efficientnet-lite0-pypi" in origin and three_d.mean.shape == (1, 1, 1, 1, 1)
    for key, value in two_d.backbone.state_dict().items():
        torch.testing.assert_close(three_d.backbone.state_dict()[key], value)
    image = torch.rand(1, 1, 32, 32)
    stem_2d = two_d.backbone.conv_stem(image)
    stem_3d = three_d.backbone.conv_stem(image[:, :, None].expand(1, 1, 5, 32, 32).contiguous())
    axial = three_d.backbone.conv_stem.parts[0][1]
    torch.testing.assert_close(stem_3d[:, :axial, 1], stem_2d[:, :axial])  # an inner slice, away from the padding


@pytest.mark.parametrize("backbone, message", [
    ("seresnet18", "acs cannot convert 'seresnet18': its layer1.0.se (SEModule) cannot be read in 3D "
                   "(it computes over two spatial axes)"),
    ("convnext_atto", "its stem.1 (LayerNorm2d) cannot be read in 3D"),
    ("example_tiny_cnn3d", "acs converts a 2D backbone to read volumes; 'example_tiny_cnn3d' is already 3D"),
])
def test_backbones_acs_cannot_read_are_refused_by_name(registries, backbone, message):
    from medcls.core.models import build_classifier

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_classifier(registries, backbone, 2, 1, 0.0, False, acs=True)


def test_acs_and_slices_together_are_refused():
    from medcls.config import make_config

    with pytest.raises(ConfigError, match="choose one"):
        make_config({"backbone": "test_resnet", "acs": True, "slices": 3}, {}, where="test")


@pytest.mark.slow
def test_acs_trains_predicts_and_explains_end_to_end(tmp_path):
    import csv
    import json

    from click.testing import CliRunner

    from medcls.cli import cli
    from medcls.data.synthetic import write_synthetic_volumes

    data = write_synthetic_volumes(tmp_path / "nifti", 24, 32, fmt="nifti")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--backbone", "test_resnet", "--no-pretrained",
                                      "--epochs", "1", "--finetune-epochs", "1", "--out", str(run), "--set", "acs=true",
                                      "--set", "volume_size=32", "--set", "bootstrap=100", "--set", "figures=false"])
    assert result.exit_code == 0, result.output
    assert "test_resnet (random initialisation, read in 3D through ACS convolutions)" in result.output
    info = json.loads((run / "model.json").read_text())
    assert info["acs"] is True and info["spatial_dims"] == 3
    positive = info["classes"][1]
    saved = {row["key"]: float(row[f"p_{positive}"]) for row in csv.DictReader((run / "predictions.csv").open())
             if row["split"] == "test"}
    out = tmp_path / "pred.csv"
    predicted = CliRunner().invoke(cli, ["predict", str(run), *saved, "-o", str(out)])
    assert predicted.exit_code == 0, predicted.output
    again = [float(row[f"prob_{positive}"]) for row in csv.DictReader(out.open())]
    assert saved and again == pytest.approx(list(saved.values()), abs=1e-4)  # the reloaded model is the ACS one
    explained = CliRunner().invoke(cli, ["explain", str(run), next(iter(saved)), "-o", str(tmp_path / "cam")])
    assert explained.exit_code == 0, explained.output
    assert "layer3" in explained.output  # the last ACS convolution of the second-to-last block


def test_precise_bn_recomputes_the_statistics_of_batch_norm_that_trains():
    from medcls.core.engine import recalibrate_batchnorm
    from medcls.core.execution import Execution

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1),
                          nn.BatchNorm2d(2))
    model[4].eval()
    model[4].train = lambda mode=True: model[4]  # frozen: stays in evaluation mode, as a pretrained one does
    frozen_before = model[4].running_mean.clone()
    batches = [torch.rand(8, 1, 10, 10) * 3 + 1 for _ in range(3)]
    assert recalibrate_batchnorm(model, batches, Execution(torch.device("cpu"))) == 1
    features = torch.cat([model[0](b) for b in batches])
    torch.testing.assert_close(model[1].running_mean, features.mean((0, 2, 3)))  # every batch, equal weight
    assert model[1].momentum == 0.1 and not model.training
    torch.testing.assert_close(model[4].running_mean, frozen_before)


@pytest.mark.slow
def test_precise_bn_reaches_a_run_from_scratch(tmp_path):
    """Same seed, one epoch: the weights are the same with and without precise BN; only the saved
    batch-norm statistics differ."""
    from safetensors.torch import load_file

    import medcls

    saved = {}
    for precise in (2048, 0):
        out = tmp_path / f"run{precise}"
        medcls.train("synthetic", backbone="test_resnet", pretrained=False, epochs=1, finetune_epochs=0,
                     image_size=32, bootstrap=100, figures=False, precise_bn=precise, out=out)
        saved[precise] = load_file(out / "model.safetensors")
    weights = [k for k in saved[0] if k.endswith("conv1.weight")]
    means = [k for k in saved[0] if k.endswith("running_mean")]
    assert weights and means
    assert all(torch.equal(saved[0][k], saved[2048][k]) for k in weights)
    assert any(not torch.equal(saved[0][k], saved[2048][k]) for k in means)
