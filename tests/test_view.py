"""Pictures: window, outlines, orientation and aspect checked on pixels."""

from __future__ import annotations

import numpy as np
import pytest

from medtool.errors import UsageError
from medtool.view import LABEL_COLOURS, make_overlay, panel, pick_slices, render, window_of
from medtool.volume import AXIAL_DIRECTION, Volume


def _image(**meta):
    array = np.tile(np.linspace(-1000, 0, 11, dtype=np.float32), (4, 6, 1))   # x gradient
    return Volume(array, spacing=(3.0, 1.0, 1.0), meta=meta)


def test_window_maps_values_to_grey():
    image = _image(units="HU")
    rgb, heat, pixel = panel(image, "axial", 1, window=(-1000.0, 0.0))
    assert heat is None and pixel == (1.0, 1.0)
    assert np.array_equal(rgb[0, :, 0], np.rint(np.linspace(0, 255, 11)).astype(np.uint8))
    assert window_of(image, None) == (-1350.0, 150.0)
    assert window_of(image, "bone") == (-500.0, 1300.0)
    with pytest.raises(UsageError):
        window_of(image, (5.0, 5.0))


def test_outline_colour_on_the_mask_border():
    image = _image(units="HU")
    labels = np.zeros(image.shape, np.uint8)
    labels[:, 1:5, 2:6] = 2
    overlay = make_overlay(image, Volume(labels, spacing=image.spacing, meta={"units": "label"}))
    rgb, _, _ = panel(image, "axial", 0, window=(-1000.0, 0.0), overlays=[overlay])
    green = np.all(rgb == LABEL_COLOURS[1], axis=2)
    border = np.zeros((6, 11), bool)
    border[1:5, 2:6] = True
    border[2:4, 3:5] = False
    assert np.array_equal(green, border)


def test_flipped_x_is_drawn_patient_right_on_the_left():
    image = _image()
    flipped = Volume(image.array[..., ::-1].copy(), spacing=image.spacing,
                     direction=AXIAL_DIRECTION @ np.diag([1.0, 1.0, -1.0]))
    a, _, _ = panel(image, "axial", 0, window=(-1000.0, 0.0))
    b, _, _ = panel(flipped, "axial", 0, window=(-1000.0, 0.0))
    assert np.array_equal(a, b)


def test_slices_follow_mask_or_heat_map():
    image = Volume(np.zeros((20, 4, 4), np.int16), meta={"units": "HU"})
    heat = np.zeros((20, 4, 4), np.float32)
    heat[13] = 1.0
    heat[5] = 0.5
    overlay = make_overlay(image, Volume(heat))
    assert overlay.kind == "map"
    assert pick_slices(image, "axial", 2, [overlay]) == [5, 13]
    mask = np.zeros((20, 4, 4), np.uint8)
    mask[10:15] = 1
    assert pick_slices(image, "axial", 3, [make_overlay(image, Volume(mask))]) == [11, 12, 14] or \
        pick_slices(image, "axial", 3, [make_overlay(image, Volume(mask))])[0] >= 10


def test_png_aspect_follows_spacing(tmp_path):
    import matplotlib.image

    # a coronal plane 10 slices x 40 columns at 4 mm x 1 mm: as tall as wide on screen
    image = Volume(np.full((10, 3, 40), 0.5, np.float32), spacing=(4.0, 1.0, 1.0))
    path = render(image, tmp_path / "c.png", plane="coronal", slices=1, window=(0.0, 1.0))
    pixels = matplotlib.image.imread(path)[..., :3]
    grey = np.abs(pixels - 128 / 255).max(axis=2) < 0.02          # the panel, not the text
    height = int((grey.sum(axis=1) > 50).sum())                 # rows and columns of the panel
    width = int((grey.sum(axis=0) > 50).sum())
    assert height > 100
    assert abs(height / width - 1.0) < 0.05


def test_weak_heat_is_see_through_and_strong_heat_opaque():
    from medtool.view import HEAT_ALPHA, heat_rgba

    heat = np.array([[np.nan, 0.2, 0.6, 1.0]])
    rgba = heat_rgba(heat, top=1.0)
    np.testing.assert_allclose(rgba[0, :, 3], [0.0, 0.0, HEAT_ALPHA * 0.5, HEAT_ALPHA])
    assert rgba[0, 3, :3].sum() > rgba[0, 2, :3].sum()          # brighter colour for more attention
