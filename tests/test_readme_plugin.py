"""The user guide's plugin walkthrough (docs/guide.md) is true: its six-hook plugin is the folder
plugins/medcls-npy word for word, and that plugin's own tests (which train with all six parts) are
the ones the guide shows."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "medcls-npy"


def walkthrough_blocks() -> list[str]:
    guide = (ROOT / "docs" / "guide.md").read_text()
    section = guide.split("### Writing a plugin, all six hooks", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_guide_shows_the_plugin_folder_as_it_is():
    plugin_code, test_code = walkthrough_blocks()
    first, code = plugin_code.split("\n", 1)
    assert first == "# plugins/medcls-npy/medcls_npy/__init__.py"
    assert code == (PLUGIN / "medcls_npy" / "__init__.py").read_text()
    tests = (PLUGIN / "tests" / "test_medcls_npy.py").read_text()
    imports, body = test_code.split("\n\n", 1)
    assert imports in tests and body in tests
    hooks = set(re.findall(r"def (medcls_register_\w+)", code))
    assert len(hooks) == 6, hooks


def test_the_developer_install_and_ci_install_the_plugin():
    assert "plugins/medcls-npy" in (ROOT / ".ci" / "run").read_text()
    assert "plugins/medcls-npy" in (ROOT / "README.md").read_text()
