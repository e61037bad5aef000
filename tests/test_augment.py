"""Augmentation: image and mask move together, presets and options, points follow the affine."""

import numpy as np
import pytest
import torch

from medtool.augment import AugmentConfig, Augmenter, make_config, map_points
from medtool.errors import UsageError


def _blob_batch(dim: int, batch: int = 3):
    shape = (10, 20, 20) if dim == 3 else (24, 24)
    mask = torch.zeros(batch, *shape, dtype=torch.long)
    for b in range(batch):
        index = (b,) + tuple(slice(n // 4 + b, n // 2 + b + 2) for n in shape)
        mask[index] = 1 + b % 2
    image = mask[:, None].float() * 10
    return image, mask


def test_none_is_identity():
    image, mask = _blob_batch(3)
    out, out_mask = Augmenter(make_config("none"))(image, mask)
    assert torch.equal(out, image) and torch.equal(out_mask, mask)


@pytest.mark.parametrize("dim", [2, 3])
def test_flips_are_exact_and_shared(dim):
    image, mask = _blob_batch(dim)
    augmenter = Augmenter(AugmentConfig(flip=1.0))
    out, out_mask = augmenter(image, mask)
    axes = tuple(range(1, dim + 1))
    assert torch.equal(out_mask, mask.flip(axes))
    assert torch.allclose(out, image.flip(tuple(a + 1 for a in axes)), atol=1e-4)


def test_rotation_by_90_degrees_is_rot90():
    image, mask = _blob_batch(2, batch=1)
    augmenter = Augmenter(AugmentConfig(rotate=90.0, p_rotate=1.0))
    augmenter.sample_affine = lambda batch, dim: torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=torch.float64)
    out, out_mask = augmenter(image, mask)
    # output offset v -> input offset A v: out[i, j] = in[-j, i] about the centre
    expected = torch.rot90(mask, 1, dims=(1, 2))
    assert torch.equal(out_mask, expected) or torch.equal(out_mask, torch.rot90(mask, -1, dims=(1, 2)))
    assert torch.allclose(out[:, 0], out_mask.float() * 10, atol=1e-4)


@pytest.mark.parametrize("dim", [2, 3])
def test_heavy_moves_image_and_mask_together(dim):
    image, mask = _blob_batch(dim, batch=4)
    config = make_config("heavy", {"p_rotate": 1.0, "p_scale": 1.0, "p_elastic": 1.0, "p_intensity": 0.0,
                                   "p_gamma": 0.0, "p_noise": 0.0, "p_blur": 0.0})
    out, out_mask = Augmenter(config, seed=3)(image, (mask > 0).long())
    assert not torch.equal(out_mask, (mask > 0).long())                 # it did something
    assert set(out_mask.unique().tolist()) <= {0, 1}                    # nearest: no new labels
    agree = ((out[:, 0] > 5) == (out_mask > 0)).float().mean()
    assert agree > 0.97                                                 # same transform
    assert out_mask.sum() > 0


def test_intensity_transforms_touch_the_image_only():
    image, mask = _blob_batch(3)
    config = AugmentConfig(noise=0.5, p_noise=1.0, gamma=(0.5, 0.5), p_gamma=1.0, p_blur=1.0,
                           intensity_scale=(2.0, 2.0), p_intensity=1.0)
    out, out_mask = Augmenter(config)(image, mask)
    assert torch.equal(out_mask, mask)
    assert not torch.allclose(out, image)


def test_blur_keeps_a_constant_image():
    image = torch.full((2, 1, 6, 8, 8), 3.0)
    out, _ = Augmenter(AugmentConfig(p_blur=1.0, blur=(1.0, 2.0)))(image)
    assert torch.allclose(out, image, atol=1e-5)


def test_points_follow_the_affine():
    shape = (32, 32)
    mask = torch.zeros(1, *shape, dtype=torch.long)
    mask[0, 8:11, 20:23] = 1          # centre (9, 21)
    augmenter = Augmenter(AugmentConfig(rotate=40, p_rotate=1.0, scale=(1.2, 1.2), p_scale=1.0, flip=0.5), seed=5)
    matrix = augmenter.sample_affine(1, 2)
    augmenter.sample_affine = lambda batch, dim: matrix
    _, out = augmenter(mask[:, None].float(), mask)
    where = torch.nonzero(out[0]).double().mean(0)
    predicted = map_points(torch.tensor([[9.0, 21.0]]), matrix[0], shape)[0]
    assert torch.allclose(where, predicted, atol=0.75)


def test_options_override_presets():
    config = make_config("light", ["rotate=30", "scale=0.8,1.3", "p-elastic=0.5"])
    assert config.rotate == 30 and config.scale == (0.8, 1.3) and config.p_elastic == 0.5
    with pytest.raises(UsageError, match="KEY=VALUE"):
        make_config("light", ["wobble=1"])
    with pytest.raises(UsageError, match="two numbers"):
        make_config("light", ["scale=2"])
    with pytest.raises(UsageError, match="choose one of"):
        make_config("extreme")


def test_same_seed_same_result():
    image, mask = _blob_batch(3)
    first = Augmenter(make_config("heavy"), seed=1)(image, mask)
    torch.manual_seed(0)
    second = Augmenter(make_config("heavy"), seed=1)(image, mask)
    assert torch.equal(first[1], second[1])
    assert np.isfinite(first[0].numpy()).all()


# -- boxes (detection) ------------------------------------------------------------------------------
def _box_mask(shape, box):
    """A mask of the pixels inside ``box`` (x0 y0 x1 y1, whole-pixel edges)."""
    mask = torch.zeros(shape)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[y0:y1, x0:x1] = 1
    return mask


def _bbox(mask):
    """x0 y0 x1 y1 (pixel edges) of the nonzero pixels of a 2D array: an independent reference."""
    rows, cols = np.nonzero(np.asarray(mask) > 0.5)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_horizontal_flip_moves_boxes_exactly():
    from medtool.augment import map_boxes

    shape = (40, 60)
    boxes = torch.tensor([[[5.0, 7.0, 21.0, 30.0], [float("nan")] * 4]])
    image = _box_mask(shape, boxes[0, 0])[None, None]
    out, moved = Augmenter(AugmentConfig(hflip=1.0)).with_boxes(image, boxes)
    assert torch.allclose(out[0, 0], image[0, 0].flip(1), atol=1e-4)      # only x is mirrored
    assert moved[0, 0].tolist() == [60 - 21.0, 7.0, 60 - 5.0, 30.0]
    assert moved[0, 0].tolist() == _bbox(out[0, 0])
    assert torch.isnan(moved[0, 1]).all()                                 # padding stays padding
    both = map_boxes(boxes, torch.diag(torch.tensor([-1.0, -1.0], dtype=torch.float64))[None], shape)
    assert both[0, 0].tolist() == [60 - 21.0, 40 - 30.0, 60 - 5.0, 40 - 7.0]


@pytest.mark.parametrize("quarter", [1, 2, 3])
def test_right_angle_rotations_move_boxes_exactly(quarter):
    import math

    from medtool.augment import _rotation

    shape = (48, 48)
    box = [6.0, 10.0, 19.0, 34.0]
    image = _box_mask(shape, box)[None, None]
    matrix = _rotation(0, 1, torch.tensor([quarter * math.pi / 2], dtype=torch.float64), 2).round()
    augmenter = Augmenter(AugmentConfig(rotate=90.0, p_rotate=1.0))
    augmenter.sample_affine = lambda batch, dim: matrix
    out, moved = augmenter.with_boxes(image, torch.tensor([[box]]))
    # numpy's rot90 (one of its two directions) is the reference for the image and the box
    candidates = [np.rot90(image[0, 0].numpy(), k) for k in (quarter, -quarter)]
    reference = next(c for c in candidates if np.allclose(out[0, 0].numpy(), c, atol=1e-4))
    assert moved[0, 0].tolist() == pytest.approx(_bbox(reference), abs=1e-9)


def test_boxes_follow_the_image_through_rotation_shear_scale_and_shift():
    from medtool.augment import box_edge_points

    shape = (96, 96)
    box = torch.tensor([[[28.0, 20.0, 68.0, 76.0]]])
    # one small bright spot on each of the 8 edge points; where the warp puts them is the
    # independent reference for the mapped box
    points = box_edge_points(box)[0, 0]                                   # (8, 2) x, y
    yy, xx = torch.meshgrid(torch.arange(96.0) + 0.5, torch.arange(96.0) + 0.5, indexing="ij")
    spots = torch.stack([torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2 ** 2)) for x, y in points])
    config = AugmentConfig(rotate=6.0, p_rotate=1.0, shear=0.05, scale=(1.1, 1.1), p_scale=1.0,
                           shift=0.05, p_shift=1.0, hflip=0.5)
    augmenter = Augmenter(config, seed=11)
    matrix, shift = augmenter.sample_affine(1, 2), augmenter.sample_shift(1, shape)
    assert shift.abs().max() > 0.5 and not torch.allclose(matrix, torch.eye(2, dtype=torch.float64))
    augmenter.sample_affine = lambda batch, dim: matrix.expand(batch, 2, 2)
    augmenter.sample_shift = lambda batch, size: shift.expand(batch, 2)
    warped, _ = augmenter.with_boxes(spots[:, None], box.expand(8, 1, 4).clone())
    _, moved = augmenter.with_boxes(spots[:1, None], box.clone())
    weights = warped[:, 0].clamp_min(0)
    centres = torch.stack([(weights * xx).sum((1, 2)) / weights.sum((1, 2)),
                           (weights * yy).sum((1, 2)) / weights.sum((1, 2))], dim=1)   # (8, 2)
    found = moved[0, 0]
    assert (centres.min(0).values >= found[:2] - 0.1).all() and (centres.max(0).values <= found[2:] + 0.1).all()
    assert torch.allclose(found, torch.cat([centres.min(0).values, centres.max(0).values]).to(found), atol=0.1)
    # tighter than the box of the 4 mapped corners (what the seeds avoided)
    from medtool.augment import map_points

    corners = torch.tensor([[[20.0, 28.0], [20.0, 68.0], [76.0, 28.0], [76.0, 68.0]]]) - 0.5   # y, x
    mapped = map_points(corners, matrix, shape, shift)[0].flip(-1) + 0.5
    assert (found[2:] - found[:2] < mapped.max(0).values - mapped.min(0).values - 0.3).all()


def test_boxes_leaving_the_image_are_clipped_or_dropped():
    from medtool.augment import map_boxes

    shape = (50, 50)
    boxes = torch.tensor([[[2.0, 10.0, 12.0, 20.0], [30.0, 30.0, 48.0, 40.0]]])
    shift = torch.tensor([[0.0, -8.0]], dtype=torch.float64)             # the image content moves right by 8
    moved = map_boxes(boxes, torch.eye(2, dtype=torch.float64)[None], shape, shift)
    assert moved[0, 0].tolist() == [10.0, 10.0, 20.0, 20.0]
    assert moved[0, 1].tolist() == [38.0, 30.0, 50.0, 40.0]              # clipped at the edge
    gone = map_boxes(boxes, torch.eye(2, dtype=torch.float64)[None], shape,
                     torch.tensor([[0.0, -46.0]], dtype=torch.float64))
    assert torch.isnan(gone).all()               # 2 of 10 columns (first box) or none left inside


def test_simulated_low_resolution_samples_down_nearest_and_back_up_linearly():
    from medtool.augment import _low_resolution

    ramp = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1, 1).expand(1, 1, 8, 3, 3).contiguous()
    out = _low_resolution(ramp, [0.5, 1.0, 1.0])                 # thick slices: every other one kept
    kept = np.array([1.0, 3.0, 5.0, 7.0])                        # nearest-exact picks the centre slices
    expected = np.interp(np.arange(8) / 2 - 0.25, np.arange(4), kept)   # linear, edges held
    np.testing.assert_allclose(out[0, 0, :, 1, 1].numpy(), expected, atol=1e-6)
    assert torch.equal(out[..., 0, 0], out[..., 2, 2])          # in-plane untouched
    assert torch.equal(_low_resolution(ramp, [1.0, 1.0, 1.0]), ramp)


def test_low_resolution_touches_only_the_image():
    image, mask = torch.rand(2, 1, 8, 16, 16), (torch.rand(2, 8, 16, 16) > 0.5).long()
    out, out_mask = Augmenter(make_config("none", ["p_lowres=1", "lowres=0.5,0.5"]), seed=0)(image, mask)
    assert torch.equal(out_mask, mask) and out.shape == image.shape
    assert not torch.allclose(out, image)
    # a constant image has nothing to lose
    flat, _ = Augmenter(make_config("none", ["p_lowres=1"]), seed=0)(torch.full((1, 1, 8, 8, 8), 0.3), None)
    assert torch.allclose(flat, torch.full_like(flat, 0.3))
