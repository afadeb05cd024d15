"""Defaults chosen by measurement: the image_size 'auto' rule, and 3D stems fitted to the grid."""

import numpy as np
import pytest

import medcls
from medcls.config import make_config
from medcls.data.cases import Case
from medcls.data.loading import auto_image_size
from medcls.errors import ConfigError


def cases_of(side_h, side_w=None, count=10):
    return [Case(key=str(i), label="a", array=np.zeros((1, side_h, side_w or side_h), np.float32))
            for i in range(count)]


@pytest.mark.parametrize("side, expected", [(28, 64), (64, 64), (96, 96), (100, 96), (150, 144), (512, 224),
                                            (2000, 224)])
def test_auto_never_upsamples_beyond_what_a_cnn_needs_nor_exceeds_224(side, expected):
    assert auto_image_size(cases_of(side)) == expected


def test_auto_uses_the_shorter_side_and_the_median():
    assert auto_image_size(cases_of(120, 400)) == 128  # the shorter side, 120, rounded to a multiple of 16
    mixed = cases_of(28, count=3) + cases_of(512, count=7)
    assert auto_image_size(mixed) == 224


def test_auto_is_a_valid_setting_and_other_text_is_not(registries):
    from medcls.workflows.train import checked_config

    config = checked_config(make_config({}, {"image_size": "auto", "backbone": "test_resnet", "pretrained": False},
                                        where="test"), registries)
    assert config.image_size == 96  # the synthetic phantoms are 96 px: kept, not upsampled to 224
    with pytest.raises(ConfigError, match="image_size = 'big' is invalid"):
        make_config({}, {"image_size": "big"}, where="test")


def test_a_monai_resnet_gets_a_small_stem_on_a_small_grid_and_keeps_it_when_loaded(tmp_path):
    pytest.importorskip("medcls_monai", reason="the MONAI plugin is not installed")
    small = medcls.create_classifier("monai:resnet10", 2, in_chans=1, input_shape=(28, 28, 28))
    default = medcls.create_classifier("monai:resnet10", 2, in_chans=1)
    assert small.backbone.conv1.kernel_size == (3, 3, 3) and default.backbone.conv1.kernel_size == (7, 7, 7)
    large = medcls.create_classifier("monai:resnet10", 2, in_chans=1, input_shape=(64, 64, 64))
    assert large.backbone.conv1.kernel_size == (7, 7, 7)
    given = medcls.create_classifier("monai:resnet10", 2, in_chans=1, input_shape=(28, 28, 28), conv1_t_size=5)
    assert given.backbone.conv1.kernel_size == (5, 5, 5)  # backbone_args win over the rule
