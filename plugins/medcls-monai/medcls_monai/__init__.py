"""MONAI networks as medcls backbones for volumes: `medcls train --backbone monai:densenet121 --data DIR`.

Each is created headless in 3D (features `(B, F)` from `(B, C, D, H, W)`), with its blocks listed
from stem to top so the two-stage recipe can unfreeze the top ones. MONAI ships no pretrained 3D
weights for these, so they register `pretrained=False` and train from scratch unless the user
gives `--weights FILE.safetensors`.
"""

from __future__ import annotations

from functools import partial

from medcls import hookimpl

# Volumes in [0, 1] are mapped to [-1, 1]: no ImageNet statistics apply to CT or MR voxels.
MEAN, STD = (0.5,), (0.5,)


def densenet(depth: int, in_chans: int, input_shape=None, **backbone_args):
    from monai.networks import nets
    from torch import nn

    model = {121: nets.DenseNet121, 169: nets.DenseNet169, 201: nets.DenseNet201}[depth](
        spatial_dims=3, in_channels=in_chans, out_channels=1, **backbone_args)
    num_features = model.class_layers.out.in_features
    model.class_layers.out = nn.Identity()  # medcls adds dropout and its own head
    return finish(model, num_features)


SMALL_GRID = 32  # voxels on the shortest side at or below which the stem keeps resolution cheaply


def resnet_stem(input_shape) -> dict:
    """The stem for the grid. MONAI's default (a 7^3 kernel at full resolution, then max pooling)
    leaves the first residual stage at half the grid, which on a 28^3 MedMNIST grid is most of a
    training step: 10.7 volumes/s on 2 CPU cores. A 3^3 kernel with stride 2, then the pooling,
    runs that stage at a quarter of the grid: 52 volumes/s (benchmarks/volume_training.py), and on
    VesselMNIST3D reached test ROC AUC 0.884 in 15 epochs (examples/README.md). Larger grids keep
    MONAI's default; backbone_args conv1_t_size / conv1_t_stride / no_max_pool override both."""
    if input_shape is not None and min(input_shape) <= SMALL_GRID:
        return {"conv1_t_size": 3, "conv1_t_stride": 2}
    return {}


def resnet(depth: int, in_chans: int, input_shape=None, **backbone_args):
    from monai.networks import nets

    options = {**resnet_stem(input_shape), **backbone_args}
    model = getattr(nets, f"resnet{depth}")(spatial_dims=3, n_input_channels=in_chans, feed_forward=False,
                                            shortcut_type="A" if depth < 50 else "B", bias_downsample=depth < 50,
                                            **options)
    num_features = model.layer4[-1].conv2.out_channels if depth < 50 else model.layer4[-1].conv3.out_channels
    return finish(model, num_features)


def efficientnet(variant: str, in_chans: int, input_shape=None, **backbone_args):
    from monai.networks import nets
    from torch import nn

    model = nets.EfficientNetBN(f"efficientnet-{variant}", pretrained=False, spatial_dims=3, in_channels=in_chans,
                                num_classes=1, **backbone_args)
    num_features = model._fc.in_features
    model._fc = nn.Identity()
    model._dropout = nn.Identity()  # medcls's dropout sits before its head
    return finish(model, num_features)


def finish(model, num_features: int):
    model.num_features, model.spatial_dims = int(num_features), 3
    return model


def blocks_of(model) -> list:
    """The network's blocks from stem to top, from the module given (a copy groups its own)."""
    from monai.networks import nets
    from torch import nn

    if isinstance(model, nets.DenseNet):
        blocks = [nn.ModuleList([model.features.conv0, model.features.norm0])]
        blocks += [module for name, module in model.features.named_children()
                   if name.startswith(("denseblock", "transition"))]
        return blocks + [model.features.norm5]
    if isinstance(model, nets.ResNet):
        return [nn.ModuleList([model.conv1, model.bn1]), model.layer1, model.layer2, model.layer3, model.layer4]
    return [nn.ModuleList([model._conv_stem, model._bn0]), *model._blocks, nn.ModuleList([model._conv_head, model._bn1])]


def channel_stats(model, in_chans: int):
    model.mean, model.std = MEAN * in_chans, STD * in_chans
    return model


BACKBONES = {
    **{f"monai:densenet{d}": (partial(densenet, d), f"MONAI DenseNet-{d}, 3D") for d in (121, 169, 201)},
    **{f"monai:resnet{d}": (partial(resnet, d), f"MONAI ResNet-{d} (MedicalNet layout), 3D") for d in (10, 18, 34, 50)},
    **{f"monai:efficientnet-{v}": (partial(efficientnet, v), f"MONAI EfficientNet-{v.upper()}, 3D") for v in ("b0", "b1", "b2")},
}


def create(factory, in_chans: int, input_shape=None, **backbone_args):
    return channel_stats(factory(in_chans, input_shape, **backbone_args), in_chans)


@hookimpl
def medcls_register_backbones(register):
    for name, (factory, description) in BACKBONES.items():
        register(name, partial(create, factory), description=description, spatial_dims=3, pretrained=False,
                 blocks=blocks_of, sized=True)
