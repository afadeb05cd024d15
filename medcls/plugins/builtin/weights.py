"""Built-in pretrained-weight source: timm's weights on the Hugging Face hub, or in its local cache.

The hub library's own settings decide what happens: `HF_HUB_OFFLINE` (never touch the network),
`HF_ENDPOINT` (a mirror) and `HF_HOME`/`HF_HUB_CACHE` (where downloads are kept). The source
returns the path of the weights file; timm loads it (`pretrained_cfg_overlay=dict(file=...)`).
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from medcls.errors import WeightsUnavailableError
from medcls.plugins.hookspecs import hookimpl

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_location(backbone: str) -> tuple[str, str | None] | None:
    """(hub repository, revision) of `backbone`'s timm weights, or None if timm has none there."""
    import timm

    if backbone.startswith("hf-hub:"):
        repo, _, revision = backbone[len("hf-hub:"):].partition("@")
        return repo, revision or None
    if not timm.is_model(backbone):
        return None
    if not timm.is_model_pretrained(backbone):
        raise WeightsUnavailableError(f"timm publishes no pretrained weights for {backbone!r}")
    cfg = timm.models.get_pretrained_cfg(backbone)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsUnavailableError(f"timm's weights for {backbone!r} are not on the Hugging Face hub")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, revision or None


def cached_file(repo: str, revision: str | None) -> str | None:
    """The weights file already in the local hub cache, if any (no network)."""
    from huggingface_hub import constants, try_to_load_from_cache

    for filename in WEIGHT_FILES:
        path = try_to_load_from_cache(repo, filename, revision=revision, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(path, str):
            return path
    return None


def cached_backbones() -> list[str]:
    """timm backbones whose weights are in the local hub cache (`timm/<model>.<tag>` repositories),
    by the name `--backbone` takes; reads the cache folder only."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE)
    names = []
    for folder in sorted(root.glob("models--timm--*")) if root.is_dir() else []:
        if any(any(snapshot.glob(name)) for snapshot in folder.glob("snapshots/*") for name in WEIGHT_FILES):
            names.append(folder.name[len("models--timm--"):])
    return names


def hub_offline_reason() -> str | None:
    """Why the hub cannot be asked now, or None: `HF_HUB_OFFLINE` is set, or its endpoint's name
    does not resolve (a machine without network; checked so it fails in a second, not after the hub
    client's retries)."""
    from huggingface_hub import constants

    if getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)():
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"{host} cannot be resolved (no network; set HF_HUB_OFFLINE=1 to skip this check)"
    return None


def download(repo: str, revision: str | None) -> str:
    from huggingface_hub import constants, hf_hub_download

    errors = []
    for filename in WEIGHT_FILES:
        try:
            return hf_hub_download(repo, filename, revision=revision, cache_dir=constants.HF_HUB_CACHE)
        except Exception as exc:  # a missing file, an HTTP or connection error: try the next name
            errors.append((str(exc).strip().splitlines() or [type(exc).__name__])[0][:160])
    raise WeightsUnavailableError(f"download of {repo} from the Hugging Face hub failed ({errors[-1]})")


def timm_hub_weights(backbone: str):
    """The path of `backbone`'s timm weights: from the local hub cache, else downloaded."""
    location = hub_location(backbone)
    if location is None:
        return None
    cached = cached_file(*location)
    if cached:
        return cached
    reason = hub_offline_reason()
    if reason:
        raise WeightsUnavailableError(
            f"the Hugging Face hub is not reachable ({reason}) and {location[0]} is not in its local cache"
        )
    return download(*location)


@hookimpl
def medcls_register_weight_sources(register):
    register(
        "timm-hub",
        timm_hub_weights,
        description="timm's ImageNet weights from the Hugging Face hub or its local cache",
        offline=False,
        available=cached_backbones,
    )
