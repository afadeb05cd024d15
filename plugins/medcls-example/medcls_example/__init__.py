"""A medcls plugin in about 20 lines: copy this folder, rename it, change the two hooks."""

import medcls


def tiny_cnn(in_chans: int):
    from torch import nn

    model = nn.Sequential(nn.Conv2d(in_chans, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model.num_features = 32
    return model


def tiny_cnn3d(in_chans: int):
    """The same for volumes (B, C, D, H, W); registered with spatial_dims=3."""
    from torch import nn

    model = nn.Sequential(nn.Conv3d(in_chans, 8, 3, stride=2, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                          nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool3d(1), nn.Flatten())
    model.num_features, model.spatial_dims = 16, 3
    model.mean, model.std = (0.5,) * in_chans, (0.5,) * in_chans
    return model


def youden_index(y_true, probs, y_pred):
    """Sensitivity + specificity - 1 at the operating point (binary tasks)."""
    positive, negative = y_true == 1, y_true == 0
    if not positive.any() or not negative.any():
        return float("nan")
    return float((y_pred[positive] == 1).mean() + (y_pred[negative] == 0).mean() - 1)


@medcls.hookimpl
def medcls_register_backbones(register):
    # pretrained=False: no weights exist for it, so runs train it from scratch without --no-pretrained
    register("example_tiny_cnn", tiny_cnn, description="Two-layer CNN: the plugin template's backbone",
             pretrained=False)
    register("example_tiny_cnn3d", tiny_cnn3d, description="Two-layer 3D CNN for volumes", spatial_dims=3,
             pretrained=False)


@medcls.hookimpl
def medcls_register_metrics(register):
    register("youden_index", youden_index, description="Sensitivity + specificity - 1", needs_threshold=True)
