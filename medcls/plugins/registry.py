"""Collects what plugins register through the `medcls_register_*` hooks: lookup, listing, clashes."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from medcls.errors import PluginError, UnknownNameError

# The kinds of things plugins register, and the hook that registers each.
KINDS = {
    "backbones": "medcls_register_backbones",
    "weights": "medcls_register_weight_sources",
    "policies": "medcls_register_policies",
    "metrics": "medcls_register_metrics",
    "readers": "medcls_register_readers",
    "datasets": "medcls_register_datasets",
}

SINGULAR = {
    "backbones": "backbone",
    "weights": "weight source",
    "policies": "policy",
    "metrics": "metric",
    "readers": "reader",
    "datasets": "dataset format",
}


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
            raise PluginError(
                f"{SINGULAR[self.kind]} {entry.name!r} is registered by both plugin "
                f"{previous.plugin!r} and plugin {entry.plugin!r}: uninstall one or rename it"
            )
        self.entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.entries, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            if len(self.entries) <= 20:
                hint += f"; known: {', '.join(self.entries)}"
            raise UnknownNameError(
                f"unknown {SINGULAR[self.kind]} {name!r}{hint} "
                f"(see `medcls list {self.kind}`)"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def matching(self, pattern: str | None = None) -> list[Entry]:
        if not pattern:
            return list(self.entries.values())
        if not any(ch in pattern for ch in "*?["):
            pattern = f"*{pattern}*"
        return [e for e in self.entries.values() if fnmatch.fnmatchcase(e.name, pattern)]


def collect(pm, kind: str) -> Registry:
    """Call every plugin's registration hook for `kind`, attributing each name to its plugin."""
    registry = Registry(kind)
    hook = getattr(pm.hook, KINDS[kind])
    # Calling each implementation ourselves (public pluggy API) lets a clash name both plugins;
    # get_hookimpls() is in registration order, so built-ins come first.
    for impl in hook.get_hookimpls():

        def register(name, obj, *, description="", _plugin=impl.plugin_name, **metadata):
            registry.add(Entry(str(name), obj, _plugin, description, metadata))

        impl.function(register)
    return registry


class Registries:
    """Every kind's registry for one plugin manager, collected on first use (backbones import timm)."""

    def __init__(self, pm) -> None:
        self.pm = pm
        self._collected: dict[str, Registry] = {}

    def __getitem__(self, kind: str) -> Registry:
        if kind not in self._collected:
            self._collected[kind] = collect(self.pm, kind)
        return self._collected[kind]
