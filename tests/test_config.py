"""Configuration: files and flags fill one typed object; unknown keys and bad values fail loudly."""

import pytest

from medcls.config import TrainConfig, make_config, read_config_file
from medcls.errors import ConfigError


def test_defaults():
    assert make_config() == TrainConfig()


def test_yaml_and_toml_files_and_flag_override(tmp_path):
    (tmp_path / "a.yaml").write_text("backbone: resnet18\nepochs: 4\naug:\n  rotate_deg: 5\n")
    (tmp_path / "b.toml").write_text('[train]\nbackbone = "resnet18"\nepochs = 4\n')
    for name in ("a.yaml", "b.toml"):
        config = make_config(read_config_file(tmp_path / name), {"epochs": 7})
        assert config.backbone == "resnet18" and config.epochs == 7
    assert make_config(read_config_file(tmp_path / "a.yaml")).aug == {"rotate_deg": 5}


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        make_config({"epoch": 3}, where="config file 'x.yaml'")


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "ten", "invalid"),
    ("epochs", 2.5, "whole number"),
    ("pretrained", "maybe", "true or false"),
    ("optimizer", "adam", "choose one of adamw, sgd, rmsprop"),
    ("backbone", None, "a value is required"),
])
def test_bad_values(key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_config({key: value})


def test_strings_from_the_command_line_are_coerced():
    config = make_config(overrides={"pretrained": "false", "lr": "0.01", "patient_column": None})
    assert config.pretrained is False and config.lr == 0.01


def test_unparsable_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        read_config_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")
