"""Lung masks: phantom Dice, and hand-made chests for the cases the method must cope with."""

from __future__ import annotations

import numpy as np
import pytest

from medtool.errors import InputError, UsageError
from medtool.lungmask import LEFT_LUNG, RIGHT_LUNG, LungMasker, apply_mask, lung_mask
from medtool.phantom.ct import make_ct
from medtool.volume import AXIAL_DIRECTION, Volume

SPACING = (4.0, 3.0, 3.0)
FLIP_X = AXIAL_DIRECTION @ np.diag([1.0, 1.0, -1.0])     # array x runs to the patient's right


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / (a.sum() + b.sum())


def chest(*, lungs=("right", "left"), bed=True, gap_mm=20.0, trachea=True, flip=False, gas=False,
          tumour=False, medial_tumour=False):
    """A hand-made chest in HU: body ellipse, lung ellipsoids, trachea, bed; and its truth.

    Patient coordinates: x < 0 is the patient's right. ``flip`` stores x reversed in the array
    (direction column of x = -x), so the right lung lies at the *high* array columns. ``gas``
    adds a pocket of pure gas (-1000 HU, 10 mm of tissue under the lungs, about 70 ml in the
    grid) as the stomach and colon under the diaphragm; ``tumour`` a 36 mm ball of tissue on
    the left lung's lateral wall (its part inside the lung is lung in the truth);
    ``medial_tumour`` a 32 mm ball on its mediastinal pleura.
    """
    nz, ny, nx = 40, 64, 72
    z = (np.arange(nz) - nz / 2) * SPACING[0]
    y = (np.arange(ny) - ny / 2) * SPACING[1]
    x = (np.arange(nx) - nx / 2 + 0.5) * SPACING[2]
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    hu = np.full((nz, ny, nx), -1000.0)
    hu[(X / 95) ** 2 + (Y / 65) ** 2 <= 1] = 40.0
    truth = np.zeros(hu.shape, np.uint8)
    half = gap_mm / 2
    for side, value in (("right", RIGHT_LUNG), ("left", LEFT_LUNG)):
        if side not in lungs:
            continue
        sign = -1 if side == "right" else 1
        cx = sign * (half + 30.0)
        inside = ((X - cx) / 30.0) ** 2 + (Y / 45.0) ** 2 + (Z / 60.0) ** 2 <= 1
        inside &= sign * X >= half
        truth[inside] = value
    hu[truth > 0] = -850.0
    if tumour:                                               # centred on the lateral pleura
        ball = ((X - (half + 58.0)) ** 2 + Y ** 2 + Z ** 2 <= 18.0 ** 2) & (truth == LEFT_LUNG)
        hu[ball] = 40.0
    if medial_tumour:                                        # on the mediastinal pleura
        ball = ((X - (half + 6.0)) ** 2 + Y ** 2 + Z ** 2 <= 16.0 ** 2) & (truth == LEFT_LUNG)
        hu[ball] = 40.0
    if gas:
        lowest = Z[truth > 0].min() if truth.any() else 0.0
        pocket = ((X - 25.0) / 45.0) ** 2 + ((Y + 5.0) / 35.0) ** 2 + ((Z - lowest + 30.0) / 20.0) ** 2 <= 1
        hu[pocket & (Z < lowest - 10.0)] = -1000.0
    vessel = (np.abs(Y) < 5) & (np.abs(Z - 10) < 5) & (truth > 0) & (np.abs(np.abs(X) - half - 30) < 5)
    hu[vessel] = 30.0                                        # vessels inside: filled
    if trachea:
        tube = (X ** 2 + (Y + 10) ** 2 <= 9.0 ** 2) & (Z >= 10)
        hu[tube] = -1000.0
        bronchi = (np.abs(Y + 10) <= 6) & (np.abs(Z - 12) <= 5) & (np.abs(X) <= half + 35)
        hu[bronchi & (truth == 0)] = -1000.0
    if bed:
        hu[:, 56:58, 4:-4] = 300.0                           # carbon shell
        hu[:, 58:62, 4:-4] = -950.0                          # foam: air-like, must not count
        hu[:, 62:63, 4:-4] = 300.0
    rng = np.random.default_rng(0)
    hu += rng.normal(0, 10, hu.shape)
    direction = FLIP_X if flip else AXIAL_DIRECTION
    array, truth = (hu[..., ::-1], truth[..., ::-1]) if flip else (hu, truth)
    origin = (float(x[-1] if flip else x[0]), float(y[0]), float(z[0]))
    volume = Volume(np.round(array).astype(np.int16), spacing=SPACING, origin=origin,
                    direction=direction, meta={"units": "HU", "modality": "CT"})
    return volume, np.ascontiguousarray(truth)


def _check(volume, truth, minimum=0.95):
    mask = lung_mask(volume)
    assert mask.array.dtype == np.uint8 and mask.same_grid(volume)
    for value in (RIGHT_LUNG, LEFT_LUNG):
        if (truth == value).any():
            assert _dice(mask.array == value, truth == value) >= minimum, value
        else:
            assert not (mask.array == value).any()
    return mask


def test_two_lungs_with_bed_and_trachea():
    volume, truth = chest()
    mask = _check(volume, truth)
    assert mask.meta["labels"] == {"1": "right lung", "2": "left lung"}
    assert not mask.array[:, 56:63].any()                    # the bed foam is not lung
    assert not mask.array[30:, 30:34, 34:38].any()           # trachea removed


def test_one_lung_is_labelled_by_its_side():
    _check(*chest(lungs=("left",)))
    _check(*chest(lungs=("right",), bed=False))


def test_no_bed():
    _check(*chest(bed=False))


def test_touching_lungs_are_split():
    _check(*chest(gap_mm=0.0))


def test_left_right_come_from_patient_coordinates():
    volume, truth = chest(flip=True)
    mask = _check(volume, truth)
    right = np.argwhere(mask.array == RIGHT_LUNG)
    assert right[:, 2].mean() > volume.shape[2] / 2          # high columns = patient's right
    assert volume.world(right.mean(axis=0))[0] < 0            # ... which is LPS x < 0


def test_no_fill_keeps_raw_air_regions():
    volume, truth = chest()
    raw = lung_mask(volume, fill=False)
    filled = lung_mask(volume)
    assert raw.array.sum() < filled.array.sum()
    assert np.all(volume.array[raw.array > 0] < -400)


def test_binary_and_apply():
    volume, _ = chest()
    out = LungMasker(binary=True, apply=-1000)(volume)
    assert set(np.unique(out[""].array)) == {0, 1}
    masked = out["masked"].array
    assert np.all(masked[out[""].array == 0] == -1000)
    assert np.array_equal(masked[out[""].array == 1], volume.array[out[""].array == 1])
    with pytest.raises(UsageError):
        apply_mask(volume, out[""], 40000)


@pytest.mark.parametrize("seed", [0, 2])    # 0: body cut by the field of view; 2: lungs touch
def test_phantom_dice(seed):
    case = make_ct(np.random.default_rng(seed), shape=96)
    volume = Volume(np.nan_to_num(case.hu, nan=-1000).astype(np.int16), spacing=case.spacing,
                    origin=case.origin, meta={"units": "HU"})
    mask = lung_mask(volume)
    for value in (RIGHT_LUNG, LEFT_LUNG):
        assert _dice(mask.array == value, case.lungs == value) >= 0.98


def test_raw_and_non_hu_inputs_are_refused():
    volume, _ = chest()
    with pytest.raises(InputError, match="medtool hu"):
        lung_mask(volume.with_array(volume.array + 1024, units="raw"))
    with pytest.raises(InputError, match="not HU"):
        lung_mask(volume.with_array(volume.array, units="normalized"))
    with pytest.raises(InputError, match="medtool hu"):
        lung_mask(Volume(np.abs(volume.array)))
    with pytest.raises(InputError, match="no body"):
        lung_mask(volume.with_array(np.full(volume.shape, -1000, np.int16)))


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_shifted_view_morphology_equals_scipy(radius):
    """The fast erosion/dilation/opening/closing and bounding box equal scipy.ndimage's."""
    from scipy import ndimage

    from medtool import lungmask as lm

    footprint = lm._SLICE_2D | lm._SLICE_2D.transpose(1, 0, 2) if radius == 0 else lm._disk(radius)
    rng = np.random.default_rng(radius)
    for _ in range(4):
        mask = rng.random((6, 23, 31)) < rng.uniform(0.3, 0.9)
        assert np.array_equal(lm._erode(mask, footprint), ndimage.binary_erosion(mask, footprint))
        assert np.array_equal(lm._dilate(mask, footprint), ndimage.binary_dilation(mask, footprint))
        assert np.array_equal(lm._erode(lm._dilate(mask, footprint), footprint),
                              ndimage.binary_closing(mask, footprint))
        index = np.nonzero(mask)
        assert lm._box(mask, margin=2) == tuple(
            slice(max(0, i.min() - 2), min(n, i.max() + 3)) for i, n in zip(index, mask.shape))


def test_convex_hull_equals_half_plane_test():
    """Row intervals of the hull equal the pixel-by-pixel half-plane test of Qhull's facets."""
    from scipy.spatial import ConvexHull

    from medtool.lungmask import _convex_hull

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:40, :50]
    for _ in range(30):
        mask = np.zeros((40, 50), bool)
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(0, 40), rng.integers(0, 50), rng.integers(2, 10)
            mask |= (yy - cy) ** 2 * rng.uniform(0.3, 3) + (xx - cx) ** 2 < r * r
        equations = ConvexHull(np.argwhere(mask)).equations
        expected = np.all(equations[:, :1, None] * yy[None] + equations[:, 1:2, None] * xx[None]
                          + equations[:, 2:, None] <= 1e-6, axis=0)
        assert np.array_equal(_convex_hull(mask), expected)


# -- lungs, only lungs, or none: the anatomy of real scans -------------------------------------
def _below_lungs(truth: np.ndarray) -> slice:
    """The slices under the lowest lung slice (the hand-made gas pocket lies there)."""
    return slice(0, int(np.flatnonzero(truth.any(axis=(1, 2)))[0]))


def test_gas_under_the_lungs_is_not_lung():
    volume, truth = chest(gas=True)
    mask = _check(volume, truth)
    assert np.mean(volume.array[_below_lungs(truth)] < -990) > 0.05   # a pocket of gas is there
    assert not mask.array[_below_lungs(truth)].any()


def test_one_lung_and_gas_bigger_than_a_lung_part():
    """The largest air regions are one lung and gas: the gas is not the other lung."""
    volume, truth = chest(lungs=("left",), gas=True)
    mask = _check(volume, truth)
    assert set(np.unique(mask.array)) == {0, LEFT_LUNG}
    assert not mask.array[_below_lungs(truth)].any()


def _flip_z(volume):
    """The same patient stored feet first: slices in reverse order, z direction reversed."""
    direction = volume.direction.copy()
    direction[:, 0] *= -1
    top = volume.world(np.array([[volume.shape[0] - 1, 0, 0]]))[0]
    return Volume(np.ascontiguousarray(volume.array[::-1]), spacing=volume.spacing, origin=tuple(top),
                  direction=direction, meta=dict(volume.meta))


def test_a_tumour_on_the_mediastinal_pleura_is_inside_whichever_way_slices_run():
    volume, truth = chest(medial_tumour=True)
    tumour = (volume.array > 0) & (truth == LEFT_LUNG)
    assert tumour.sum() > 150
    mask = _check(volume, truth).array
    assert np.mean(mask[tumour] == LEFT_LUNG) >= 0.8
    flipped = lung_mask(_flip_z(volume)).array
    np.testing.assert_array_equal(flipped[::-1], mask)


def test_a_tumour_where_the_scan_ends_inside_the_lung_is_inside():
    """Only the upper half of the chest: the scan ends across the tumour, so no lung lies below
    it in the scan; the lung goes on below the scan, and the tumour is still lung."""
    volume, truth = chest(medial_tumour=True, trachea=False)
    upper = volume.shape[0] // 2 - 2                         # the ball's centre is at slice 20
    top = Volume(volume.array[upper:], spacing=volume.spacing,
                 origin=tuple(volume.world(np.array([[upper, 0, 0]]))[0]), meta=dict(volume.meta))
    tumour = (top.array > 0) & (truth[upper:] == LEFT_LUNG)
    assert tumour.sum() > 80
    mask = _check(top, truth[upper:]).array
    assert np.mean(mask[tumour] == LEFT_LUNG) >= 0.8


def test_juxtapleural_tumour_is_inside_the_lung():
    volume, truth = chest(tumour=True)
    mask = _check(volume, truth)
    tumour = (volume.array > 0) & (truth == LEFT_LUNG)       # the ball's part inside the lung
    assert tumour.sum() > 200
    assert np.mean(mask.array[tumour] == LEFT_LUNG) >= 0.8
    assert not mask.array[:, 56:63].any()                    # still no bed


def test_no_lung_is_one_line():
    volume, truth = chest(lungs=(), gas=True, trachea=False)
    with pytest.raises(InputError, match="no lung in this scan") as error:
        lung_mask(volume)
    assert "\n" not in str(error.value) and "gas" in str(error.value)


def _phantom(seed, shape=96, tumour=0.0, **anatomy):
    from medtool.phantom.ct import Anatomy

    case = make_ct(np.random.default_rng(seed), shape=shape, tumour_probability=tumour,
                   anatomy=Anatomy(**anatomy))
    volume = Volume(np.nan_to_num(case.hu, nan=-1000).astype(np.int16), spacing=case.spacing,
                    origin=case.origin, meta={"units": "HU"})
    return case, volume


def _per_lung_dice(mask, case, minimum=0.97):
    present = [v for v in (RIGHT_LUNG, LEFT_LUNG) if (case.lungs == v).any()]
    for value in (RIGHT_LUNG, LEFT_LUNG):
        if value in present:
            assert _dice(mask == value, case.lungs == value) >= minimum, value
        else:
            assert not (mask == value).any(), value
    return present


@pytest.mark.parametrize("seed, anatomy", [
    (1, dict(bowel=True)), (2, dict(bowel=True)),              # chest with colon, stomach, bowel
    (2, dict(scan_range="cap")), (7, dict(scan_range="cap")),   # chest-abdomen-pelvis
    (2, dict(scan_range="bases")), (7, dict(scan_range="bases")),   # gas touches a lung base
    (3, dict(scan_range="apices")),
])
def test_phantom_lungs_and_no_bowel_gas(seed, anatomy):
    from medtool.phantom.ct import BOWEL_GAS_TRUTH

    case, volume = _phantom(seed, **anatomy)
    gas = case.anatomy == BOWEL_GAS_TRUTH
    mask = lung_mask(volume).array
    assert _per_lung_dice(mask, case) == [RIGHT_LUNG, LEFT_LUNG]
    assert anatomy.get("scan_range") == "apices" or gas.sum() * np.prod(case.spacing) / 1000 > 50
    assert not np.any((mask > 0) & gas)                       # not one voxel of bowel gas


@pytest.mark.parametrize("side", ["right", "left"])
def test_phantom_one_lung(side):
    case, volume = _phantom(4, one_lung=side, bowel=True)
    mask = lung_mask(volume).array
    assert _per_lung_dice(mask, case) == [RIGHT_LUNG if side == "right" else LEFT_LUNG]


def test_phantom_effusion_is_not_lung():
    from medtool.phantom.ct import EFFUSION_TRUTH

    case, volume = _phantom(5, effusion=True)
    effusion = case.anatomy == EFFUSION_TRUTH
    assert effusion.sum() * np.prod(case.spacing) / 1000 > 50
    mask = lung_mask(volume).array
    _per_lung_dice(mask, case)
    assert np.mean(mask[effusion] > 0) < 0.01                # at most its rim's partial voxels


def test_phantom_emphysema_is_lung():
    from medtool.phantom.ct import EMPHYSEMA_TRUTH

    case, volume = _phantom(6, emphysema=True)
    emphysema = case.anatomy == EMPHYSEMA_TRUTH
    assert emphysema.sum() > 0.05 * (case.lungs > 0).sum()
    mask = lung_mask(volume).array
    _per_lung_dice(mask, case)
    assert np.mean(mask[emphysema] > 0) > 0.99


@pytest.mark.parametrize("seed", [1, 3])
def test_phantom_juxtapleural_tumour_inside(seed):
    from medtool import lungmask as lm

    case, volume = _phantom(seed, shape=128, tumour=1.0, juxtapleural=True)
    tumour = case.tumour > 0
    assert tumour.any()
    mask = lung_mask(volume).array
    _per_lung_dice(mask, case)
    assert np.mean(mask[tumour] > 0) >= 0.6
    # without the pockets (the 8 mm closing only) most of it was cut out
    pockets = lm._pockets
    try:
        lm._pockets = lambda lung, **_: np.zeros_like(lung)
        assert np.mean(lung_mask(volume).array[tumour] > 0) < 0.3
    finally:
        lm._pockets = pockets


def test_phantom_abdomen_only_has_no_lung():
    case, volume = _phantom(1, scan_range="abdomen")
    assert not case.lungs.any()
    with pytest.raises(InputError, match="no lung in this scan"):
        lung_mask(volume)


def test_default_phantom_keeps_its_dice_and_time():
    """The anatomy rules change nothing on the default chest (Dice as before, >= 0.98)."""
    import time

    case, volume = _phantom(0, tumour=0.65)
    start = time.perf_counter()
    mask = lung_mask(volume).array
    assert time.perf_counter() - start < 5.0
    _per_lung_dice(mask, case, minimum=0.98)
