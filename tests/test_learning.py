"""Training must learn: a small model from scratch separates the synthetic phantoms in seconds.
A sign error in the loss, a head that never trains, labels shuffled against images or a broken
optimizer step all fail this test (the rest of the suite checks plumbing, not learning)."""

import pytest

import medcls


@pytest.mark.slow
def test_a_small_model_learns_the_synthetic_set():
    run = medcls.train("synthetic", backbone="test_efficientnet", pretrained=False, image_size=64, epochs=8,
                       finetune_epochs=0, lr=3e-3, batch_size=16, bootstrap=200, figures=False, seed=0)
    test = run.metrics.test
    assert test.roc_auc.value >= 0.9, run.metrics
    assert test.roc_auc.low > 0.7  # a test set large enough for an interval that excludes chance comfortably
    # (an AUC of 1 is bounded by Wilson over the patients of the smaller class: 14 here, two images each)
    losses = [epoch["train_loss"] for epoch in run.history]
    assert losses[-1] < 0.8 * losses[0], losses  # the training loss falls
    assert run.metrics.train.roc_auc.value >= 0.9
