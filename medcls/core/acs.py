"""ACS convolutions: a 2D convolutional backbone read in 3D, its 2D weights kept (Yang et al.,
"Reinventing 2D Convolutions for 3D Images", IEEE JBHI 2021).

Each 2D kernel `(out, in, k, k)` stays one parameter with its 2D shape; its output channels are
split in three, and each third is applied as a 3D kernel flat along one axis: axial `(1, k, k)`,
coronal `(k, 1, k)` and sagittal `(k, k, 1)`. A 2D backbone's pretrained ImageNet weights (and its
state-dict names) therefore carry over to volumes unchanged, at the cost of a 2D convolution per
depth position. Batch norm, pooling and the global pool become their 3D versions.

Only modules whose meaning is clear in 3D are converted; a backbone with anything else (squeeze-
excitation that averages two axes, attention, 2D-only norms) is refused by name, never run
wrongly.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from medcls.errors import ConfigError


class ACSConv(nn.Module):
    """A Conv2d's weight and bias applied to `(B, C, D, H, W)`: a third of the output channels
    (a third of the groups for grouped and depthwise convolutions) per view."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.in_channels, self.out_channels, self.groups = conv.in_channels, conv.out_channels, conv.groups
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.padding, self.dilation = tuple(conv.padding), tuple(conv.dilation)
        units = conv.groups if conv.groups > 1 else conv.out_channels
        counts = [units // 3 + (i < units % 3) for i in range(3)]
        # (first output channel, last, first input channel, last, groups) per view
        per_out, per_in = conv.out_channels // units, (conv.in_channels // conv.groups if conv.groups > 1 else 0)
        self.parts, start = [], 0
        for count in counts:
            if count:
                inputs = (start * per_in, (start + count) * per_in) if per_in else (0, conv.in_channels)
                self.parts.append((start * per_out, (start + count) * per_out, *inputs,
                                   count if conv.groups > 1 else 1))
            start += count
        self.pointwise = self.kernel_size == (1, 1)
        (sh, sw), (ph, pw), (dh, dw) = self.stride, self.padding, self.dilation
        self.stride_3d = (sh, sh, sw)
        # (axis the 2D kernel is flat along, padding, dilation) of the axial, coronal, sagittal views
        self.views = ((2, (0, ph, pw), (1, dh, dw)), (3, (ph, 0, pw), (dh, 1, dw)), (4, (ph, pw, 0), (dh, dw, 1)))

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        if self.pointwise:
            return F.conv3d(volumes, self.weight.unsqueeze(2), self.bias, self.stride_3d, 0, 1, self.groups)
        outputs = []
        for (first, last, in_first, in_last, groups), (axis, padding, dilation) in zip(self.parts, self.views):
            weight = self.weight[first:last].unsqueeze(axis)
            bias = self.bias[first:last] if self.bias is not None else None
            part = volumes if in_last - in_first == self.in_channels else volumes[:, in_first:in_last]
            outputs.append(F.conv3d(part, weight, bias, self.stride_3d, padding, dilation, groups))
        return torch.cat(outputs, dim=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, views={[last - first for first, last, *_ in self.parts]}")


class BatchNormAct3d(nn.BatchNorm3d):
    """timm's BatchNormAct2d (batch norm, dropout, activation in one module) for volumes, with the
    same state-dict names."""

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        self.drop, self.act = norm.drop, norm.act

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(volumes)))


class GlobalPool3d(nn.Module):
    """timm's SelectAdaptivePool2d (average or max) over a volume's three axes."""

    def __init__(self, pool_type: str, flatten: bool) -> None:
        super().__init__()
        self.pool_type, self.flatten = pool_type, flatten

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        pooled = volumes.amax((2, 3, 4), keepdim=True) if self.pool_type == "max" else \
            volumes.mean((2, 3, 4), keepdim=True)
        return pooled.flatten(1) if self.flatten else pooled


# Modules that work on any number of spatial axes as they are.
AGNOSTIC = (nn.Identity, nn.Dropout, nn.Flatten, nn.Linear, nn.GroupNorm, nn.Sequential, nn.ModuleList,
            nn.ModuleDict)
# Container modules known to compute over two spatial axes in their own forward().
PLANAR = re.compile(r"Squeeze|Excit|SEModule|Eca|Cbam|CBAM|Attn|Attention|GlobalContext|SelectiveKernel|Gather")


def convert(module: nn.Module, name: str) -> nn.Module:
    """The module for volumes; raises Unsupported for one that has no clear 3D meaning."""
    from timm.layers import BatchNormAct2d, SelectAdaptivePool2d

    kind = type(module)
    if kind is nn.Conv2d:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise unsupported(name, module, "padding other than zeros")
        return ACSConv(module)
    if kind in (nn.BatchNorm2d, BatchNormAct2d):
        norm = nn.BatchNorm3d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats) if kind is nn.BatchNorm2d else BatchNormAct3d(module)
        norm.load_state_dict(module.state_dict())
        return norm.train(module.training)
    if kind is nn.MaxPool2d:
        return nn.MaxPool3d(module.kernel_size, module.stride, module.padding, module.dilation,
                            ceil_mode=module.ceil_mode)
    if kind is nn.AvgPool2d:
        return nn.AvgPool3d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                            module.count_include_pad)
    if kind is SelectAdaptivePool2d:
        if module.pool_type not in ("avg", "max"):
            raise unsupported(name, module, f"global pooling {module.pool_type!r}")
        return GlobalPool3d(module.pool_type, isinstance(module.flatten, nn.Flatten))
    if PLANAR.search(kind.__name__):
        raise unsupported(name, module, "it computes over two spatial axes")
    if not any(True for _ in module.children()) and not (
            isinstance(module, AGNOSTIC) or kind.__module__ == "torch.nn.modules.activation" or
            kind.__name__ == "DropPath"):
        raise unsupported(name, module, "it has no 3D counterpart medcls knows")
    return module


class Unsupported(Exception):
    pass


def unsupported(name: str, module: nn.Module, why: str) -> Unsupported:
    return Unsupported(f"its {name} ({type(module).__name__}) cannot be read in 3D ({why})")


def to_acs(backbone: nn.Module, backbone_name: str = "the backbone") -> nn.Module:
    """The backbone converted in place to read `(B, C, D, H, W)` volumes, its weights shared.
    Block groupings and state-dict names stay those of the 2D model; no attribute is added to it."""
    try:
        convert_children(backbone, "")
    except Unsupported as exc:
        raise ConfigError(f"acs cannot convert {backbone_name}: {exc}; ACS converts plain convolutional backbones "
                          "(resnet*, efficientnet_lite*, densenet*, mobilenetv2*): choose one of those, or read "
                          "volumes with slices=3 (2.5D)") from None
    return backbone


def convert_children(module: nn.Module, prefix: str) -> None:
    for child_name, child in list(module.named_children()):
        name = f"{prefix}{child_name}"
        replacement = convert(child, name)
        if replacement is child:
            convert_children(child, f"{name}.")
        else:
            setattr(module, child_name, replacement)
