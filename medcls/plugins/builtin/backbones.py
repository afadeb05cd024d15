"""Built-in backbones: every timm architecture, created headless so medcls can add its own head.

The timm module is returned as timm built it: nothing is added to or overwritten on it. Its
normalisation travels with it in timm's `pretrained_cfg`, and its block grouping (timm's coarse
group matcher, what timm's layer-wise learning-rate decay uses) is given at registration as
`blocks=timm_blocks`, a function of the module, so copies of a model group their own parameters.
"""

from __future__ import annotations

from functools import partial

from medcls.plugins.hookspecs import hookimpl


def create_timm_backbone(name: str, in_chans: int, weights=None, **backbone_args):
    """A headless timm model: `(B, in_chans, H, W)` -> features `(B, F)`. `backbone_args` go to the
    model's constructor (drop_path_rate, global_pool, ...). `weights` (a state dict or a local file)
    are loaded by timm itself through `pretrained_cfg_overlay`: timm drops the classifier, adapts the
    first convolution to `in_chans` and applies the architecture's own checkpoint filter."""
    import timm

    from medcls.errors import ConfigError, WeightsUnavailableError

    pretrained = {}
    if weights is not None:
        where = {"state_dict": weights} if isinstance(weights, dict) else {"file": str(weights)}
        # source "" makes timm load the given weights even for an hf-hub: name (not the hub's copy)
        pretrained = {"pretrained": True, "pretrained_cfg_overlay": {**where, "source": ""}}
    # medcls puts its own dropout before its head: no second, hidden one in timm's pooling.
    options = {"drop_rate": 0.0, **backbone_args}
    try:
        try:
            model = timm.create_model(name, num_classes=0, in_chans=in_chans, **pretrained, **options)
        except TypeError:
            if "drop_rate" in backbone_args:
                raise
            options.pop("drop_rate")  # the few architectures without a drop_rate argument
            model = timm.create_model(name, num_classes=0, in_chans=in_chans, **pretrained, **options)
    except TypeError as exc:
        raise ConfigError(f"timm model {name!r} does not take backbone_args {backbone_args} ({exc})") from None
    except (RuntimeError, KeyError, ValueError, OSError) as exc:  # weights that do not fit, hf-hub: offline
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if weights is not None:
            raise WeightsUnavailableError(f"timm could not load the pretrained weights into {name!r} ({first})") \
                from None
        raise ConfigError(f"timm could not build {name!r} ({first})") from None
    if weights is not None:
        check_coverage(model, weight_names(weights), name)
    return model


def weight_names(weights) -> set[str]:
    """The tensor names in a state dict or a weights file, without reading the tensors."""
    if isinstance(weights, dict):
        return set(weights)
    if str(weights).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            return set(handle.keys())
    import torch

    state = torch.load(weights, map_location="meta", weights_only=True, mmap=True)
    return set(state.get("state_dict", state)) if isinstance(state, dict) else set()


def check_coverage(model, names: set[str], name: str) -> None:
    """timm loads headless models non-strictly (the classifier is left out) and only logs what it
    missed: weights for another architecture would leave a random backbone. Every tensor of the
    backbone must come from the weights."""
    from medcls.errors import WeightsUnavailableError

    missing = [k for k in model.state_dict() if k not in names and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsUnavailableError(
            f"the pretrained weights for {name!r} miss {len(missing)} of the backbone's "
            f"{len(model.state_dict())} tensors (first: {missing[0]}): they belong to a different architecture")


def is_timm_name(name: str) -> bool:
    """A timm architecture with a pretrained tag (resnet50.a1_in1k) or a Hugging Face hub id."""
    import timm

    if name.startswith("hf-hub:"):
        return len(name) > len("hf-hub:") and "/" in name
    return "." in name and timm.is_model_pretrained(name)


def pretrained_timm_names(pattern: str | None) -> list[str]:
    import timm

    wanted = pattern if pattern and any(ch in pattern for ch in "*?[") else f"*{pattern or ''}*"
    return timm.list_models(wanted, pretrained=True)


def timm_blocks(model) -> list:
    """Stem, stages, head of a timm model, from input to output."""
    from timm.models import group_modules
    from torch import nn

    groups = group_modules(model, model.group_matcher(coarse=True))
    return [nn.ModuleList(model.get_submodule(n) for n in names) for _, names in sorted(groups.items())]


@hookimpl
def medcls_register_backbones(register):
    import timm

    for name in timm.list_models():
        register(name, partial(create_timm_backbone, name), description=f"timm {name}", blocks=timm_blocks,
                 loads_weights=True)
    # Any pretrained tag and hf-hub: id, resolved when asked for (`medcls list backbones --pretrained`).
    register("timm:tagged", create_timm_backbone, description="timm model with a pretrained tag or hf-hub id",
             blocks=timm_blocks, loads_weights=True, resolves=is_timm_name, pretrained_names=pretrained_timm_names)
