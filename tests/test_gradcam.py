"""Grad-CAM: equal to pytorch-grad-cam on the same layer and target (2D and 3D), guided
backprop equal to its GuidedBackpropReLUModel, layer choice, maps on the input's own
(anisotropic, oblique) grid, and the weight-randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from medtool import models
from medtool.errors import UsageError
from medtool.gradcam import (Explainer, auto_layer, classifier_target, compute_cam, normalise,
                             parse_class, trace_layers)
from medtool.volume import Volume
from tests.conftest import rotation
from tests.segdata import ball_case

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")

#: Tolerance of the comparisons with pytorch-grad-cam (the issue's bar).
TOLERANCE = 1e-4


def small_net(dim: int, activation=nn.ReLU) -> nn.Sequential:
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    pool = nn.MaxPool3d if dim == 3 else nn.MaxPool2d
    gap = nn.AdaptiveAvgPool3d if dim == 3 else nn.AdaptiveAvgPool2d
    torch.manual_seed(dim)
    return nn.Sequential(conv(1, 4, 3, padding=1), activation(), pool(2), conv(4, 6, 3, padding=1), activation(),
                         gap(1), nn.Flatten(), nn.Linear(6, 3)).eval()


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-item min-max, as pytorch-grad-cam's scale_cam_image without its 1e-7 guard (which
    is not scale-free: raw maps of tiny models peak near 1e-4)."""
    axes = tuple(range(1, maps.ndim))
    maps = maps - maps.min(axis=axes, keepdims=True)
    return maps / maps.max(axis=axes, keepdims=True)


def peer_cam(cam_class, model, x, classes):
    """pytorch-grad-cam's full-size maps and its map at the layer's resolution (its ReLU,
    :func:`minmax`)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model[3]
    with cam_class(model=model, target_layers=[layer]) as cam:
        full = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
        store = cam.activations_and_grads
        feature = cam.get_cam_image(x, layer, None, store.activations[0].numpy(), store.gradients[0].numpy())
    return full, minmax(np.maximum(feature, 0))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_2d_equals_pytorch_grad_cam(method):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    model = small_net(2)
    x = torch.randn(2, 1, 20, 24, generator=torch.Generator().manual_seed(1))
    classes = [2, 0]                     # a different target per batch item
    ours = compute_cam(model, x, "3", classifier_target(classes), method=method)
    full, feature = peer_cam(GradCAM if method == "gradcam" else GradCAMPlusPlus, model, x, classes)
    assert ours.maps.shape == (2, 20, 24)
    # full size: both bilinear with half-pixel centres (cv2.resize / align_corners=False)
    assert np.abs(minmax(ours.maps.numpy()) - minmax(full)).max() < TOLERANCE
    assert np.abs(minmax(ours.feature.numpy()) - feature).max() < TOLERANCE
    assert ours.maps.numpy().max() > 0


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_3d_equals_pytorch_grad_cam(method):
    """pytorch-grad-cam 1.5 takes 5D activations; it resizes 3D maps with a cubic spline
    (scipy zoom, corner-aligned), so its full-size map is not trilinear: the layer-resolution
    maps are compared, and our trilinear upsampling against scipy's linear zoom with
    half-voxel centres (grid_mode) of the peer's map."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    model = small_net(3)
    x = torch.randn(1, 1, 12, 16, 10, generator=torch.Generator().manual_seed(2))
    ours = compute_cam(model, x, "3", classifier_target([1]), method=method)
    full, feature = peer_cam(GradCAM if method == "gradcam" else GradCAMPlusPlus, model, x, [1])
    assert full.shape == ours.maps.shape == (1, 12, 16, 10)
    assert np.abs(minmax(ours.feature.numpy()) - feature).max() < TOLERANCE
    zoomed = ndimage.zoom(feature[0], [t / s for s, t in zip(feature.shape[1:], x.shape[2:])], order=1,
                          grid_mode=True, mode="nearest")
    assert np.abs(minmax(ours.maps.numpy()) - minmax(zoomed[None])).max() < TOLERANCE


def test_guided_backprop_equals_pytorch_grad_cam():
    from pytorch_grad_cam import GuidedBackpropReLUModel

    from medtool.gradcam import _guided_backprop

    model = small_net(2)
    x = torch.randn(1, 1, 12, 14, generator=torch.Generator().manual_seed(3))
    ours = _guided_backprop(model, x, classifier_target([1]))[0, 0].numpy()
    theirs = GuidedBackpropReLUModel(model, device="cpu")(x, target_category=1)[..., 0]
    assert np.abs(ours - theirs).max() <= 1e-6 * max(1.0, float(np.abs(theirs).max()))
    assert np.any(ours != 0)
    # guided Grad-CAM is the product with the upsampled Grad-CAM
    guided = compute_cam(model, x, "3", classifier_target([1]), method="guided").maps[0].numpy()
    plain = compute_cam(model, x, "3", classifier_target([1])).maps[0].numpy()
    np.testing.assert_allclose(guided, plain * ours, rtol=1e-5, atol=1e-12)


def test_auto_layer_keeps_spatial_size_and_skips_the_output_head():
    # the last convolution's output is 1 x 1 here: auto takes the one before
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(4, 4, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(4), nn.Conv2d(4, 2, 1), nn.Flatten()).eval()
    x = torch.zeros(1, 1, 16, 16)
    layers = trace_layers(model, x)
    assert [(layer.name, layer.shape) for layer in layers][:4] == [
        ("0", (4, 16, 16)), ("1", (4, 16, 16)), ("2", (4, 4, 4)), ("3", (4, 4, 4))]
    assert auto_layer(model, layers) == "3"
    # a U-Net: not the head that makes the logits, the last decoder convolution
    unet = models.build("unet", {"dim": 2, "in_channels": 1, "out_channels": 2, "width": 4, "depth": 3})
    layers = trace_layers(unet.eval(), torch.zeros(1, 1, 16, 16))
    assert layers[-1].name == "heads.0" and layers[-1].produces_output
    assert auto_layer(unet, layers) == "decoder.1.conv2"
    # a model naming its own layer is taken at its word
    model.cam_layer = "0"
    assert auto_layer(model, trace_layers(model, x)) == "0"
    flat = nn.Sequential(nn.Conv2d(1, 2, 4), nn.Flatten()).eval()
    with pytest.raises(UsageError, match="--layer"):
        auto_layer(flat, trace_layers(flat, torch.zeros(1, 1, 4, 4)))


def test_parse_class_and_normalise():
    classes = ["background", "lung", "tumour"]
    assert parse_class("pred", classes) == "pred"
    assert parse_class("2", classes) == 2 and parse_class("tumour", classes) == 2
    for bad in ("3", "-1", "liver"):
        with pytest.raises(UsageError):
            parse_class(bad, classes)
    np.testing.assert_allclose(normalise(np.array([1.0, 2.0, 5.0])), [0.0, 0.25, 1.0])
    np.testing.assert_allclose(normalise(np.array([-4.0, 0.0, 2.0])), [1.0, 0.0, 0.5])  # signed: magnitude
    assert not normalise(np.full(3, 7.0)).any()


# -- checkpoints on volumes -----------------------------------------------------------------------
def segment_checkpoint(dim: int, *, seed: int = 0, spacing=(3.0, 1.2, 1.2)) -> dict:
    """A medtool segment checkpoint (untrained U-Net) built in memory; class 1 favoured so
    that its predicted region is not empty. Its spacing is coarser than the test volume's
    along every axis (mapping back only upsamples: no anti-aliasing)."""
    torch.manual_seed(seed)
    config = {"dim": dim, "in_channels": 1, "out_channels": 2, "width": 4, "depth": 3, "norm": "instance",
              "strides": [[2] * dim] * 2}
    model = models.build("unet", config)
    with torch.no_grad():
        model.heads[-1].bias.copy_(torch.tensor([0.0, 0.3]))
    recipe = {"dim": dim, "spacing": list(spacing) if dim == 3 else [None, *spacing[1:]],
              "patch": [8, 16, 16] if dim == 3 else [1, 16, 16],
              "normalize": {"mode": "ct", "window": [-1000.0, 400.0]},
              "classes": ["background", "ball"], "activation": "softmax"}
    return {"format": "medtool-checkpoint", "format_version": 1, "task": "segment",
            "model": {"name": "unet", "config": config}, "recipe": recipe, "state_dict": model.state_dict()}


@pytest.fixture
def oblique_ball() -> Volume:
    direction = rotation("x", 17.0) @ rotation("z", -31.0) @ np.array(
        [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    image, _ = ball_case(0, shape=(10, 20, 18), spacing=(2.5, 0.9, 0.7), direction=direction,
                         origin=(-12.5, 40.0, 310.0))
    return image


@pytest.mark.parametrize("dim", [3, 2])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "guided"])
def test_map_on_the_inputs_anisotropic_oblique_grid(oblique_ball, dim, method):
    from medtool.segmentation import prepare_image

    explainer = Explainer(segment_checkpoint(dim), method=method, target="ball")
    found = explainer.explain(oblique_ball)
    assert found.map.shape == oblique_ball.shape
    assert found.map.same_grid(oblique_ball)
    assert found.map.array.dtype == np.float32 and found.map.units == "attention"
    assert found.class_name == "ball" and found.layer == "decoder.1.conv2"
    if method != "guided":
        assert found.map.array.min() >= 0 and found.map.array.max() > 0
    if method == "gradcam":
        # the map is the model-space map resampled onto the input grid: SimpleITK agrees
        sitk = pytest.importorskip("SimpleITK")
        prepared = prepare_image(oblique_ball, explainer.recipe)
        cam = compute_cam(explainer.model, explainer.inputs(prepared.array[None]), found.layer,
                          _region_of(explainer, prepared), method=method)
        model_map = cam.maps.numpy()
        model_map = (model_map[0] if dim == 3 else model_map)[tuple(slice(0, n) for n in prepared.shape)]
        expected = _sitk_onto(sitk, prepared.with_array(model_map), oblique_ball)
        inside = np.isfinite(expected)
        assert inside.mean() > 0.5
        scale = float(model_map.max())
        assert np.abs(found.map.array[inside] - expected[inside]).max() < 1e-4 * scale


def _sitk_onto(sitk, volume: Volume, like: Volume) -> np.ndarray:
    """``volume`` resampled linearly onto ``like``'s grid by SimpleITK (NaN outside)."""
    def image_of(v: Volume):
        image = sitk.GetImageFromArray(np.asarray(v.array, dtype=np.float64))
        image.SetSpacing(tuple(float(s) for s in v.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in v.origin))
        image.SetDirection(tuple(np.asarray(v.direction)[:, ::-1].ravel()))
        return image

    target = image_of(like)
    return sitk.GetArrayFromImage(sitk.Resample(image_of(volume), target, sitk.Transform(), sitk.sitkLinear,
                                                float("nan"), sitk.sitkFloat64))


def _region_of(explainer, prepared):
    from medtool.gradcam import region_target

    inputs = explainer.inputs(prepared.array[None])
    with torch.no_grad():
        logits = explainer.model(inputs)
    spatial = prepared.shape if explainer.dim == 3 else prepared.shape[1:]
    crop = (slice(None), *[slice(0, n) for n in spatial])
    return region_target(1, (logits.argmax(1) == 1)[crop].float())


def test_two_d_image_keeps_its_own_geometry():
    image, _ = ball_case(3, shape=(1, 24, 20), spacing=(1.0, 0.8, 1.1), origin=(5.0, -3.0, 7.0))
    flat = Volume(image.array[0], (0.8, 1.1), image.origin, image.direction, dict(image.meta))
    found = Explainer(segment_checkpoint(2), target="1").explain(flat)
    assert found.map.shape == flat.shape and found.map.same_grid(flat)


def test_map_changes_when_the_weights_are_randomised(oblique_ball):
    """Adebayo et al. 2018: a saliency map that survives re-initialising the model's weights
    does not explain the model."""
    explained = Explainer(segment_checkpoint(3, seed=0), target="ball").explain(oblique_ball).map.array
    randomised = Explainer(segment_checkpoint(3, seed=1), target="ball").explain(oblique_ball).map.array
    a, b = normalise(explained).ravel(), normalise(randomised).ravel()
    assert np.abs(a - b).max() > 0.2
    assert np.corrcoef(a, b)[0, 1] < 0.9


def test_bad_options_fail_early():
    checkpoint = segment_checkpoint(2)
    with pytest.raises(UsageError, match="--layer"):
        Explainer(checkpoint, layer="encoder.9")
    with pytest.raises(UsageError, match="--method"):
        Explainer(checkpoint, method="scorecam")
    with pytest.raises(UsageError, match="--class"):
        Explainer(checkpoint, target="7")


def classify_checkpoint(dim: int, model: str = "simple3d") -> dict:
    """A medtool classify checkpoint (untrained) built in memory: input 8 x 16 x 16 (1 x 16 x 16
    in 2D) at 3 x 1.2 x 1.2 mm, centre-cropped from the resampled volume."""
    from medtool.models.cnn import LEVELS, plan_pooling

    torch.manual_seed(0)
    shape = [8, 16, 16] if dim == 3 else [1, 16, 16]
    config = {"dim": dim, "in_channels": 1, "num_classes": 2, "width": 4,
              "strides": plan_pooling(shape if dim == 3 else shape[1:], LEVELS[model])}
    network = models.build(model, config)
    recipe = {"dim": dim, "spacing": [3.0, 1.2, 1.2] if dim == 3 else [None, 1.2, 1.2], "shape": shape,
              "normalize": {"mode": "ct", "window": [-1000.0, 400.0]}, "classes": ["small", "large"]}
    return {"format": "medtool-checkpoint", "format_version": 1, "task": "classify",
            "model": {"name": model, "config": config}, "recipe": recipe, "state_dict": network.state_dict()}


@pytest.mark.parametrize("model", ["simple3d", "resnet3d-10"])
def test_classifier_maps_on_the_inputs_grid(oblique_ball, model):
    """The input is larger than the model's crop: the map is zero outside what the model saw,
    and the layer is the one the model declares."""
    explainer = Explainer(classify_checkpoint(3, model), target="large")
    found = explainer.explain(oblique_ball)
    assert found.map.same_grid(oblique_ball) and found.class_name == "large"
    assert found.layer == explainer.model.cam_layer
    assert found.map.array.max() > 0 and found.map.array.min() == 0.0
    predicted = Explainer(classify_checkpoint(3, model)).explain(oblique_ball)
    assert predicted.class_name in ("small", "large")


def test_two_d_classifier():
    image, _ = ball_case(4, shape=(1, 30, 26), spacing=(1.0, 0.9, 1.0))
    flat = Volume(image.array[0], (0.9, 1.0), image.origin, image.direction, dict(image.meta))
    found = Explainer(classify_checkpoint(2), target=1).explain(flat)
    assert found.map.shape == flat.shape and found.map.same_grid(flat) and found.map.array.max() > 0


def test_inside_outside_by_hand():
    from medtool.gradcam import inside_outside, summarise_ratios

    cam = np.array([[[1.0, 0.5], [0.25, 0.25]]])
    truth = np.array([[[1, 0], [0, 0]]], dtype=np.uint8)
    # inside: 1.0; outside: (0.5 + 0.25 + 0.25) / 3 = 1/3
    assert inside_outside(cam, truth) == pytest.approx(3.0)
    assert inside_outside(cam, 2 * truth) == pytest.approx(3.0)            # any nonzero label
    assert inside_outside(cam, np.zeros_like(truth)) is None               # nothing to point at
    assert inside_outside(cam, np.ones_like(truth)) is None
    assert inside_outside(np.array([[[1.0, 0.0]]]), np.array([[[1, 0]]])) == float("inf")
    assert summarise_ratios([3.0, None, 1.0, 2.0]) == {"cases": 3, "mean": 2.0, "median": 2.0,
                                                       "min": 1.0, "max": 3.0}
    assert summarise_ratios([None]) is None
