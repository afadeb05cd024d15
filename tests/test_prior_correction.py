"""Class-balanced training moves the model's probabilities towards the rare classes; medcls moves
them back to the training prior (logits minus log weight, folded into the head), so the saved
model's probabilities are calibrated and its most probable class is the accurate choice."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from medcls.cli import cli
from medcls.core.loader import class_weights, positive_weights
from medcls.stats.calibration import balanced_offsets, remove_offsets

FAST = ["--backbone", "test_resnet", "--no-pretrained", "--epochs", "2", "--finetune-epochs", "0",
        "--image-size", "24", "--batch-size", "16", "--set", "patience=0", "--set", "bootstrap=50"]


def test_removing_the_offsets_recovers_the_posterior_a_weighted_loss_distorts():
    rng = np.random.default_rng(0)
    posterior = rng.dirichlet(np.ones(4), size=50)
    labels = np.repeat(np.arange(4), [30, 10, 6, 4])
    weights = class_weights(labels, 4)
    distorted = posterior * weights / (posterior * weights).sum(1, keepdims=True)  # what weighted CE learns
    assert np.allclose(remove_offsets(distorted, balanced_offsets(weights)), posterior)
    # A sigmoid with pos_weight w learns odds w times the true odds.
    p = rng.uniform(0.01, 0.99, size=(50, 3))
    targets = (rng.uniform(size=(200, 3)) < [0.1, 0.3, 0.5]).astype(float)
    w = positive_weights(targets)
    q = w * p / (w * p + 1 - p)
    assert np.allclose(remove_offsets(q, balanced_offsets(w), multi_label=True), p)


def test_a_class_without_training_images_keeps_its_logit():
    assert balanced_offsets(np.array([2.0, 0.0, 0.5])) == pytest.approx([np.log(2.0), 0.0, np.log(0.5)])


def test_shifting_the_head_gives_what_remove_offsets_computes(registries):
    from medcls.core.models import build_classifier

    model, _ = build_classifier(registries, "test_resnet", 3, 1, 0.0, pretrained=False)
    model.eval()
    images = torch.rand(5, 1, 24, 24)
    before = model(images).softmax(1).detach().numpy().astype(np.float64)
    offsets = np.log([0.5, 1.5, 3.0])
    model.shift_logits(offsets)
    after = model(images).softmax(1).detach().numpy()
    assert np.allclose(after, remove_offsets(before, offsets), atol=1e-5)


@pytest.fixture(scope="module")
def imbalanced_npz(tmp_path_factory):
    """Three classes, 60 % / 25 % / 15 % in every split: a bar's position tells the class."""
    folder = tmp_path_factory.mktemp("imbalanced")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 80), ("val", 40), ("test", 40)):
        labels = np.repeat([0, 1, 2], [int(n * 0.6), int(n * 0.25), n - int(n * 0.6) - int(n * 0.25)])
        images = rng.integers(0, 90, (n, 24, 24)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 4 + 6 * label:10 + 6 * label, 4:20] += 60  # a faint bar: the classes overlap
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1)
    np.savez(folder / "bars.npz", **arrays)
    return folder / "bars.npz"


def read_probabilities(run):
    rows = [r for r in csv.DictReader(open(run / "predictions.csv")) if r["split"] == "test"]
    return np.array([[float(r[k]) for k in sorted(r) if k.startswith("p_")] for r in rows])


@pytest.mark.slow
def test_the_saved_model_is_the_balanced_one_moved_to_the_training_prior(imbalanced_npz, tmp_path):
    runs = {}
    for corrected in (True, False):
        runs[corrected] = tmp_path / str(corrected)
        result = CliRunner().invoke(cli, ["train", "--data", str(imbalanced_npz), *FAST, "--set",
                                          f"prior_correction={str(corrected).lower()}", "--out", str(runs[corrected])])
        assert result.exit_code == 0, result.output
    info = json.loads((runs[True] / "model.json").read_text())
    labels = np.load(imbalanced_npz)["train_labels"].ravel()
    expected = balanced_offsets(class_weights(labels, 3))
    assert info["prior_offsets"] == pytest.approx(expected, abs=1e-5)
    assert json.loads((runs[False] / "model.json").read_text())["prior_offsets"] is None
    balanced, corrected = read_probabilities(runs[False]), read_probabilities(runs[True])
    assert np.allclose(corrected, remove_offsets(balanced, expected), atol=2e-3)
    # The correction favours the common class: it is chosen at least as often as before.
    assert (corrected.argmax(1) == 0).sum() >= (balanced.argmax(1) == 0).sum()
    assert not np.allclose(corrected, balanced, atol=1e-3)
