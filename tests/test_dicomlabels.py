"""RTSTRUCT and DICOM SEG in and out (medtool.dicomlabels): round trips on oblique and flipped
series, the rt-utils orientation pitfall, holes, frame order, and one clear error per bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.draw import ellipse

from medtool import dicomlabels as dl
from medtool.errors import InputError
from medtool.volume import Volume

from .conftest import rotation
from .dicom_fixtures import save_structure_set, voxel_lps, write_series, write_structure_set

_R = rotation("x", 17.0) @ rotation("z", -31.0)
#: Series geometries: an oblique one, and one stored with x reversed and z descending
#: (row cosine -x, so the slice normal row x column points to the feet).
GEOMETRIES = {
    "oblique": {"row": _R[:, 0], "column": _R[:, 1], "origin": (-171.2, 33.3, -402.75)},
    "flipped": {"row": (-1.0, 0.0, 0.0), "column": (0.0, 1.0, 0.0), "origin": (120.0, -90.0, 40.0)},
}
#: Dice and volume agreement a RTSTRUCT round trip must keep (issue 27).
MIN_DICE, MAX_VOLUME_ERROR = 0.98, 0.02


def make_series(folder: Path, geometry: str, *, shape=(5, 40, 48), spacing=(2.5, 0.8, 0.7)):
    """A CT series in ``folder``; (paths, reference) with the reference's planned stack."""
    paths = write_series(folder, np.zeros(shape, np.int16), spacing=spacing,
                         **GEOMETRIES[geometry])
    stacks = dl.scan_references([folder])
    assert len(stacks) == 1
    grid = dl.grid_of(stacks[0])
    return paths, dl.Reference(stacks[0], []), grid


def labels_volume(grid: Volume) -> Volume:
    """Three labels on ``grid``: a ring with an island in its hole (1), an ellipse (2) and an
    asymmetric L (3), none symmetric under a transpose or flip."""
    shape = grid.shape
    array = np.zeros(shape, np.uint8)
    ny, nx = shape[1:]
    for k in range(1, shape[0] - 1):
        rr, cc = ellipse(ny * 0.45, nx * 0.3, ny * 0.3, nx * 0.2, shape=shape[1:])
        array[k, rr, cc] = 1
        rr, cc = ellipse(ny * 0.45, nx * 0.3, ny * 0.15, nx * 0.1, shape=shape[1:])
        array[k, rr, cc] = 0
        rr, cc = ellipse(ny * 0.45, nx * 0.3, ny * 0.05, nx * 0.04, shape=shape[1:])
        array[k, rr, cc] = 1
        rr, cc = ellipse(ny * 0.5, nx * 0.75, ny * 0.2, nx * 0.12, shape=shape[1:])
        array[k, rr, cc] = 2
    array[2, int(ny * 0.8):int(ny * 0.9), int(nx * 0.1):int(nx * 0.5)] = 3
    array[2, int(ny * 0.6):int(ny * 0.9), int(nx * 0.1):int(nx * 0.18)] = 3
    return grid.with_array(array, labels={"1": "Lung_R", "2": "Lung_L", "3": "tumour"})


def reference(folder: Path):
    return dl.scan_references([folder])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# -- SEG ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_seg_round_trip_is_exact(tmp_path, geometry):
    _, _, grid = make_series(tmp_path / "ct", geometry)
    mask = labels_volume(grid)
    ref = dl.reference_for(mask, reference(tmp_path / "ct"))
    dl.write_seg(mask, ref, tmp_path / "seg.dcm")
    back = dl.read_labels(tmp_path / "seg.dcm", grid).volume
    np.testing.assert_array_equal(back.array, mask.array)
    assert back.same_grid(mask)
    assert back.meta["labels"] == {"1": "Lung_R", "2": "Lung_L", "3": "tumour"}
    assert back.meta["modality"] == "SEG" and back.array.dtype == np.uint8


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_highdicom_reads_the_seg_on_the_series_geometry(tmp_path, geometry):
    # the independent reader: highdicom's own volume geometry, from the SEG alone, puts every
    # segment voxel where medtool's grid of the series has it
    import highdicom as hd

    paths, _, grid = make_series(tmp_path / "ct", geometry)
    mask = labels_volume(grid)
    dl.write_seg(mask, dl.reference_for(mask, reference(tmp_path / "ct")), tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.segment_numbers == [1, 2, 3]
    assert seg.get_segment_description(1).segmented_property_type.value == "3341006"   # right lung
    assert seg.get_segment_description(3).segmented_property_category.value == "49755003"
    algorithm = seg.get_segment_description(1).algorithm_identification
    assert algorithm[0].AlgorithmName == "medtool"
    series_uid = pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    volume = seg.get_volume(combine_segments=True)
    index = np.argwhere(volume.array > 0)
    world = np.c_[index, np.ones(len(index))] @ volume.affine.T
    ours = np.rint(dl.to_index(grid, world[:, :3])).astype(int)
    np.testing.assert_array_equal(mask.array[tuple(ours.T)], volume.array[tuple(index.T)])
    assert len(index) == np.count_nonzero(mask.array)


def _rewrite_frames(path: Path, order: np.ndarray) -> None:
    """Shuffle the frames of a binary SEG (pixels and per-frame groups together)."""
    from pydicom.pixels import pack_bits

    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)[order]
    groups = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    ds.PerFrameFunctionalGroupsSequence = pydicom.sequence.Sequence(groups)
    for group in groups:            # dimension indices would now be out of order: drop them
        group.FrameContentSequence[0].DimensionIndexValues = [1, 1]
    del ds.DimensionIndexSequence
    ds.PixelData = pack_bits(frames)
    ds.save_as(path)


def test_seg_frames_in_any_order(tmp_path):
    _, _, grid = make_series(tmp_path / "ct", "oblique")
    mask = labels_volume(grid)
    dl.write_seg(mask, dl.reference_for(mask, reference(tmp_path / "ct")), tmp_path / "seg.dcm")
    count = int(pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True).NumberOfFrames)
    _rewrite_frames(tmp_path / "seg.dcm", np.random.default_rng(3).permutation(count))
    ds = pydicom.dcmread(tmp_path / "seg.dcm", stop_before_pixels=True)
    positions = [f.PlanePositionSequence[0].ImagePositionPatient
                 for f in ds.PerFrameFunctionalGroupsSequence]
    assert positions != sorted(positions, key=lambda p: float(p[2]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = dl.read_labels(tmp_path / "seg.dcm", grid)
    np.testing.assert_array_equal(result.volume.array, mask.array)


@pytest.mark.parametrize("seg_type", ["FRACTIONAL", "LABELMAP"])
def test_fractional_and_label_map_segs(tmp_path, seg_type):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    paths, _, grid = make_series(tmp_path / "ct", "flipped")
    mask = labels_volume(grid)
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in paths),
                     key=lambda d: -float(d.ImagePositionPatient[2]))      # slice order: z down
    for ds in sources:
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                        "AccessionNumber", "ReferringPhysicianName"):
            setattr(ds, keyword, "")
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=name, segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=codes.SCT.Lung, algorithm_type="MANUAL") for n, name in ((1, "a"), (2, "b"), (3, "c"))]
    if seg_type == "FRACTIONAL":
        pixels = np.stack([(mask.array == n) * 0.8 for n in (1, 2, 3)], axis=-1).astype(np.float32)
        pixels[..., 0][mask.array == 0] = 0.3          # below one half: not in the segment
    else:
        pixels = mask.array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(source_images=sources, pixel_array=pixels, segmentation_type=seg_type,
                                  segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                                  series_number=1, sop_instance_uid=hd.UID(), instance_number=1,
                                  manufacturer="test", manufacturer_model_name="test",
                                  software_versions="1", device_serial_number="1")
    seg.save_as(tmp_path / "seg.dcm")
    back = dl.read_labels(tmp_path / "seg.dcm", grid).volume
    np.testing.assert_array_equal(back.array, mask.array)
    assert back.meta["labels"] == {"1": "a", "2": "b", "3": "c"}


# -- RTSTRUCT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_rtstruct_round_trip_keeps_dice_and_volume_at_512(tmp_path, geometry):
    _, _, grid = make_series(tmp_path / "ct", geometry, shape=(4, 512, 512),
                             spacing=(3.0, 0.7, 0.7))
    mask = labels_volume(grid)
    ref = dl.reference_for(mask, reference(tmp_path / "ct"))
    dl.write_rtstruct(mask, ref, tmp_path / "rs.dcm")
    result = dl.read_labels(tmp_path / "rs.dcm", grid)
    back = result.volume
    assert back.meta["labels"] == {"1": "Lung_R", "2": "Lung_L", "3": "tumour"}
    for value in (1, 2, 3):
        truth, read = mask.array == value, back.array == value
        assert dice(truth, read) >= MIN_DICE, (value, dice(truth, read))
        assert abs(read.sum() / truth.sum() - 1) <= MAX_VOLUME_ERROR


def test_rtstruct_references_every_image_and_codes_its_rois(tmp_path):
    paths, _, grid = make_series(tmp_path / "ct", "oblique")
    mask = labels_volume(grid)
    dl.write_rtstruct(mask, dl.reference_for(mask, reference(tmp_path / "ct")), tmp_path / "rs.dcm")
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    images = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == images
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Lung_R", "Lung_L", "tumour"]
    assert ds.RTROIObservationsSequence[0].RTROIIdentificationCodeSequence[0].CodeValue == "3341006"
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "AUTOMATIC"
    for contour in ds.ROIContourSequence[0].ContourSequence:
        assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in images
        assert len(contour.ContourData) == 3 * contour.NumberOfContourPoints


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_hand_written_rtstruct_is_not_transposed_or_flipped(tmp_path, geometry):
    # rt-utils' pitfall: an asymmetric L drawn at known patient coordinates (computed from the
    # DICOM headers by the standard's formula, not by medtool) lands at the voxels the affine
    # says, in a non-square image, on an oblique and on an x-reversed / z-descending series
    paths, _, grid = make_series(tmp_path / "ct", geometry)
    corners = [(7.5, 5.5), (7.5, 11.5), (27.5, 11.5), (27.5, 29.5), (33.5, 29.5), (33.5, 5.5)]
    lps = np.array([voxel_lps(paths, (3, r, c)) for r, c in corners])     # (row, column) ^
    write_structure_set(tmp_path / "rs.dcm", paths, [("L", [lps])])
    back = dl.read_labels(tmp_path / "rs.dcm", grid).volume.array
    expected = np.zeros(grid.shape, bool)
    expected[3, 8:34, 6:12] = True                                # rows 8-33 of columns 6-11
    expected[3, 28:34, 12:30] = True                              # the foot, to column 29
    np.testing.assert_array_equal(back > 0, expected)
    assert back[3, 30, 8] == 1 and back[3, 10, 30] == 0           # the long arm, the empty corner
    sitk = pytest.importorskip("SimpleITK")                       # an independent reader agrees
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    for (r, c), point in zip(corners, lps):
        assert np.allclose(image.TransformPhysicalPointToContinuousIndex(point.tolist()),
                           (c, r, 3), atol=1e-3)


def _square(paths, k, r0, r1, c0, c1):
    return np.array([voxel_lps(paths, (k, r, c)) for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0))])


def test_inner_contours_are_holes_by_even_odd_rule(tmp_path):
    paths, _, grid = make_series(tmp_path / "ct", "flipped")
    outer, hole, island = (_square(paths, 2, 5.5, 30.5, 5.5, 40.5), _square(paths, 2, 10.5, 25.5, 10.5, 35.5),
                           _square(paths, 2, 15.5, 20.5, 15.5, 20.5))
    keyhole = np.array([voxel_lps(paths, (1, r, c)) for r, c in
                        ((5.5, 5.5), (5.5, 20.5), (10.5, 20.5), (10.5, 15.5), (15.5, 15.5),
                         (15.5, 20.5), (10.5, 20.5), (5.5, 20.5), (5.5, 30.5), (20.5, 30.5),
                         (20.5, 5.5))])
    write_structure_set(tmp_path / "rs.dcm", paths, [("ring", [outer, hole, island, keyhole])])
    back = dl.read_labels(tmp_path / "rs.dcm", grid).volume.array
    expected = np.zeros(grid.shape, np.uint8)
    expected[2, 6:31, 6:41] = 1
    expected[2, 11:26, 11:36] = 0
    expected[2, 16:21, 16:21] = 1
    expected[1, 6:21, 6:31] = 1
    expected[1, 11:16, 16:21] = 0                     # the keyhole's cut-out
    np.testing.assert_array_equal(back, expected)


def test_points_are_left_out_and_overlaps_noted(tmp_path):
    paths, _, grid = make_series(tmp_path / "ct", "oblique")
    square = _square(paths, 2, 5.5, 20.5, 5.5, 20.5)
    write_structure_set(tmp_path / "rs.dcm", paths, [("A", [square]), ("B", [square + 0.0])])
    result = dl.read_labels(tmp_path / "rs.dcm", grid)
    assert result.volume.meta["labels"] == {"1": "A", "2": "B"}
    assert np.all(result.volume.array[2, 6:21, 6:21] == 2)
    assert any("overlapping ROIs" in note and "B" in note for note in result.notes)
    write_structure_set(tmp_path / "points.dcm", paths, [("marker", [square])], geometric_type="POINT")
    result = dl.read_labels(tmp_path / "points.dcm", grid)
    assert result.volume.meta["labels"] == {} and not result.volume.array.any()
    assert any("marker" in note and "left out" in note for note in result.notes)


# -- bad inputs: one InputError each, naming the file -------------------------------------------

def _error(path: Path, grid: Volume, **options) -> str:
    with pytest.raises(InputError) as caught:
        dl.read_labels(path, grid, **options)
    text = str(caught.value)
    assert str(path) in text and "\n" not in text and caught.value.hint
    return text


def test_contour_outside_the_image_is_an_error(tmp_path):
    paths, _, grid = make_series(tmp_path / "ct", "oblique")
    above = _square(paths, 4, 5, 10, 5, 10) + 10 * 2.5 * np.cross(GEOMETRIES["oblique"]["row"],
                                                                   GEOMETRIES["oblique"]["column"])
    write_structure_set(tmp_path / "above.dcm", paths, [("A", [above])])
    assert "lies outside the image (25.0 mm beyond the series' last slice)" in _error(tmp_path / "above.dcm", grid)
    beside = _square(paths, 2, 100, 120, 200, 220)
    write_structure_set(tmp_path / "beside.dcm", paths, [("B", [beside])])
    assert "contour 1 of ROI 'B' lies outside the image (beside its slice)" in _error(tmp_path / "beside.dcm", grid)


def test_contour_between_the_planes_is_an_error(tmp_path):
    paths, _, grid = make_series(tmp_path / "ct", "oblique")
    between = (_square(paths, 2, 5, 10, 5, 10) + _square(paths, 3, 5, 10, 5, 10)) / 2
    write_structure_set(tmp_path / "rs.dcm", paths, [("A", [between])])
    assert "does not lie on an image plane" in _error(tmp_path / "rs.dcm", grid)


def test_roi_without_contours_is_an_error_unless_allowed(tmp_path):
    paths, _, grid = make_series(tmp_path / "ct", "oblique")
    write_structure_set(tmp_path / "rs.dcm", paths,
                        [("A", [_square(paths, 2, 5, 10, 5, 10)]), ("Empty", [])])
    assert "ROI 'Empty' (number 2) has no contour" in _error(tmp_path / "rs.dcm", grid)
    kept = dl.read_labels(tmp_path / "rs.dcm", grid, allow_empty=True).volume
    assert kept.meta["labels"] == {"1": "A", "2": "Empty"} and not np.any(kept.array == 2)


@pytest.mark.parametrize("damage, message", [
    ("odd_data", "has 13 ContourData values"),
    ("count", "NumberOfContourPoints 9 but 4 points"),
    ("no_roi_number", "has no ReferencedROINumber"),
    ("no_rois", "StructureSetROISequence is missing or empty"),
    ("not_numbers", "ContourData that is not numbers"),
])
def test_damaged_structure_sets_are_one_error(tmp_path, damage, message):
    paths, _, grid = make_series(tmp_path / "ct", "oblique")
    ds = write_structure_set(tmp_path / "rs.dcm", paths, [("A", [_square(paths, 2, 5, 10, 5, 10)])])
    contour = ds.ROIContourSequence[0].ContourSequence[0]
    if damage == "odd_data":
        contour.ContourData = list(contour.ContourData) + [1.0]
    elif damage == "count":
        contour.NumberOfContourPoints = 9
    elif damage == "no_roi_number":
        del ds.ROIContourSequence[0].ReferencedROINumber
    elif damage == "no_rois":
        del ds.StructureSetROISequence
    else:
        from pydicom.dataelem import RawDataElement

        contour[0x30060050] = RawDataElement(pydicom.tag.Tag(0x30060050), "DS", 6, b"x\\y\\z ",
                                             0, False, True)
    save_structure_set(ds, tmp_path / "rs.dcm")
    assert message in _error(tmp_path / "rs.dcm", grid)


def test_seg_of_another_series_is_an_error(tmp_path):
    _, _, grid = make_series(tmp_path / "a", "oblique")
    mask = labels_volume(grid)
    dl.write_seg(mask, dl.reference_for(mask, reference(tmp_path / "a")), tmp_path / "seg.dcm")
    other = reference(make_series(tmp_path / "b", "oblique")[0][0].parent)   # same frame of reference
    with pytest.raises(InputError, match="references series .* which is not among the inputs"):
        dl.match_stack(dl.read_header(tmp_path / "seg.dcm"), other)
    flipped = make_series(tmp_path / "c", "flipped")[2]
    assert "not the image's" in _error(tmp_path / "seg.dcm", flipped)


def test_truncated_seg_is_one_error(tmp_path):
    _, _, grid = make_series(tmp_path / "ct", "oblique")
    mask = labels_volume(grid)
    dl.write_seg(mask, dl.reference_for(mask, reference(tmp_path / "ct")), tmp_path / "seg.dcm")
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    del ds.PerFrameFunctionalGroupsSequence[0]
    ds.save_as(tmp_path / "seg.dcm")
    assert "PerFrameFunctionalGroupsSequence has 6 items for 7 frames" in _error(tmp_path / "seg.dcm", grid)


# -- writing: what the mask must be ------------------------------------------------------------

def test_mask_on_another_grid_is_refused(tmp_path):
    _, _, grid = make_series(tmp_path / "ct", "oblique")
    moved = Volume(labels_volume(grid).array, grid.spacing, tuple(np.add(grid.origin, 1.0)), grid.direction)
    with pytest.raises(InputError, match="the mask's grid .* is none of the 1 series"):
        dl.reference_for(moved, reference(tmp_path / "ct"), path="m.nii.gz")
    probabilities = grid.with_array(np.full(grid.shape, 0.5, np.float32))
    ref = dl.reference_for(probabilities, reference(tmp_path / "ct"))
    with pytest.raises(InputError, match="not labels"):
        dl.write_seg(probabilities, ref, tmp_path / "x.dcm", path="p.nii.gz")


@pytest.mark.parametrize("name, code", [("Lung_R", "3341006"), ("LUNG_L", "44029006"),
                                        ("right lung", "3341006"), ("RightLung", "3341006"),
                                        ("lung", "39607008"), ("Esophagus", "32849002"),
                                        ("SpinalCord", "2748008"), ("tumour", "108369006"),
                                        ("Heart", "80891009"), ("GTV_p", "91723000")])
def test_anatomy_codes(name, code):
    assert dl.anatomy_code(name)[1][0] == code


def test_written_contours_fill_back_exactly_by_even_odd_rule():
    # the writer's contours (find_contours half a pixel off the voxel centres, collinear points
    # dropped) give every mask back exactly, diagonal neighbours and holes in holes included
    from skimage.draw import polygon

    rng = np.random.default_rng(0)
    for _ in range(50):
        plane = rng.random((30, 37)) < rng.uniform(0.2, 0.7)
        filled = np.zeros_like(plane)
        for contour in dl.mask_contours(plane):
            rr, cc = polygon(contour[:, 0], contour[:, 1], shape=plane.shape)
            filled[rr, cc] ^= True
        np.testing.assert_array_equal(filled, plane)


def test_even_odd_fill_is_skimage_polygon_xor():
    # the scan-line fill gives the voxels scikit-image's polygon gives, XORed per contour, for
    # random (self-intersecting, partly outside) polygons
    from skimage.draw import polygon

    rng = np.random.default_rng(1)
    for _ in range(40):
        shapes = [rng.uniform(-5, 45, size=(rng.integers(3, 12), 2)) for _ in range(rng.integers(1, 4))]
        expected = np.zeros((37, 41), bool)
        for points in shapes:
            rr, cc = polygon(points[:, 0], points[:, 1], shape=expected.shape)
            expected[rr, cc] ^= True
        np.testing.assert_array_equal(dl.fill_even_odd(shapes, expected.shape), expected)


def test_empty_seg_segments_are_kept_with_a_note(tmp_path):
    # a prediction that found one lung only: its SEG describes both, dicom2npy keeps both names
    _, _, grid = make_series(tmp_path / "ct", "oblique")
    mask = labels_volume(grid)
    only = mask.with_array(np.where(mask.array == 1, 1, 0).astype(np.uint8))
    dl.write_seg(only, dl.reference_for(only, reference(tmp_path / "ct")), tmp_path / "seg.dcm")
    result = dl.read_labels(tmp_path / "seg.dcm", grid)
    assert result.volume.meta["labels"] == {"1": "Lung_R", "2": "Lung_L", "3": "tumour"}
    np.testing.assert_array_equal(result.volume.array, only.array)
    assert any("'Lung_L', 'tumour' hold no voxel" in note for note in result.notes)


def test_continuous_index_inverts_world(oblique_volume):
    index = np.array([[0.0, 0.0, 0.0], [4.0, 6.0, 8.0], [1.5, -2.25, 3.0]])
    np.testing.assert_allclose(oblique_volume.continuous_index(oblique_volume.world(index)), index,
                               atol=1e-9)
    image = Volume(np.zeros((7, 9)), (0.7, 0.9), (10.0, -5.0, 3.0), oblique_volume.direction)
    points = image.world(index[:, 1:])
    np.testing.assert_allclose(image.continuous_index(points), np.c_[np.zeros(3), index[:, 1:]],
                               atol=1e-9)


@pytest.mark.parametrize("fmt", ["dcm-seg", "rtstruct"])
def test_single_image_round_trip(tmp_path, fmt):
    # one image (a 2D volume): its labels go through the same code
    paths, _, grid = make_series(tmp_path / "ct", "oblique", shape=(1, 40, 48))
    assert grid.ndim == 2
    mask = grid.with_array(labels_volume(Volume(np.zeros((3, 40, 48), np.uint8))).array[1])
    dl.write_dicom_labels(mask, dl.reference_for(mask, reference(tmp_path / "ct")),
                          tmp_path / "out.dcm", fmt=fmt)
    back = dl.read_labels(tmp_path / "out.dcm", grid).volume
    np.testing.assert_array_equal(back.array, mask.array)
