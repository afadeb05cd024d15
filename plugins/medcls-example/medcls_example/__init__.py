"""A medcls plugin in about 20 lines: copy this folder, rename it, change the two hooks."""

import medcls


def tiny_cnn(in_chans: int):
    from torch import nn

    model = nn.Sequential(nn.Conv2d(in_chans, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model.num_features = 32
    return model


def youden_index(y_true, probs, y_pred):
    """Sensitivity + specificity - 1 at the operating point (binary tasks)."""
    positive, negative = y_true == 1, y_true == 0
    if not positive.any() or not negative.any():
        return float("nan")
    return float((y_pred[positive] == 1).mean() + (y_pred[negative] == 0).mean() - 1)


@medcls.hookimpl
def medcls_register_backbones(register):
    register("example_tiny_cnn", tiny_cnn, description="Two-layer CNN: the plugin template's backbone")


@medcls.hookimpl
def medcls_register_metrics(register):
    register("youden_index", youden_index, description="Sensitivity + specificity - 1", needs_threshold=True)
