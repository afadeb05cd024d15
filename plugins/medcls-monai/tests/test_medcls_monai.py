"""The MONAI plugin: every 3D network builds headless, its blocks cover it, and one trains end to end."""

import pytest
import torch

import medcls_monai

import medcls


def test_networks_register_as_3d_backbones_without_pretrained_weights():
    backbones = {entry.name: entry for entry in medcls.registered("backbones", "monai:*")}
    assert set(backbones) == set(medcls_monai.BACKBONES)
    for name in medcls_monai.BACKBONES:
        entry = backbones[name]
        assert entry.plugin == "monai" and entry.metadata["spatial_dims"] == 3 and entry.metadata["pretrained"] is False


@pytest.mark.parametrize("name", ["monai:densenet121", "monai:resnet10", "monai:resnet50", "monai:efficientnet-b0"])
def test_headless_features_and_blocks(name):
    factory, _ = medcls_monai.BACKBONES[name]
    model = medcls_monai.create(factory, 2)
    model.eval()
    with torch.no_grad():
        features = model(torch.rand(1, 2, 32, 32, 32))
    assert features.shape == (1, model.num_features) and model.spatial_dims == 3
    in_blocks = {id(p) for block in medcls_monai.blocks_of(model) for p in block.parameters()}
    assert in_blocks == {id(p) for p in model.parameters()}  # every parameter can be unfrozen
    assert model.mean == (0.5, 0.5)


@pytest.mark.slow
def test_monai_backbone_trains_on_synthetic_volumes(tmp_path):
    from click.testing import CliRunner

    from medcls.cli import cli

    result = CliRunner().invoke(cli, ["train", "--data", "synthetic3d", "--backbone", "monai:resnet10", "--epochs", "1",
                                      "--finetune-epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "run"),
                                      "--set", "volume_size=16", "--set", "bootstrap=100"])
    assert result.exit_code == 0, result.output
    assert "monai:resnet10 (random initialisation)" in result.output


def test_small_grids_get_the_strided_stem_and_backbone_args_reach_the_network():
    factory, _ = medcls_monai.BACKBONES["monai:resnet10"]
    small, large = medcls_monai.create(factory, 1, (28, 28, 28)), medcls_monai.create(factory, 1, (64, 64, 64))
    assert (small.conv1.kernel_size, small.conv1.stride) == ((3, 3, 3), (2, 2, 2))  # the grid's stem
    assert large.conv1.kernel_size == (7, 7, 7)  # MONAI's default above SMALL_GRID
    # the VesselMNIST3D preset's half-width network (examples/README.md): a quarter of the weights
    half = medcls_monai.create(factory, 1, (28, 28, 28), widen_factor=0.5)
    assert half.num_features == small.num_features // 2 == 256
    count = lambda model: sum(p.numel() for p in model.parameters())
    assert count(half) < 0.3 * count(small)
    # an explicit stem wins over the grid's
    explicit = medcls_monai.create(factory, 1, (28, 28, 28), conv1_t_size=5, conv1_t_stride=1)
    assert (explicit.conv1.kernel_size, explicit.conv1.stride) == ((5, 5, 5), (1, 1, 1))
    with torch.no_grad():
        assert half.eval()(torch.rand(2, 1, 28, 28, 28)).shape == (2, 256)
