"""The architecture as a test: medcls's modules import only from their own layer or the layers below,
counting imports inside functions too, and no two modules import each other (directly or in a loop)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medcls"

# Bottom to top. A module belongs to the first layer whose prefix matches its name.
LAYERS = [
    ("foundation", ("medcls.errors", "medcls.version", "medcls.logs", "medcls.config", "medcls.folders", "medcls.plugins.hookspecs",
                    "medcls.plugins.registry")),
    ("stats", ("medcls.stats",)),
    ("data", ("medcls.data",)),
    ("reports", ("medcls.reports",)),
    ("core", ("medcls.core",)),
    ("plugins", ("medcls.plugins",)),  # built-in plugins and the manager that loads them
    ("workflows", ("medcls.workflows",)),
    ("api", ("medcls.api", "medcls.testing")),
    ("cli", ("medcls.cli", "medcls.__main__")),
]
PACKAGE_ROOTS = {"medcls": "api"}  # `import medcls` is the public API


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(name: str) -> int:
    for index, (layer, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return index
    return [layer for layer, _ in LAYERS].index(PACKAGE_ROOTS[name])


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, name, set(files)) for name, path in files.items()}


def test_every_module_has_a_layer():
    for name in graph():
        layer_of(name)  # raises for a module outside every layer


def test_imports_only_go_down():
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for name, targets in graph().items() for target in targets if layer_of(target) > layer_of(name)]
    assert not upward, "\n".join(upward)


def test_no_import_loops():
    edges = graph()
    state: dict[str, int] = {}
    loops = []

    def visit(node, trail):
        state[node] = 1
        for target in edges[node]:
            if state.get(target) == 1:
                loops.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not loops, "\n".join(loops)


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers.py (and fixtures in conftest.py), so each test module reads
    on its own and moving one never breaks another."""
    tests = Path(__file__).resolve().parent
    offenders = []
    for path in sorted(tests.glob("*.py")) + sorted(tests.parent.glob("plugins/*/tests/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name} imports {t}" for t in targets
                          if t.startswith("tests.") and t not in ("tests.helpers",)]
    assert not offenders, "\n".join(offenders)


def test_the_decision_rule_is_written_once():
    """Positive at P >= threshold, else the most probable class: medcls.stats.metrics.decisions, which
    scoring, predict, cross-validation, subgroups, compare and the figures call (no copy can drift)."""
    import re

    copies = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
              if path.name != "metrics.py"
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if re.search(r"(\[:, ?1\]|\[1\]) >= \w*threshold", line) and not line.lstrip().startswith(("#", '"', "tasks"))]
    assert not copies, "\n".join(copies)


def test_model_json_is_read_by_key_only_in_core_runs():
    """model.json is a RunInfo (medcls.core.runs): fields by attribute, each default in one place; a
    string-keyed read anywhere else (`info.get("spatial_dims", 2)`) would scatter the defaults again."""
    import re

    pattern = re.compile(r"""(?<![\w.])(self\.)?info(\.get\(|\[)["']""")
    reads = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.relative_to(PACKAGE).as_posix() != "core/runs.py"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not reads, "\n".join(reads)
