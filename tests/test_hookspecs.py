"""Every hook is documented (in hookspecs and the README) and has a test of its own."""

from pathlib import Path

from medcls.plugins import hookspecs
from medcls.plugins.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("medcls_"))


def test_every_hook_is_a_registration_kind():
    assert sorted(KINDS.values()) == HOOKS


def test_every_hook_is_documented_with_an_example():
    readme = (ROOT / "README.md").read_text()
    for name in HOOKS:
        doc = getattr(hookspecs, name).__doc__
        assert doc and "Example::" in doc and "register(" in doc, name
        assert f"`{name}`" in readme, f"{name} is not documented in README.md"


def test_every_hook_has_its_own_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name)
    for name in HOOKS:
        assert f"def {name}(register)" in tests or f"def test_{name}" in tests, f"no test implements {name}"
