"""Augmentation policies: every registered one keeps shape and dtype, is repeatable under a seed;
`interpretable` never shears or flips vertically (checked on an asymmetric marker)."""

import pytest
import torch

from medcls.config import make_config
from medcls.errors import ConfigError
from medcls.plugins.manager import get_plugin_manager
from medcls.plugins.registry import Registries
from medcls.core.augment import make_policy

POLICIES = sorted(e.name for e in Registries(get_plugin_manager())["policies"])


def policy(registries, name, seed=0, **aug):
    transform, _ = make_policy(make_config({"policy": name, "seed": seed, "aug": aug}), registries)
    return transform


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("shape", [(1, 48, 48), (3, 40, 56), (1, 12, 24, 24)])
def test_policy_keeps_shape_dtype_range_and_is_seeded(registries, name, shape):
    image = torch.rand(shape)
    first = [policy(registries, name, seed=5)(image) for _ in range(1)][0]
    again = policy(registries, name, seed=5)(image)
    assert first.shape == image.shape and first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, again)


def l_marker(size=64):
    """An asymmetric L: a vertical bar on the left, a foot to the right at the bottom."""
    image = torch.zeros(1, size, size)
    image[0, 12:52, 16:24] = 1.0  # vertical stroke
    image[0, 44:52, 16:44] = 1.0  # foot
    return image


def centroid(mask: torch.Tensor) -> tuple[float, float]:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return float(rows.float().mean()), float(cols.float().mean())


def test_interpretable_never_flips_vertically_or_shears(registries):
    transform = policy(registries, "interpretable", seed=0, brightness=0.0, gamma=0.0, noise_std=0.0)
    marker = l_marker()
    for _ in range(40):
        out = transform(marker)[0] > 0.5
        stroke_row, stroke_col = centroid(out[:, :30] if out[:, :30].any() else out)
        foot = out[40:60]
        # The foot stays at the bottom (no vertical flip) and to the right of the stroke (no LR flip).
        assert foot.sum() > 0.5 * (8 * 28)
        _, foot_col = centroid(foot)
        assert foot_col > stroke_col
        # Area is preserved within the zoom bound (no shear squashing the shape).
        assert 0.85 < out.sum().item() / (marker[0] > 0.5).sum().item() < 1.15


def test_aggressive_does_flip_and_shear(registries):
    transform = policy(registries, "aggressive", seed=0, brightness=0.0)
    marker = l_marker()
    flipped = 0
    for _ in range(40):
        out = transform(marker)[0] > 0.5
        if out.any() and centroid(out)[0] < 32 - 4:  # most mass moved to the top half
            flipped += 1
    assert flipped >= 5


def test_unknown_policy_parameter(registries):
    with pytest.raises(ConfigError, match="has no parameter 'rotation'.*rotate_deg"):
        policy(registries, "interpretable", rotation=5)


def test_parameter_override_takes_effect(registries):
    marker = l_marker()
    still = policy(registries, "interpretable", rotate_deg=0, shift=0, zoom=0, brightness=0, gamma=0, noise_std=0)
    assert torch.equal(still(marker), marker)


class ConstantImages(torch.utils.data.Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.transform(torch.full((1, 8, 8), 0.5))


def test_loader_workers_get_different_augmentation_streams(registries):
    from functools import partial

    from medcls.core.loader import seed_worker

    transform = policy(registries, "aggressive", seed=0, rotate_deg=0, shift=0, shear=0, zoom=0, lr_flip=0,
                       ud_flip=0, brightness=0.5)
    loader = torch.utils.data.DataLoader(ConstantImages(transform), batch_size=2, num_workers=2,
                                         worker_init_fn=partial(seed_worker, seed=0))
    first, second = list(loader)  # one batch from each worker
    assert not torch.equal(first, second)


def test_laterality_sensitive_data_refuses_left_right_flips(registries):
    config = make_config({"policy": "aggressive", "laterality_sensitive": True})
    with pytest.raises(ConfigError, match="laterality-sensitive.*--aug lr_flip=0"):
        make_policy(config, registries)
    make_policy(make_config({"policy": "interpretable", "laterality_sensitive": True}), registries)
    make_policy(make_config({"policy": "aggressive", "laterality_sensitive": True, "aug": {"lr_flip": 0}}), registries)
    make_policy(make_config({"policy": "aggressive", "laterality_sensitive": True, "allow_lr_flip": True}), registries)
    with pytest.raises(ConfigError, match="laterality-sensitive"):
        make_policy(make_config({"policy": "interpretable", "laterality_sensitive": True, "aug": {"lr_flip": 0.5}}),
                    registries)


def test_unknown_policy_lists_the_known_ones(registries):
    from medcls.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="known: none, interpretable, aggressive"):
        make_policy(make_config({"policy": "wild"}), registries)


def test_preview_png(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from medcls.cli import cli

    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["augment", "preview", "--policy", "aggressive", "-n", "3", "-k", "4",
                                      "--image-size", "48", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.size == (int(1.6 * 5 * 100), int(1.6 * 3 * 100))  # (views + 1) columns, n rows
    assert "3 images x 4 views" in result.stdout


def test_preview_of_a_volume_shows_the_middle_slice():
    from medcls.reports.plots import middle_slice

    volume = torch.zeros(1, 9, 8, 8)
    volume[:, 4] = 1.0
    assert torch.equal(middle_slice(volume), torch.ones(1, 8, 8))


def test_built_in_policies_augment_whole_batches_repeatably(registries):
    transform = policy(registries, "aggressive", seed=3)
    images = torch.rand(6, 1, 32, 32)
    first = transform.batch(images)
    transform.set_random_state(seed=3)
    assert torch.equal(first, transform.batch(images))
    assert first.shape == images.shape and not torch.equal(first[0], first[1])  # drawn per image


def test_batched_policies_run_in_the_loop_and_per_image_ones_in_a_worker(registries):
    from medcls.data.prepared import prepare_data
    from medcls.core.loader import TrainingImages, loader_workers

    config = make_config({"image_size": 32, "policy": "aggressive"})
    data = prepare_data(config, registries)
    rows = data.rows("train")
    batched, _ = make_policy(config, registries)
    dataset = TrainingImages(data.cache, rows, data.cache_labels(rows), batched)
    assert torch.equal(dataset[0][0], data.cache.batch(rows[:1])[0])  # not augmented here
    assert loader_workers(config, batched) == 0
    per_image = lambda image: 1 - image  # noqa: E731  (a third-party policy without batch())
    assert torch.equal(TrainingImages(data.cache, rows, data.cache_labels(rows), per_image)[0][0], 1 - data.cache.batch(rows[:1])[0])
    assert loader_workers(config, per_image) == 1
    assert loader_workers(make_config({"workers": 3}), per_image) == 3


@pytest.mark.parametrize("dims", [2, 3])
def test_batched_affine_matrices_are_monais_composition_image_by_image(dims):
    """The matrices built for a whole batch at once equal MONAI's rotate @ shear @ translate @ scale,
    built one image at a time from the same draws (the per-image loop they replaced)."""
    import math

    import numpy as np
    from monai.transforms.utils import create_rotate, create_scale, create_shear, create_translate

    from medcls.core.affine_augment import GeometryIntensityPolicy

    params = dict(rotate_deg=30.0, shift=0.1, shear=0.2, zoom=0.2)
    spatial = (20, 24, 28)[-dims:]
    batched = GeometryIntensityPolicy(**params)
    batched.set_random_state(seed=7)
    reference = GeometryIntensityPolicy(**params)
    reference.set_random_state(seed=7)
    matrices = batched.random_affines(6, dims, spatial)
    for matrix in matrices:
        u = lambda bound, n: reference.R.uniform(-bound, bound, n)  # noqa: E731
        angles = [math.radians(a) for a in u(30.0, 1 if dims == 2 else 3)]
        shear = list(u(0.2, 2 if dims == 2 else 6))
        shifts = [f * s for f, s in zip(u(0.1, dims), spatial)]
        scale = [1.0 + float(u(0.2, 1)[0])] * dims
        expected = (create_rotate(dims, angles) @ create_shear(dims, shear) @ create_translate(dims, shifts)
                    @ create_scale(dims, scale))
        np.testing.assert_allclose(matrix, expected, atol=1e-12)


@pytest.mark.parametrize("name", ["interpretable", "aggressive"])
def test_a_batched_policy_leaves_the_callers_batch_as_it_was(registries, name):
    images = torch.rand(4, 1, 32, 32)
    given = images.clone()
    out = policy(registries, name).batch(images)
    assert torch.equal(images, given) and not torch.equal(out, given)


@pytest.mark.slow
def test_scoring_and_unaugmented_training_start_without_monai():
    """MONAI takes seconds to import; only the geometry policy (and 3D backbones, Grad-CAM) need it."""
    import subprocess
    import sys

    code = ("import sys, medcls.api, medcls.workflows.train, medcls.workflows.score, medcls.workflows.evaluate\n"
            "from medcls.core.augment import make_policy\nfrom medcls.config import make_config\n"
            "from medcls.plugins.manager import get_plugin_manager\nfrom medcls.plugins.registry import Registries\n"
            "make_policy(make_config({'policy': 'none'}), Registries(get_plugin_manager()))\n"
            "print('monai' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["interpretable", "aggressive"])
def test_a_policy_augments_a_gpu_batch_on_the_gpu_without_stopping_the_host(registries, name):
    """Everything per pixel on the GPU, and no synchronisation: the host queues the next step while
    the GPU works (PyTorch's sync debug mode raises on any blocking call)."""
    transform = policy(registries, name)
    images = torch.rand(8, 3, 64, 64, device="cuda")
    transform.batch(images)  # first use: lazy CUDA initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = transform.batch(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device.type == "cuda" and out.shape == images.shape
