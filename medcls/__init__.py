"""medcls: plugin-based medical image classification.

The public surface for plugin authors is ``medcls.hookimpl``; importing this package is cheap
(no torch, timm or MONAI) so that ``medcls --help`` and plugin discovery stay fast.
"""

import pluggy

from medcls.errors import (
    ConfigError,
    DataError,
    MedclsError,
    PluginError,
    UnknownNameError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("medcls")

__all__ = [
    "ConfigError",
    "DataError",
    "MedclsError",
    "PluginError",
    "UnknownNameError",
    "WeightsUnavailableError",
    "hookimpl",
    "__version__",
]
