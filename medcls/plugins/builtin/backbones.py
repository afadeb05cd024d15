"""Built-in backbones: every timm architecture, created headless so medcls can add its own head."""

from __future__ import annotations

from functools import partial

from medcls.plugins.hookspecs import hookimpl


def create_timm_backbone(name: str, in_chans: int):
    """A headless timm model (features `(B, num_features)`) with medcls's optional attributes."""
    import timm
    from timm.models import group_modules
    from torch import nn

    from medcls.core.models import channel_stats

    try:
        # medcls puts its own dropout before its head: no second, hidden one in timm's pooling.
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, drop_rate=0.0)
    except TypeError:  # the few architectures without a drop_rate argument
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    cfg = model.pretrained_cfg or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    model.mean, model.std = channel_stats(mean, in_chans), channel_stats(std, in_chans)
    # Headless models with a pre-logits layer (MobileNetV3's conv_head) output head_hidden_size
    # features, not num_features: medcls's head must fit what forward() returns.
    model.num_features = getattr(model, "head_hidden_size", None) or model.num_features

    def blocks():
        # timm's coarse group matcher is what its layer-wise LR decay uses: stem, stages, head.
        groups = group_modules(model, model.group_matcher(coarse=True))
        return [nn.ModuleList(model.get_submodule(n) for n in names) for _, names in sorted(groups.items())]

    model.medcls_blocks = blocks
    return model


@hookimpl
def medcls_register_backbones(register):
    import timm

    for name in timm.list_models():
        register(name, partial(create_timm_backbone, name), description=f"timm {name}")
