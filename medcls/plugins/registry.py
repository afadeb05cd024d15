"""Collects what plugins register through the `medcls_register_*` hooks: lookup, listing, clashes."""

from __future__ import annotations

import difflib
import fnmatch
import logging
import os
import traceback
from pathlib import Path
from functools import partial
from dataclasses import dataclass, field
from typing import Any

from medcls.errors import PluginError, UnknownNameError
from medcls.logs import logger

# The kinds of things plugins register, and the hook that registers each.
KINDS = {
    "backbones": "medcls_register_backbones",
    "weights": "medcls_register_weight_sources",
    "policies": "medcls_register_policies",
    "metrics": "medcls_register_metrics",
    "readers": "medcls_register_readers",
    "datasets": "medcls_register_datasets",
    "loggers": "medcls_register_loggers",
}

CALLABLE, TEXTS = "a function", "a tuple of text"
# What each kind of registration may carry besides its object, and of what type: anything else is a
# plugin error naming the key (`higher_is_beter=False` must not silently leave a metric maximised).
METADATA = {
    "backbones": {"spatial_dims": int, "pretrained": bool, "loads_weights": bool, "sized": bool, "blocks": CALLABLE, "resolves": CALLABLE,
                  "pretrained_names": CALLABLE},
    "weights": {"offline": bool, "available": CALLABLE},
    "policies": {"params": dict, "flips_lr": CALLABLE},
    "metrics": {"needs_threshold": bool, "higher_is_better": bool, "multiclass": str, "vectorised": CALLABLE,
                "vectorised_multiclass": CALLABLE, "per_label": bool},
    "readers": {"extensions": TEXTS, "dims": int, "sniff": CALLABLE, "settings": TEXTS, "greyscale": CALLABLE,
                "folders": CALLABLE, "patient_id": CALLABLE, "version": str},
    "datasets": {"detect": CALLABLE},
    "loggers": {"extra": str, "check": CALLABLE},
}


class DuplicateNameError(PluginError):
    """Two plugins registered the same name: fatal, since the name must mean one thing."""


def check_metadata(kind: str, name: str, plugin: str, metadata: dict) -> None:
    """Each metadata key is one the kind knows, with a value of its type; else a one-line error
    naming the plugin, the entry and the valid keys."""
    allowed = METADATA[kind]
    for key, value in metadata.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(f"{SINGULAR[kind]} {name!r} of plugin {plugin!r} has unknown metadata {key!r}{hint}; "
                              f"valid: {', '.join(allowed)}")
        expected = allowed[key]
        fits = (callable(value) if expected is CALLABLE else
                isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value) if expected is TEXTS else
                isinstance(value, expected) and not (expected is int and isinstance(value, bool)))
        if value is not None and not fits:
            wanted = expected if isinstance(expected, str) else expected.__name__
            raise PluginError(f"{SINGULAR[kind]} {name!r} of plugin {plugin!r}: metadata {key} = {value!r} should be "
                              f"{wanted}")


SINGULAR = {
    "backbones": "backbone",
    "weights": "weight source",
    "policies": "policy",
    "metrics": "metric",
    "readers": "reader",
    "datasets": "dataset format",
    "loggers": "logger",
}


@dataclass
class PluginLoadError:
    """An installed plugin that could not be loaded, or whose hook failed; shown by `medcls plugins`."""

    distribution: str
    entry_point: str
    version: str
    error: str
    hook: str | None = None  # the hook that raised, when loading worked

    def one_line(self) -> str:
        what = f"hook {self.hook} failed" if self.hook else "failed to load"
        return (f"plugin {self.entry_point!r} from distribution {self.distribution!r} {what} "
                f"and is disabled: {self.error}")


def strict_plugins() -> bool:
    return os.environ.get("MEDCLS_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def report_traceback(plugin_name: str, exc: BaseException) -> None:
    """The plugin's own traceback, for its author: printed under MEDCLS_STRICT_PLUGINS (as an error)
    and with `medcls -v` (at DEBUG); the user otherwise sees the one line."""
    level = logging.ERROR if strict_plugins() else logging.DEBUG
    if logger.isEnabledFor(level):
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        logger.log(level, f"plugin {plugin_name!r} raised:\n{trace}")


@dataclass(frozen=True)
class Entry:
    """One registered thing: what it is, which plugin provided it, and its metadata."""

    name: str
    obj: Any
    plugin: str
    description: str = ""
    metadata: dict = field(default_factory=dict)


class Registry:
    """Everything registered for one kind (backbones, metrics, ...), in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        previous = self.entries.get(entry.name)
        if previous is not None:
            raise DuplicateNameError(
                f"{SINGULAR[self.kind]} {entry.name!r} is registered by both plugin "
                f"{previous.plugin!r} and plugin {entry.plugin!r}: uninstall one or rename it"
            )
        self.entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        entry = self.entries.get(name)
        if entry is not None and "resolves" not in entry.metadata:
            return entry
        resolved = self.resolve(name)
        if resolved is not None:
            return resolved
        listed = [n for n, e in self.entries.items() if "resolves" not in e.metadata]
        close = difflib.get_close_matches(name, listed, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if len(listed) <= 20:
            hint += f"; known: {', '.join(listed)}"
        raise UnknownNameError(f"unknown {SINGULAR[self.kind]} {name!r}{hint} (see `medcls list {self.kind}`)")

    def resolve(self, name: str) -> Entry | None:
        """A name no plugin listed but one recognises (registered with `resolves=fn(name) -> bool`
        and `obj(name, ...)`), e.g. timm's pretrained tags (`resnet50.a1_in1k`) and `hf-hub:` ids."""
        for entry in self.entries.values():
            recognises = entry.metadata.get("resolves")
            if recognises is not None and recognises(name):
                metadata = {k: v for k, v in entry.metadata.items() if k not in ("resolves", "pretrained_names")}
                return Entry(name, partial(entry.obj, name), entry.plugin, f"{entry.description}: {name}", metadata)
        return None

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def matching(self, pattern: str | None = None) -> list[Entry]:
        if not pattern:
            return [e for e in self.entries.values() if "resolves" not in e.metadata]
        if not any(ch in pattern for ch in "*?["):
            pattern = f"*{pattern}*"
        return [e for e in self.entries.values() if fnmatch.fnmatchcase(e.name, pattern) and "resolves" not in e.metadata]

    def pretrained_names(self, pattern: str | None = None) -> list[str]:
        """Names with published pretrained weights that the resolving entries know (timm's tags)."""
        names = []
        for entry in self.entries.values():
            lister = entry.metadata.get("pretrained_names")
            if lister is not None:
                names += lister(pattern)
        return names


def call_hook(impl, register) -> None:
    """Call one plugin's registration hook with `register`. pluggy accepts hookimpls that take
    fewer arguments than the spec; one without `register` could register nothing, so it is an error."""
    if "register" not in impl.argnames:
        raise TypeError(f"{impl.function.__name__}() takes no 'register' argument: write "
                        f"def {impl.function.__name__}(register)")
    impl.function(register)


def disable(pm, plugin_name: str, hook: str, exc: Exception) -> None:
    """A hook that raised: the plugin is reported (one line naming plugin, distribution, hook and
    error) and unregistered, so the rest of medcls works; fatal under MEDCLS_STRICT_PLUGINS."""
    dist, version = getattr(pm, "distributions", {}).get(plugin_name, ("?", "?"))
    error = PluginLoadError(dist, plugin_name, version, f"{type(exc).__name__}: {exc}", hook=hook)
    report_traceback(plugin_name, exc)
    if strict_plugins():
        raise PluginError(error.one_line() + " (MEDCLS_STRICT_PLUGINS is set)") from exc
    if hasattr(pm, "load_errors") and all(e.one_line() != error.one_line() for e in pm.load_errors):
        pm.load_errors.append(error)
    logger.warning(error.one_line())
    if pm.get_plugin(plugin_name) is not None:
        pm.unregister(name=plugin_name)


def collect(pm, kind: str) -> Registry:
    """Call every plugin's registration hook for `kind`, attributing each name to its plugin. A
    hook that raises disables its plugin (what it registered here is dropped); the rest work."""
    registry = Registry(kind)
    hook = getattr(pm.hook, KINDS[kind])
    # Calling each implementation ourselves (public pluggy API) lets a clash name both plugins;
    # get_hookimpls() is in registration order, so built-ins come first.
    for impl in hook.get_hookimpls():
        added: list[str] = []

        def register(name, obj, *, description="", _plugin=impl.plugin_name, **metadata):
            check_metadata(kind, str(name), _plugin, metadata)
            registry.add(Entry(str(name), obj, _plugin, description, metadata))
            added.append(str(name))

        try:
            call_hook(impl, register)
        except DuplicateNameError:
            raise  # a name registered twice: an error naming both plugins
        except Exception as exc:  # a plugin's bug must not take medcls down
            for name in added:
                registry.entries.pop(name, None)
            disable(pm, impl.plugin_name, KINDS[kind], exc)
    return registry


def check_hooks(pm, skip: set[str]) -> None:
    """Call every hook of the plugins not in `skip` with a register that keeps nothing, so that a
    hook raising is found (and its plugin disabled) without building anything."""
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            if impl.plugin_name in skip:
                continue
            def register(name, obj, *, description="", _plugin=impl.plugin_name, _kind=kind, **metadata):
                check_metadata(_kind, str(name), _plugin, metadata)

            try:
                call_hook(impl, register)
            except Exception as exc:
                disable(pm, impl.plugin_name, hook_name, exc)


def source_digest(obj) -> str:
    """SHA-256 (16 hex digits) of the file that defines `obj` (a function, a partial, a class
    instance); '' when it has none (a built-in, code typed at a prompt)."""
    import hashlib
    import inspect

    target = getattr(obj, "func", obj)  # functools.partial
    target = inspect.unwrap(target) if callable(target) else target
    try:
        path = inspect.getsourcefile(target if inspect.isroutine(target) or inspect.isclass(target) else type(target))
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else ""
    except (TypeError, OSError):
        return ""


class Registries:
    """Every kind's registry for one plugin manager, collected on first use (backbones import timm)."""

    def __init__(self, pm) -> None:
        self.pm = pm
        self._collected: dict[str, Registry] = {}

    def provenance(self, entry: Entry) -> dict:
        """Which plugin, distribution and version registered `entry` (recorded with every run)."""
        from medcls.version import __version__

        dist, version = getattr(self.pm, "distributions", {}).get(entry.plugin, ("medcls", __version__))
        return {"name": entry.name, "plugin": entry.plugin, "distribution": dist, "version": version}

    def identity(self, entry: Entry) -> str:
        """What decides the output of `entry`'s code: name, plugin, distribution and version, its
        declared `version` and a hash of the source file defining it (an edit without a version
        bump counts too). Caches keyed by it never serve what older code produced."""
        provenance = self.provenance(entry)
        return f"{entry.name}@{provenance['plugin']}:{provenance['distribution']}=={provenance['version']}" \
            f":{entry.metadata.get('version', '')}:{source_digest(entry.obj)}"

    def __getitem__(self, kind: str) -> Registry:
        if kind not in self._collected:
            self._collected[kind] = collect(self.pm, kind)
        return self._collected[kind]
