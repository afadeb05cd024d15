"""The plugin manager factory: built-in plugins plus those installed under the `medcls` entry-point group."""

from __future__ import annotations

import importlib
import importlib.metadata

import pluggy

from medcls.errors import PluginError
from medcls.logs import logger
from medcls.plugins import hookspecs
from medcls.plugins.registry import PluginLoadError, report_traceback, strict_plugins

# Built-in parts are ordinary plugins, registered exactly like installed ones.
DEFAULT_PLUGINS = (
    "medcls.plugins.builtin.backbones",
    "medcls.plugins.builtin.weights",
    "medcls.plugins.builtin.policies",
    "medcls.plugins.builtin.metrics",
    "medcls.plugins.builtin.readers",
    "medcls.plugins.builtin.datasets",
    "medcls.plugins.builtin.loggers",
)

ENTRY_POINT_GROUP = "medcls"

# Plugins registered from Python (`medcls.register_plugin`, e.g. in a notebook): (name, plugin).
IN_PROCESS: list[tuple[str, object]] = []


class MedclsPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which installed plugins failed to load."""

    def __init__(self) -> None:
        super().__init__("medcls")
        self.load_errors: list[PluginLoadError] = []
        self.distributions: dict[str, tuple[str, str]] = {}


def get_plugin_manager(*, entry_points: bool = True) -> MedclsPluginManager:
    """A fresh manager with the built-ins and (by default) every installed plugin."""
    pm = MedclsPluginManager()
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        register_plugin(pm, importlib.import_module(module_name), module_name)
    if entry_points:
        load_entry_points(pm)
    for name, plugin in IN_PROCESS:
        register_plugin(pm, plugin, name)
    return pm


def register_in_process(plugin: object, name: str | None = None) -> str:
    """Add a plugin object for every plugin manager made from now on in this process; a
    misspelled hook is an error at once, not at the next command. Its name defaults to the
    module's or class's name, so running a notebook cell again replaces the plugin it registered
    before instead of adding a second one whose names would clash. Returns the name."""
    if name is None:
        name = getattr(plugin, "__name__", None) or getattr(type(plugin), "__name__", None) \
            or f"in-process-{len(IN_PROCESS) + 1}"
    if name in DEFAULT_PLUGINS or name in installed_plugin_names():
        raise PluginError(f"a plugin named {name!r} is built in or installed: give your plugin another name")
    check = MedclsPluginManager()
    check.add_hookspecs(hookspecs)
    register_plugin(check, plugin, name)  # raises PluginError on an unknown hook
    if unregister_in_process(name):
        logger.warning(f"plugin {name!r} registered again in this process: the new definition replaces the earlier one")
    IN_PROCESS.append((name, plugin))
    return name


def installed_plugin_names() -> set[str]:
    return {entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def unregister_in_process(name: str) -> bool:
    """Forget an in-process plugin; False when none has that name."""
    before = len(IN_PROCESS)
    IN_PROCESS[:] = [(n, p) for n, p in IN_PROCESS if n != name]
    return len(IN_PROCESS) < before


def register_plugin(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register one plugin and reject hooks that match no spec (a misspelled hook)."""
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith("medcls_") and not hasattr(hookspecs, attr)
        ]
        raise PluginError(
            f"plugin {name!r} implements unknown hook(s) {', '.join(unknown) or '?'}: "
            f"check the spelling against `medcls.plugins.hookspecs` ({exc})"
        ) from None


def load_entry_points(pm: MedclsPluginManager) -> None:
    """Load each installed plugin in its own try, so one broken plugin never takes medcls down."""
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        try:
            register_plugin(pm, ep.load(), ep.name)
        except Exception as exc:  # any failure in third-party code is reported, not raised
            error = PluginLoadError(dist, ep.name, version, f"{type(exc).__name__}: {exc}")
            report_traceback(ep.name, exc)
            if strict_plugins():
                raise PluginError(error.one_line() + " (MEDCLS_STRICT_PLUGINS is set)") from exc
            pm.load_errors.append(error)
            logger.warning(error.one_line())
        else:
            pm.distributions[ep.name] = (dist, version)


def describe_plugins(pm: MedclsPluginManager, *, include_builtin: bool = False) -> list[dict]:
    """Name, version, hooks and error of each plugin, as `medcls plugins` prints them. Installed
    plugins' hooks are called once (with a register that keeps nothing), so a hook that raises
    shows its error here too; built-in hooks are not called (they import timm)."""
    from medcls.plugins.registry import check_hooks
    from medcls.version import __version__

    check_hooks(pm, skip=set(DEFAULT_PLUGINS))
    rows = []
    for name, plugin in pm.list_name_plugin():
        builtin = name in DEFAULT_PLUGINS
        if builtin and not include_builtin:
            continue
        dist, version = pm.distributions.get(name, ("medcls", __version__))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "distribution": dist, "version": version, "hooks": hooks, "error": None})
    for err in pm.load_errors:
        rows.append(
            {"name": err.entry_point, "distribution": err.distribution, "version": err.version,
             "hooks": [], "error": err.error}
        )
    return sorted(rows, key=lambda row: row["name"])
