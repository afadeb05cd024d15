"""Built-in backbones: every timm architecture, created headless so medcls can add its own head.

The timm module is returned as timm built it: nothing is added to or overwritten on it. Its
normalisation travels with it in timm's `pretrained_cfg`, and its block grouping (timm's coarse
group matcher, what timm's layer-wise learning-rate decay uses) is given at registration as
`blocks=timm_blocks`, a function of the module, so copies of a model group their own parameters.
"""

from __future__ import annotations

from functools import partial

from medcls.plugins.hookspecs import hookimpl


def create_timm_backbone(name: str, in_chans: int):
    """A headless timm model: `(B, in_chans, H, W)` -> features `(B, F)`."""
    import timm

    try:
        # medcls puts its own dropout before its head: no second, hidden one in timm's pooling.
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, drop_rate=0.0)
    except TypeError:  # the few architectures without a drop_rate argument
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)


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
