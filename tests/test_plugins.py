"""Plugin loading through real entry points of fake distributions: good, broken, typo, duplicate."""

import json

import pytest
from click.testing import CliRunner

from medcls.cli import cli
from medcls.errors import PluginError
from medcls.plugins.manager import DEFAULT_PLUGINS, describe_plugins, get_plugin_manager
from medcls.plugins.registry import Registries

GOOD = """
import medcls

@medcls.hookimpl
def medcls_register_metrics(register):
    register("fake_metric", lambda y, p, yhat: 0.5, description="A fake metric", needs_threshold=False)
"""
BROKEN = "import medcls\nraise ImportError('needs libfoo 2.0')\n"
TYPO = """
import medcls

@medcls.hookimpl
def medcls_register_metric(register):
    pass
"""
DUPLICATE = """
import medcls

@medcls.hookimpl
def medcls_register_metrics(register):
    register("roc_auc", lambda y, p, yhat: 1.0, needs_threshold=False)
"""


def test_builtins_register_through_the_same_hooks(pm):
    names = [name for name, _ in pm.list_name_plugin()]
    assert set(DEFAULT_PLUGINS) <= set(names)
    assert Registries(pm)["metrics"].get("roc_auc").plugin == "medcls.plugins.builtin.metrics"


def test_good_plugin_is_loaded_and_attributed(make_distribution):
    make_distribution("fake-good", "fake_good", GOOD)
    pm = get_plugin_manager()
    assert Registries(pm)["metrics"].get("fake_metric").plugin == "fake_good"
    rows = {row["name"]: row for row in describe_plugins(pm)}
    assert rows["fake_good"] == {"name": "fake_good", "distribution": "fake-good", "version": "1.0",
                                 "hooks": ["medcls_register_metrics"], "error": None}


def test_broken_plugin_is_reported_and_the_rest_works(make_distribution, monkeypatch):
    monkeypatch.delenv("MEDCLS_STRICT_PLUGINS", raising=False)
    make_distribution("fake-broken", "fake_broken", BROKEN)
    make_distribution("fake-good", "fake_good", GOOD)
    pm = get_plugin_manager()
    assert [e.entry_point for e in pm.load_errors] == ["fake_broken"]
    assert "needs libfoo 2.0" in pm.load_errors[0].one_line()
    assert "fake-broken" in pm.load_errors[0].one_line()
    assert "fake_metric" in Registries(pm)["metrics"]

    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    warning_lines = [line for line in result.stderr.splitlines() if "fake_broken" in line]
    assert len(warning_lines) == 1 and "failed to load" in warning_lines[0]
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["fake_broken"]["error"] == "ImportError: needs libfoo 2.0"


def test_strict_mode_makes_a_broken_plugin_fatal(make_distribution, monkeypatch):
    make_distribution("fake-broken", "fake_broken", BROKEN)
    monkeypatch.setenv("MEDCLS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="MEDCLS_STRICT_PLUGINS"):
        get_plugin_manager()
    result = CliRunner().invoke(cli, ["list", "metrics"])
    assert result.exit_code == 3
    last = result.stderr.strip().splitlines()[-1]  # the error last, the plugin's traceback above it (strict)
    assert last.startswith("error: ") and "fake_broken" in last and "Traceback" in result.stderr


def test_misspelled_hook_is_an_error(make_distribution, monkeypatch):
    monkeypatch.delenv("MEDCLS_STRICT_PLUGINS", raising=False)
    make_distribution("fake-typo", "fake_typo", TYPO)
    pm = get_plugin_manager()
    assert len(pm.load_errors) == 1
    assert "medcls_register_metric" in pm.load_errors[0].error
    assert "unknown hook" in pm.load_errors[0].error
    assert "fake_typo" not in dict(pm.list_name_plugin())


def test_duplicate_name_names_both_plugins(make_distribution):
    make_distribution("fake-dup", "fake_dup", DUPLICATE)
    with pytest.raises(PluginError) as excinfo:
        Registries(get_plugin_manager())["metrics"]
    message = str(excinfo.value)
    assert "'roc_auc'" in message and "medcls.plugins.builtin.metrics" in message and "fake_dup" in message


def test_duplicate_is_a_one_line_cli_error(make_distribution):
    make_distribution("fake-dup", "fake_dup", DUPLICATE)
    result = CliRunner().invoke(cli, ["list", "metrics"])
    assert result.exit_code == 3
    assert result.stderr.startswith("error: metric 'roc_auc' is registered by both")
    assert "Traceback" not in result.output


def test_plugins_all_includes_builtins():
    result = CliRunner().invoke(cli, ["plugins", "--all"])
    names = {row["name"] for row in json.loads(result.stdout)}
    assert set(DEFAULT_PLUGINS) <= names


def test_example_plugin_installed_from_folder_is_listed():
    """plugins/medcls-example is pip-installed by the dev install and by CI."""
    pytest.importorskip("medcls_example", reason="plugins/medcls-example is not installed")
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(cli, ["plugins"]).stdout)}
    assert rows["example"]["distribution"] == "medcls-example"
    assert rows["example"]["hooks"] == ["medcls_register_backbones", "medcls_register_metrics"]


RAISING = """
import medcls

@medcls.hookimpl
def medcls_register_metrics(register):
    register("half_registered", lambda y, p, yhat: 0.0, needs_threshold=False)
    raise RuntimeError("config file of fake_raising missing")

@medcls.hookimpl
def medcls_register_policies(register):
    register("fake_raising_policy", lambda: None)
"""
NO_ARGUMENT = """
import medcls

@medcls.hookimpl
def medcls_register_metrics():
    pass
"""


@pytest.mark.parametrize("source, fragment", [
    (RAISING, "hook medcls_register_metrics failed and is disabled: RuntimeError: config file of fake_raising missing"),
    (NO_ARGUMENT, "hook medcls_register_metrics failed and is disabled: TypeError: medcls_register_metrics() takes "
                  "no 'register' argument"),
])
def test_a_failing_hook_disables_its_plugin_and_the_rest_works(make_distribution, monkeypatch, source, fragment):
    monkeypatch.delenv("MEDCLS_STRICT_PLUGINS", raising=False)
    make_distribution("fake-raising", "fake_raising", source)
    pm = get_plugin_manager()
    metrics = Registries(pm)["metrics"]
    assert "roc_auc" in metrics and "half_registered" not in metrics  # nothing of the failing plugin is kept
    assert fragment in pm.load_errors[0].one_line() and "'fake-raising'" in pm.load_errors[0].one_line()
    assert pm.get_plugin("fake_raising") is None  # disabled for every other kind too
    assert "fake_raising_policy" not in Registries(pm)["policies"]
    listed = CliRunner().invoke(cli, ["list", "metrics"])  # an unrelated command still works
    assert listed.exit_code == 0 and "sensitivity" in listed.stdout
    warnings = [line for line in listed.stderr.splitlines() if "fake_raising" in line]
    assert len(warnings) == 1 and fragment in warnings[0]
    shown = json.loads(CliRunner().invoke(cli, ["plugins"]).stdout)  # `medcls plugins` shows the error
    row = next(r for r in shown if r["name"] == "fake_raising")
    assert row["error"] and ("RuntimeError" in row["error"] or "TypeError" in row["error"])


def test_a_failing_hook_is_fatal_in_strict_mode(make_distribution, monkeypatch):
    make_distribution("fake-raising", "fake_raising", RAISING)
    monkeypatch.setenv("MEDCLS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="hook medcls_register_metrics failed.*MEDCLS_STRICT_PLUGINS"):
        Registries(get_plugin_manager())["metrics"]


@pytest.mark.parametrize("strict, flags", [("1", []), ("", ["-v"])])
def test_a_failing_hook_shows_its_traceback_in_strict_mode_and_with_verbose(make_distribution, monkeypatch,
                                                                            strict, flags):
    """The plugin author sees where their hook raised (file and line), not only the one-line error."""
    make_distribution("fake-raising", "fake_raising", RAISING)
    monkeypatch.setenv("MEDCLS_STRICT_PLUGINS", strict)
    result = CliRunner().invoke(cli, [*flags, "list", "metrics"])
    assert "Traceback (most recent call last)" in result.stderr
    assert "fake_raising.py" in result.stderr and "config file of fake_raising missing" in result.stderr
    quiet = CliRunner().invoke(cli, ["list", "metrics"]) if not strict else None
    assert quiet is None or "Traceback" not in quiet.stderr  # without -v the user sees the one line


PLUGIN_BACKBONE = """
import medcls
from torch import nn


class Tiny(nn.Module):
    num_features = 4

    def __init__(self, in_chans):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.body(x)


@medcls.hookimpl
def medcls_register_backbones(register):
    register("fake_tiny", Tiny, description="a plugin's backbone", pretrained=False)
"""


def test_a_run_whose_plugin_is_missing_names_the_distribution_to_install(make_distribution, tmp_path, image_folder):
    import importlib
    import shutil
    import sys

    site = make_distribution("fake-backbones", "fake_backbones", PLUGIN_BACKBONE, version="2.3")
    out = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "--backbone", "fake_tiny", "--data", str(image_folder), "--out", str(out),
                                       "--image-size", "24", "--epochs", "1", "--finetune-epochs", "0",
                                       "--set", "bootstrap=50"])
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"name": "fake_tiny", "plugin": "fake_backbones", "distribution": "fake-backbones",
            "version": "2.3"} in manifest["plugins"]
    # uninstall the plugin
    shutil.rmtree(site / "fake_backbones-2.3.dist-info")
    (site / "fake_backbones.py").unlink()
    sys.modules.pop("fake_backbones", None)
    importlib.invalidate_caches()
    result = CliRunner().invoke(cli, ["predict", str(out), str(next(image_folder.rglob("*.png")))])
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: run '{out}' was trained with backbone 'fake_tiny' from plugin 'fake_backbones' of distribution "
        "'fake-backbones' 2.3, which is not installed: pip install 'fake-backbones==2.3'")
    assert CliRunner().invoke(cli, ["list", "metrics"]).exit_code == 0  # unrelated commands still work


TYPO_METADATA = """
import medcls

@medcls.hookimpl
def medcls_register_metrics(register):
    register("error_rate", lambda y, p, yhat: 0.1, needs_threshold=True, higher_is_beter=False)
"""


def test_unknown_registration_metadata_disables_the_plugin_with_the_valid_keys(make_distribution, monkeypatch):
    monkeypatch.delenv("MEDCLS_STRICT_PLUGINS", raising=False)
    make_distribution("fake-typo-metadata", "fake_typo_metadata", TYPO_METADATA)
    pm = get_plugin_manager()
    metrics = Registries(pm)["metrics"]
    assert "error_rate" not in metrics and "roc_auc" in metrics  # never an error rate maximised by mistake
    line = pm.load_errors[0].one_line()
    assert "metric 'error_rate' of plugin 'fake_typo_metadata' has unknown metadata 'higher_is_beter' " \
           "(did you mean 'higher_is_better'?); valid: needs_threshold, higher_is_better" in line


def test_metadata_of_the_wrong_type_is_refused():
    import medcls
    from medcls.plugins.manager import register_plugin

    class Wrong:
        @medcls.hookimpl
        def medcls_register_readers(self, register):
            register("npy", lambda path: None, extensions=".npy")  # a string, not a tuple of strings

    pm = get_plugin_manager(entry_points=False)
    register_plugin(pm, Wrong(), "wrong")
    assert "npy" not in Registries(pm)["readers"]
    assert "metadata extensions = '.npy' should be a tuple of text" in pm.load_errors[0].one_line()


def test_the_laterality_guard_asks_the_policy_whether_it_flips(registries):
    import medcls
    from medcls.config import make_config
    from medcls.core.augment import make_policy
    from medcls.errors import ConfigError
    from medcls.plugins.manager import register_plugin

    class Mirror:
        @medcls.hookimpl
        def medcls_register_policies(self, register):
            register("mirror", lambda mirror: (lambda image: image), params={"mirror": 0.5},
                     flips_lr=lambda params: params["mirror"] > 0)

    pm = get_plugin_manager(entry_points=False)
    register_plugin(pm, Mirror(), "mirror_plugin")
    found = Registries(pm)
    with pytest.raises(ConfigError, match="flips images left-right"):
        make_policy(make_config({"policy": "mirror", "laterality_sensitive": True}), found)
    make_policy(make_config({"policy": "mirror", "laterality_sensitive": True, "aug": {"mirror": 0}}), found)


BAD_PARTS = """
import numpy as np
import torch

import medcls


class FixedSize(torch.nn.Module):
    '''Accepts 32 x 32 input only, like a ViT without dynamic image size.'''

    num_features = 4

    def __init__(self, in_chans):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_chans, 4, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] != 32:
            raise RuntimeError(f"Input width ({x.shape[-1]}) doesn't match model (32).")
        return self.conv(x).mean((2, 3))


class Crop:
    def __init__(self):
        pass

    def __call__(self, image):
        return image[..., : image.shape[-2] // 2, :]


@medcls.hookimpl
def medcls_register_backbones(register):
    register("fixed32", FixedSize, pretrained=False)


@medcls.hookimpl
def medcls_register_policies(register):
    register("crop_half", Crop, params={})


@medcls.hookimpl
def medcls_register_readers(register):
    # forgets to scale: 0..255 pixels
    register("raw_npy", lambda path: np.load(path).astype(np.float32)[None], extensions=(".npy",))
"""


@pytest.mark.parametrize("args, message", [
    (["--backbone", "fixed32"], "error: backbone 'fixed32' of plugin 'fake_parts' fails on 1-channel 24x24 input "
                                "(Input width (24) doesn't match model (32).): choose an image size it accepts, "
                                "or another backbone"),
    (["--policy", "crop_half"], "error: policy 'crop_half' of plugin 'fake_parts' breaks the policy contract on the "
                                "first training images: it changes their shape (2, 1, 24, 24) -> (2, 1, 12, 24) "
                                "(check it with medcls.testing.check_policy)"),
])
def test_contracts_are_checked_before_training_and_name_the_plugin(make_distribution, tmp_path, image_folder,
                                                                   args, message):
    make_distribution("fake-parts", "fake_parts", BAD_PARTS)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(image_folder), "--out", str(out), "--image-size", "24",
                                      "--epochs", "1", "--finetune-epochs", "0", "--no-pretrained", *args])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert result.stderr.strip().splitlines()[-1] == message
    assert CliRunner().invoke(cli, ["list", "policies"]).exit_code == 0  # unrelated commands still work


def test_a_reader_breaking_its_contract_stops_decoding_with_its_name(make_distribution, tmp_path):
    import numpy as np

    make_distribution("fake-parts", "fake_parts", BAD_PARTS)
    for k, label in enumerate(("a", "b")):
        (tmp_path / "npy" / label).mkdir(parents=True)
        for i in range(10):
            np.save(tmp_path / "npy" / label / f"{i}.npy", np.full((16, 16), 200.0) + np.eye(16) * (i + 10 * k))
    result = CliRunner().invoke(cli, ["train", "--data", str(tmp_path / "npy"), "--out", str(tmp_path / "run"),
                                      "--backbone", "test_resnet", "--no-pretrained", "--epochs", "1",
                                      "--set", "positive_class=b"])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: reader 'raw_npy' of plugin 'fake_parts' breaks the reader contract on '")
    assert "it returned values in [200, " in last and last.endswith(", not [0, 1] "
                         "(see medcls.plugins.hookspecs.medcls_register_readers)")
