"""medcls: fine-tune pretrained backbones on medical images and report sensitivity, specificity and
ROC with the rigour a clinical paper needs.

The public API (see README "Python API")::

    import medcls
    run = medcls.train(images=x, labels=y, backbone="efficientnet_lite0")
    run.predict(x_new); run.evaluate(); run.export("onnx"); medcls.load_run(run.path)

Importing this package is cheap: torch, timm and MONAI load on first use of what needs them, so
`medcls --help` and plugin discovery stay fast. Plugin authors decorate hooks with `medcls.hookimpl`.
"""

from __future__ import annotations

import importlib

from medcls.errors import (
    ConfigError,
    DataError,
    MedclsError,
    PluginError,
    TrainingDiverged,
    UnknownNameError,
    WeightsUnavailableError,
)
from medcls.plugins.hookspecs import hookimpl
from medcls.version import __version__

# name -> module it lives in; imported on first access (PEP 562)
_LAZY = {
    "train": "medcls.api",
    "plan": "medcls.api",
    "cross_validate": "medcls.api",
    "CrossValidation": "medcls.api",
    "CaseToReview": "medcls.api",
    "load_run": "medcls.api",
    "Run": "medcls.api",
    "RunMetrics": "medcls.api",
    "SplitMetrics": "medcls.api",
    "Estimate": "medcls.api",
    "Evaluation": "medcls.api",
    "create_classifier": "medcls.api",
    "list_backbones": "medcls.api",
    "registered": "medcls.api",
    "register_plugin": "medcls.api",
    "unregister_plugin": "medcls.api",
    "score": "medcls.api",
    "Scores": "medcls.api",
    "compare": "medcls.api",
    "assess": "medcls.api",
    "TrainConfig": "medcls.config",
}

__all__ = [
    "ConfigError", "DataError", "MedclsError", "PluginError", "TrainingDiverged", "UnknownNameError",
    "WeightsUnavailableError", "hookimpl", "__version__", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medcls' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
