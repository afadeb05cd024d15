"""Built-in pretrained-weight source: the timm / Hugging Face hub (network, or its local cache)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from medcls.plugins.hookspecs import hookimpl
from medcls.errors import WeightsUnavailableError


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine answers in seconds rather than after retries."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_hub_file(hf_hub_id: str) -> str | None:
    """The path of timm weights already in the local Hugging Face cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hf_hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(path, str):
            return path
    return None


def timm_hub_weights(backbone: str):
    """timm's default pretrained tag for `backbone`, from the local hub cache or a download."""
    import timm

    if not timm.is_model(backbone):
        return None
    if not timm.is_model_pretrained(backbone):
        raise WeightsUnavailableError(f"timm publishes no pretrained weights for {backbone!r}")
    cfg = timm.models.get_pretrained_cfg(backbone)
    overlay = {}
    cached = cached_hub_file(cfg.hf_hub_id) if cfg is not None and cfg.hf_hub_id else None
    if cached:
        overlay = {"file": cached}
    elif not hub_reachable():
        raise WeightsUnavailableError(
            "the Hugging Face hub is unreachable (offline) and the weights are not in its local cache"
        )
    try:
        model = timm.create_model(backbone, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as exc:  # network, hub and cache errors all mean "not available here"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsUnavailableError(f"download from the timm hub failed ({first_line[:160]})") from None
    return model.state_dict()


@hookimpl
def medcls_register_weight_sources(register):
    register(
        "timm-hub",
        timm_hub_weights,
        description="timm's default ImageNet weights from the Hugging Face hub or its local cache",
        offline=False,
    )
