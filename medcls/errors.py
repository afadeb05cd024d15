"""Errors that medcls raises on bad input; the CLI prints each as one line with its fix and exits
with the error's `exit_code`:

    0 done; 1 an unexpected failure (a bug: please report it); 2 a usage error (flags, arguments);
    3 a configuration error (a key, value, name, plugin or weights); 4 a data error (a file, a
    manifest, an image, a run folder); 5 a file-system error (cannot read or write); 130 interrupted.
"""

USAGE, CONFIG, DATA, FILE_SYSTEM, INTERRUPTED = 2, 3, 4, 5, 130


class MedclsError(Exception):
    """Base class: the message names the thing that is wrong and how to fix it."""

    exit_code = CONFIG


class ConfigError(MedclsError):
    """A configuration file or flag is invalid."""


class DataError(MedclsError):
    """Input data is missing, unreadable or inconsistent."""

    exit_code = DATA


class PluginError(MedclsError):
    """A plugin failed to load, misspelled a hook or registered a name twice."""


class UnknownNameError(MedclsError):
    """A backbone, policy, metric or dataset name that nothing registered."""


class WeightsUnavailableError(MedclsError):
    """Pretrained weights were asked for but no source could provide them."""


class TrainingDiverged(MedclsError):
    """The training loss became NaN or infinite."""
