"""Configuration: files and flags fill one typed object; unknown keys and bad values fail loudly."""

from pathlib import Path

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


# Every kind of field refuses a bad value however the config is built: directly, from a file or flags.
@pytest.mark.parametrize("values, message", [
    ({"optimizer": "adam"}, "optimizer = 'adam' is invalid: choose one of adamw, sgd, rmsprop"),  # choice
    ({"schedule": "cosin"}, "schedule = 'cosin' is invalid: choose one of cosine"),  # choice
    ({"patient_level": "median"}, "patient_level = 'median' is invalid"),  # optional choice
    ({"epochs": -1}, "epochs = -1 is invalid: must be at least 0"),  # int range
    ({"batch_size": 0}, "batch_size = 0 is invalid"),  # int range
    ({"image_size": 0}, "image_size = 0 is invalid"),  # int range
    ({"epochs": 2.5}, "epochs = 2.5 is invalid: expected a whole number"),  # int type
    ({"epochs": True}, "epochs = True is invalid: expected a whole number"),  # bool is no int
    ({"image_size": "big"}, "image_size = 'big' is invalid: expected a whole number or 'auto'"),
    ({"lr": -1.0}, "lr = -1.0 is invalid: must be above 0"),  # float range
    ({"lr": float("nan")}, "lr = nan is invalid: expected a finite number"),  # float finite
    ({"lr": "fast"}, "lr = 'fast' is invalid: expected a number"),  # float type
    ({"val_fraction": 1.5}, "val_fraction = 1.5 is invalid"),  # fraction
    ({"dropout": 2.0}, "dropout = 2.0 is invalid"),  # fraction
    ({"prevalence": 0.0}, "prevalence = 0.0 is invalid: must be above 0"),  # optional float range
    ({"pretrained": "maybe"}, "pretrained = 'maybe' is invalid: expected true or false"),  # optional bool
    ({"strict": 3}, "strict = 3 is invalid: expected true or false"),  # bool
    ({"backbone": [7]}, "backbone = \\[7\\] is invalid: expected text"),  # text
    ({"backbone": None}, "backbone = None is invalid: a value is required"),  # required
    ({"aug": "rotate"}, "aug = 'rotate' is invalid: expected a table"),  # table
    ({"aug": {"rotate_deg": "abc"}}, "aug rotate_deg = 'abc' is invalid"),  # table values
    ({"volume_size": "64,abc"}, "volume_size = '64,abc' is invalid"),  # grid
    ({"volume_size": "1.5"}, "volume_size = '1.5' is invalid: voxel counts are whole numbers"),
    ({"device": "gpu"}, "device = 'gpu' is invalid: use auto, cpu, cuda, cuda:N or mps"),
    ({"slices": 2}, "slices = 2 is invalid: the number of adjacent slices must be odd"),  # cross-field
    ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training data"),  # cross-field
    ({"epochs": 0, "finetune_epochs": 0}, "train nothing"),  # cross-field
    ({"folds": 1}, "at least 2 folds"),
    ({"folds": 3, "ensemble": 2}, "cannot be combined"),
    ({"crop_foreground": True, "slices": 3}, "crop_foreground cuts 2D images.*drop crop_foreground"),
])
def test_every_field_kind_refuses_a_bad_value(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**values)  # built directly: the object checks itself
    with pytest.raises(ConfigError):
        make_config(overrides=values)


def test_direct_construction_no_longer_falls_back_to_a_default():
    """TrainConfig(optimizer="adam", schedule="cosin") used to train AdamW with no schedule."""
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adam", schedule="cosin")


def test_sections_group_every_key_and_files_may_use_them(tmp_path):
    from medcls.config import FIELDS, SECTIONS, describe_keys

    config = TrainConfig()
    keys = [k for s in SECTIONS for k in config.section(s)]
    assert sorted(keys) == sorted(FIELDS)  # every key in exactly one section
    assert config.section("optimisation")["lr"] == config.lr and "backbone" in config.section("model")
    (tmp_path / "sectioned.yaml").write_text("model:\n  backbone: resnet18\noptimisation:\n  lr: 0.01\nseed: 3\n")
    loaded = make_config(read_config_file(tmp_path / "sectioned.yaml"))
    assert (loaded.backbone, loaded.lr, loaded.seed) == ("resnet18", 0.01, 3)
    (tmp_path / "misplaced.yaml").write_text("model:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match="'lr' belongs to section 'optimisation', not 'model'"):
        read_config_file(tmp_path / "misplaced.yaml")
    assert all(row["help"] for row in describe_keys())  # every key has its one-line meaning


def test_medcls_config_lists_every_key_with_its_default():
    from click.testing import CliRunner

    from medcls.cli import cli
    from medcls.config import FIELDS

    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0
    for key in FIELDS:
        assert f"  {key} = " in result.stdout
    assert "[optimisation]" in result.stdout and "adamw|sgd|rmsprop" in result.stdout
    assert "lr = " in CliRunner().invoke(cli, ["config", "lr"]).stdout


def test_engine_factories_refuse_unknown_names():
    import torch

    from medcls.core.engine import make_optimizer, make_schedule

    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ConfigError, match="optimizer 'adam'"):
        make_optimizer("adam", params, 0.1, 0.9, 0.0)
    optimizer = make_optimizer("sgd", params, 0.1, 0.9, 0.0)
    with pytest.raises(ConfigError, match="schedule 'cosin'"):
        make_schedule("cosin", optimizer, 3)
    assert make_schedule("none", optimizer, 3) is None


EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").iterdir()
                  if p.suffix in (".yaml", ".toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_are_valid_and_listed(path):
    config = make_config(read_config_file(path), where=str(path))  # unknown keys or bad values fail here
    assert config.out.startswith("runs/")  # runs land in a runs/ folder, not beside the examples
    assert f"`{path.name}`" in (path.parent / "README.md").read_text()


def test_vesselmnist3d_preset_is_the_measured_ensemble():
    config = make_config(read_config_file(next(p for p in EXAMPLES if p.name == "vesselmnist3d.yaml")))
    assert (config.backbone, str(config.volume_size), config.backbone_args) == ("monai:resnet10", "28", {"widen_factor": 0.5})
    assert (config.ensemble, config.bagging, config.epochs, config.finetune_epochs) == (3, False, 30, 0)
