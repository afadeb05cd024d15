"""Errors that medcls raises on bad input; the CLI prints each as one line with its fix."""


class MedclsError(Exception):
    """Base class: the message names the thing that is wrong and how to fix it."""


class ConfigError(MedclsError):
    """A configuration file or flag is invalid."""


class DataError(MedclsError):
    """Input data is missing, unreadable or inconsistent."""


class PluginError(MedclsError):
    """A plugin failed to load, misspelled a hook or registered a name twice."""


class UnknownNameError(MedclsError):
    """A backbone, policy, metric or dataset name that nothing registered."""


class WeightsUnavailableError(MedclsError):
    """Pretrained weights were asked for but no source could provide them."""


class TrainingDiverged(MedclsError):
    """The training loss became NaN or infinite."""
