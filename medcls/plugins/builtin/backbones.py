"""Built-in backbones: every timm architecture, created headless so medcls can add its own head.

The timm module is returned as timm built it: nothing is added to or overwritten on it. Its
normalisation travels with it in timm's `pretrained_cfg`, and its block grouping (timm's coarse
group matcher, what timm's layer-wise learning-rate decay uses) is given at registration as
`blocks=timm_blocks`, a function of the module, so copies of a model group their own parameters.
"""

from __future__ import annotations

from functools import partial

from medcls.plugins.hookspecs import hookimpl


def create_timm_backbone(name: str, in_chans: int, **backbone_args):
    """A headless timm model: `(B, in_chans, H, W)` -> features `(B, F)`. `backbone_args` go to the
    model's constructor (drop_path_rate, global_pool, ...)."""
    import timm

    from medcls.errors import ConfigError

    # medcls puts its own dropout before its head: no second, hidden one in timm's pooling.
    options = {"drop_rate": 0.0, **backbone_args}
    try:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **options)
        except TypeError:
            if "drop_rate" in backbone_args:
                raise
            options.pop("drop_rate")  # the few architectures without a drop_rate argument
            return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **options)
    except TypeError as exc:
        raise ConfigError(f"timm model {name!r} does not take backbone_args {backbone_args} ({exc})") from None
    except RuntimeError as exc:  # an hf-hub: name that cannot be fetched offline, a bad config
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"timm could not build {name!r} ({first})") from None


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
        register(name, partial(create_timm_backbone, name), description=f"timm {name}", blocks=timm_blocks)
    # Any pretrained tag and hf-hub: id, resolved when asked for (`medcls list backbones --pretrained`).
    register("timm:tagged", create_timm_backbone, description="timm model with a pretrained tag or hf-hub id",
             blocks=timm_blocks, resolves=is_timm_name, pretrained_names=pretrained_timm_names)
