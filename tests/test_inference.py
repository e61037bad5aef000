"""Sliding-window inference: exactness, streaming, weighting, TTA, labels and components."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from medtool import inference
from medtool.inference import (_run, argmax_channels, importance_map, keep_largest,
                               labels_from_logits, sliding_window, window_starts)
from medtool.models.unet import UNet


@pytest.fixture
def unet3d():
    torch.manual_seed(0)
    return UNet(dim=3, in_channels=1, out_channels=3, width=4, depth=3).eval()


def test_window_starts_cover_evenly():
    assert window_starts(10, 10, 0.5) == [0]
    assert window_starts(8, 10, 0.5) == [0]
    starts = window_starts(100, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 68
    assert max(np.diff(starts)) <= 16


def test_importance_map_is_a_centred_gaussian():
    weights = importance_map((5, 7))
    assert weights.max() == 1 and weights[2, 3] == 1
    assert torch.allclose(weights, weights.flip(0)) and torch.allclose(weights, weights.flip(1))
    sigma = 7 * 0.125
    assert float(weights[2, 0]) == pytest.approx(np.exp(-0.5 * (3 / sigma) ** 2), rel=1e-5)
    assert float(importance_map((64,))[0]) == pytest.approx(1e-3)       # floor far from the centre
    assert torch.equal(importance_map((3, 3), "constant"), torch.ones(3, 3))


def test_one_window_covering_the_image_is_whole_image_inference(unet3d):
    image = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        whole = unet3d(image[None])[0]
    logits = sliding_window(unet3d, image.numpy(), patch=(8, 16, 16), out_channels=3)
    assert torch.allclose(logits, whole, atol=1e-5, rtol=0)
    assert torch.equal(labels_from_logits(logits), labels_from_logits(whole))


def test_padding_when_the_image_is_smaller_than_the_window(unet3d):
    image = torch.randn(1, 5, 13, 11)
    padded = torch.zeros(1, 8, 16, 16)
    padded[:, :5, :13, :11] = image
    with torch.no_grad():
        whole = unet3d(padded[None])[0, :, :5, :13, :11]
    logits = sliding_window(unet3d, image.numpy(), patch=(8, 16, 16), out_channels=3)
    assert logits.shape == (3, 5, 13, 11)
    assert torch.allclose(logits, whole, atol=1e-5, rtol=0)


def test_a_lone_small_window_on_a_cpu_runs_beside_a_copy(unet3d, monkeypatch):
    x = torch.randn(1, 1, 8, 16, 16)
    seen = []
    hook = unet3d.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        out = _run(unet3d, x, [()], torch.device("cpu"), None)
        # width 4 x 8 x 16 = 512 is under ATen's limit; a larger first level runs alone
        monkeypatch.setattr(inference, "MKLDNN_MIN_SINGLE", 4 * 8 * 16 - 1)
        alone = _run(unet3d, x, [()], torch.device("cpu"), None)
    finally:
        hook.remove()
    assert seen == [2, 1]
    with torch.no_grad():
        assert out.shape == (1, 3, 8, 16, 16) and torch.allclose(out, unet3d(x), atol=1e-5)
    assert torch.allclose(out, alone, atol=1e-5)


def _pointwise():
    """A 1x1x1 convolution: its output does not depend on the window, so every tiling must
    give exactly the whole-image result."""
    torch.manual_seed(1)
    return torch.nn.Conv3d(1, 2, 1).eval()


@pytest.mark.parametrize("blend,overlap,batch", [("gaussian", 0.5, 3), ("constant", 0.25, 1), ("gaussian", 0.0, 8)])
def test_many_windows_and_streaming_match_whole_image(blend, overlap, batch):
    model = _pointwise()
    image = np.random.default_rng(0).normal(size=(1, 23, 19, 17)).astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(image)[None])[0]
    logits = sliding_window(model, image, patch=(6, 8, 8), out_channels=2, overlap=overlap, blend=blend,
                            batch_size=batch)
    assert torch.allclose(logits, whole, atol=1e-5)
    slabs = []
    sliding_window(model, image, patch=(6, 8, 8), out_channels=2, overlap=overlap, blend=blend,
                   batch_size=batch, on_slab=lambda z0, s: slabs.append((z0, s.clone())))
    assert len(slabs) > 1                                  # it streamed
    assert [z0 for z0, _ in slabs] == list(np.cumsum([0] + [s.shape[1] for _, s in slabs[:-1]]))
    assert torch.allclose(torch.cat([s for _, s in slabs], 1), whole, atol=1e-5)


def test_two_d_model_runs_over_slices():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    image = np.random.default_rng(1).normal(size=(1, 7, 12, 12)).astype(np.float32)
    with torch.no_grad():
        whole = model(torch.from_numpy(image)[0][:, None]).permute(1, 0, 2, 3)
    logits = sliding_window(model, image, patch=(12, 12), out_channels=2, batch_size=3)
    assert torch.allclose(logits, whole, atol=1e-5)


def test_flip_tta_of_a_symmetric_model_changes_nothing_and_averages_otherwise():
    model = _pointwise()
    image = np.random.default_rng(2).normal(size=(1, 6, 8, 8)).astype(np.float32)
    plain = sliding_window(model, image, patch=(6, 8, 8), out_channels=2)
    assert torch.allclose(sliding_window(model, image, patch=(6, 8, 8), out_channels=2, tta=True), plain, atol=1e-5)
    # a model that looks at its left neighbour: TTA averages it with the right neighbour
    shift = lambda x: torch.roll(x, 1, dims=-1)  # noqa: E731
    tta = sliding_window(shift, image, patch=(6, 8, 8), out_channels=1, tta=True)
    flips = []
    for axes in [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]:
        x = torch.from_numpy(image)[None]
        y = shift(x.flip(axes) if axes else x)
        flips.append(y.flip(axes) if axes else y)
    assert torch.allclose(tta, torch.stack(flips).mean(0)[0], atol=1e-5)


def test_labels_from_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.9, 3.0]])[:, :, None]  # (C=3, 3 voxels, 1)
    assert labels_from_logits(logits)[:, 0].tolist() == [0, 1, 2]
    # voxel 0 has 1 - p(background) = 2 / (e^2 + 2) = 0.213: foreground at 0.2, not at 0.25
    assert labels_from_logits(logits, threshold=0.2)[:, 0].tolist() == [1, 1, 2]
    assert labels_from_logits(logits, threshold=0.25)[:, 0].tolist() == [0, 1, 2]
    sigmoid = torch.tensor([[-1.0, 0.0, 0.5]])[..., None]
    assert labels_from_logits(sigmoid)[:, 0].tolist() == [0, 1, 1]
    assert labels_from_logits(sigmoid, threshold=0.7)[:, 0].tolist() == [0, 0, 0]


def test_keep_largest_against_scipy():
    rng = np.random.default_rng(3)
    labels = (rng.random((12, 14, 15)) > 0.8).astype(np.uint8) * rng.integers(1, 3, (12, 14, 15)).astype(np.uint8)
    kept = keep_largest(labels, 2)
    for value in (1, 2):
        components, count = ndimage.label(labels == value)
        sizes = np.bincount(components.ravel())[1:]
        top = np.sort(sizes)[::-1][:2]
        remaining, remaining_count = ndimage.label(kept == value)
        assert sorted(np.bincount(remaining.ravel())[1:].tolist(), reverse=True) == top.tolist()
    assert np.array_equal(keep_largest(labels, 0), labels)
    assert set(np.unique(kept)) <= {0, 1, 2}


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="CPU without native bfloat16")
def test_bf16_autocast_on_a_cpu_stays_close_to_float32(unet3d):
    image = torch.randn(1, 12, 20, 20)
    exact = sliding_window(unet3d, image.numpy(), patch=(8, 16, 16), out_channels=3)
    fast = sliding_window(unet3d, image.numpy(), patch=(8, 16, 16), out_channels=3, amp_dtype=torch.bfloat16)
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)       # autocast really ran
    assert (fast - exact).abs().max() < 0.05 * exact.abs().max()


def test_argmax_channels_is_torch_argmax_with_first_wins_on_ties():
    values = torch.randn(4, 3, 5, 6)
    values[2, 0] = values[1, 0]                       # ties: the first class wins, as argmax
    values[:, 1, 1, 1] = 0.0
    assert torch.equal(argmax_channels(values), values.argmax(0).to(torch.uint8))
    assert argmax_channels(values)[1, 1, 1] == 0
