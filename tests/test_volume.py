import nibabel as nib
import numpy as np
import pytest

from medtool.volume import AXIAL_DIRECTION, Volume, direction_from_cosines, from_nifti, \
    orientation_code, to_nifti

from .conftest import rotation


def test_default_geometry_is_a_standard_axial_lps_stack():
    volume = Volume(np.zeros((3, 4, 5)))
    assert volume.spacing == (1.0, 1.0, 1.0)
    assert volume.orientation == "LPS"
    # voxel (z=2, y=1, x=3) sits 3 mm left, 1 mm posterior, 2 mm superior of the origin
    assert np.allclose(volume.world([2, 1, 3]), [3, 1, 2])


def test_world_coordinates_by_hand():
    volume = Volume(np.zeros((4, 5, 6)), spacing=(3.0, 0.5, 0.25), origin=(10.0, -20.0, 5.0))
    # x: 2 * 0.25 = 0.5 left; y: 4 * 0.5 = 2 posterior; z: 1 * 3 = 3 superior
    assert np.allclose(volume.world([1, 4, 2]), [10.5, -18.0, 8.0])
    assert np.allclose(volume.affine @ [1, 4, 2, 1], [10.5, -18.0, 8.0, 1])


def test_direction_from_dicom_cosines_is_array_ordered():
    direction = direction_from_cosines([1, 0, 0], [0, 1, 0])
    assert np.array_equal(direction, AXIAL_DIRECTION)
    # a coronal slice: rows run to the left, columns to inferior; stacked anterior->posterior
    coronal = direction_from_cosines([1, 0, 0], [0, 0, -1])
    assert Volume(np.zeros((2, 2, 2)), direction=coronal).orientation == "LIP"


def test_nifti_affine_by_hand():
    volume = Volume(np.zeros((4, 5, 6), np.int16), spacing=(2.0, 0.5, 0.7), origin=(10.0, 20.0, 30.0))
    data, affine = to_nifti(volume)
    assert data.shape == (6, 5, 4)
    expected = np.array([[-0.7, 0, 0, -10], [0, -0.5, 0, -20], [0, 0, 2.0, 30], [0, 0, 0, 1]])
    assert np.allclose(affine, expected)
    assert nib.aff2axcodes(affine) == ("L", "P", "S")


@pytest.mark.parametrize("seed", range(12))
def test_orientation_and_world_agree_with_nibabel(seed):
    rng = np.random.default_rng(seed)
    # random rotation times random axis flips/permutation: every orientation class appears
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if seed % 3 == 0:  # near-axial with small obliquity, the common clinical case
        q = rotation("x", rng.uniform(-20, 20)) @ np.diag(rng.choice([-1.0, 1.0], 3))[rng.permutation(3)]
    volume = Volume(np.zeros((3, 4, 5)), spacing=tuple(rng.uniform(0.3, 5.0, 3)),
                    origin=tuple(rng.uniform(-300, 300, 3)), direction=q)
    data, affine = to_nifti(volume)
    assert "".join(nib.aff2axcodes(affine)) == volume.orientation
    # nibabel's voxel (i, j, k) -> RAS equals our (k, j, i) -> LPS with x, y negated
    index = np.array([2, 3, 1])  # (z, y, x)
    ras = nib.affines.apply_affine(affine, index[::-1])
    assert np.allclose(ras * [-1, -1, 1], volume.world(index))


def test_from_nifti_inverts_to_nifti(oblique_volume):
    array, spacing, origin, direction = from_nifti(*to_nifti(oblique_volume))
    assert np.array_equal(array, oblique_volume.array)
    assert np.allclose(spacing, oblique_volume.spacing)
    assert np.allclose(origin, oblique_volume.origin)
    assert np.allclose(direction, oblique_volume.direction)


def test_2d_image_geometry():
    image = Volume(np.zeros((4, 6)), spacing=(0.2, 0.1), origin=(1.0, 2.0, 3.0))
    assert image.axes == ("y", "x")
    assert image.orientation == "LP"
    assert np.allclose(image.world([1, 2]), [1.2, 2.2, 3.0])
    array, spacing, origin, direction = from_nifti(*to_nifti(image))
    assert array.shape == (4, 6) and np.allclose(spacing, (0.2, 0.1))
    assert np.allclose(origin, (1, 2, 3)) and np.allclose(direction, image.direction)


@pytest.mark.parametrize("kwargs, message", [
    ({"spacing": (1.0, 0.0, 1.0)}, "positive"),
    ({"spacing": (1.0, 1.0)}, "3 values"),
    ({"origin": (0.0, 1.0)}, "origin"),
    ({"direction": np.diag([1.0, 2.0, 1.0])}, "orthonormal"),
])
def test_bad_geometry_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Volume(np.zeros((2, 2, 2)), **kwargs)


def test_orientation_code_picks_each_world_axis_once():
    # two columns lean towards L; the larger one wins, the other gets its next-best axis
    columns = np.array([[0.8, 0.7, 0.0], [0.6, -0.71, 0.0], [0.0, 0.0, -1.0]])
    assert orientation_code(columns) == "LAI"


def test_with_array_keeps_geometry_and_copies_meta(oblique_volume):
    mask = oblique_volume.with_array(np.ones(oblique_volume.shape, np.uint8), units="label")
    assert mask.same_grid(oblique_volume)
    assert mask.units == "label" and oblique_volume.units == "HU"
    mask.history.append({"command": "x"})
    assert len(oblique_volume.history) == 1


@pytest.mark.parametrize("code", ["LPS", "RAS", "PLI", "SRA"])
def test_reoriented_keeps_every_voxel_where_it_was(oblique_volume, code):
    volume = Volume(np.random.default_rng(0).normal(size=(3, 4, 5)), (2.0, 0.7, 0.9), (5.0, -3.0, 8.0),
                    oblique_volume.direction)
    turned = volume.reoriented(code)
    assert turned.orientation == code
    index = np.stack(np.meshgrid(*[np.arange(n) for n in turned.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    back = np.rint(volume.continuous_index(turned.world(index))).astype(int)
    np.testing.assert_allclose(volume.continuous_index(turned.world(index)), back, atol=1e-9)
    np.testing.assert_array_equal(volume.array[tuple(back.T)], turned.array[tuple(index.T)])
    assert sorted(turned.spacing) == sorted(volume.spacing)
    np.testing.assert_array_equal(turned.reoriented(volume.orientation).array, volume.array)


def test_reoriented_refuses_2d_and_bad_codes():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((2, 2))).reoriented("LP")
    with pytest.raises(ValueError, match="not an orientation"):
        Volume(np.zeros((2, 2, 2))).reoriented("LPX")
    with pytest.raises(ValueError, match="twice"):
        Volume(np.zeros((2, 2, 2))).reoriented("LRS")


def test_cropped_keeps_every_voxel_where_it_was(oblique_volume):
    box = (slice(1, 4), slice(2, 7), slice(0, 3))
    part = oblique_volume.cropped(box)
    assert part.shape == (3, 5, 3) and part.spacing == oblique_volume.spacing
    np.testing.assert_array_equal(part.array, oblique_volume.array[1:4, 2:7, 0:3])
    np.testing.assert_allclose(part.world([0, 0, 0]), oblique_volume.world([1, 2, 0]))
    np.testing.assert_allclose(part.world([2, 4, 2]), oblique_volume.world([3, 6, 2]))
    assert part.meta == oblique_volume.meta and part.meta is not oblique_volume.meta
    with pytest.raises(ValueError, match="step 1"):
        oblique_volume.cropped((slice(0, 4, 2), slice(None), slice(None)))
