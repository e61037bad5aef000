"""Stacking DICOM images into volumes: every messy case of a real export, exact results."""

import math
import shutil

import numpy as np
import pytest

from medtool.errors import InputError
from medtool.files import find_files
from medtool.series import assemble, plan, scan

from .dicom_fixtures import write_enhanced, write_series


def build(*folders, **options):
    """Scan + plan + assemble; returns ({name: volume}, plan)."""
    scanned = scan(find_files(folders, suffixes=None))
    assert not scanned.failures, scanned.failures
    result = plan(scanned.frames, roots=folders, **options)
    return {s.name: assemble(s) for s in result.stacks}, result


@pytest.fixture
def stored():
    rng = np.random.default_rng(3)
    return rng.integers(-1000, 2000, size=(6, 5, 4)).astype(np.int16)


def test_shuffled_names_sorted_by_position_with_exact_geometry(tmp_path, stored):
    write_series(tmp_path / "case_a", stored, spacing=(2.5, 0.8, 0.7), origin=(-40, -30, 100))
    volumes, _ = build(tmp_path)
    volume = volumes["case_a"]
    np.testing.assert_array_equal(volume.array, stored)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.7), abs=1e-12)
    assert volume.origin == (-40.0, -30.0, 100.0)
    assert volume.orientation == "LPS"
    assert volume.meta["units"] == "raw" and volume.meta["rescale"] == {"slope": 1.0, "intercept": -1024.0}
    assert "PatientName" not in str(volume.meta) and "FIX001" not in str(volume.meta)


def test_descending_positions_still_ascend_along_the_normal(tmp_path, stored):
    top = [(-40.0, -30.0, 100.0 - 2.5 * k) for k in range(6)]   # slice k written going down
    write_series(tmp_path / "c", stored, positions=top)
    volume = build(tmp_path / "c")[0]["c"]
    np.testing.assert_array_equal(volume.array, stored[::-1])
    assert volume.origin == (-40.0, -30.0, 100.0 - 12.5)


def test_oblique_orientation_puts_every_voxel_where_the_file_says(tmp_path, stored):
    angle = math.radians(25)
    row = (math.cos(angle), math.sin(angle), 0.0)
    column = (0.0, 0.0, -1.0)     # a coronal-ish oblique plane
    paths = write_series(tmp_path / "c", stored, row=row, column=column, spacing=(3.0, 0.9, 0.6))
    volume = build(tmp_path / "c")[0]["c"]
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path)
        k = int(np.flatnonzero([np.array_equal(ds.pixel_array, s) for s in volume.array])[0])
        # voxel (k, 2, 3) = IPP + 2 * dy * column + 3 * dx * row
        expected = (np.asarray(ds.ImagePositionPatient, float) + 2 * 0.9 * np.asarray(column)
                    + 3 * 0.6 * np.asarray(row))
        np.testing.assert_allclose(volume.world([k, 2, 3]), expected, atol=1e-9)


def test_two_series_in_one_folder_become_two_volumes(tmp_path, stored):
    write_series(tmp_path / "case", stored, extra=[{"SeriesNumber": 2}] * 6)
    write_series(tmp_path / "case", stored[:5] + 1, extra=[{"SeriesNumber": 7}] * 5, seed=1)
    volumes, _ = build(tmp_path)
    assert sorted(volumes) == ["case_series2", "case_series7"]
    np.testing.assert_array_equal(volumes["case_series7"].array, stored[:5] + 1)
    largest, _ = build(tmp_path, series="largest")
    assert list(largest) == ["case"] and largest["case"].shape[0] == 6


def test_localizers_are_dropped_with_a_note(tmp_path, stored):
    uid = "1.2.3.4.5"
    write_series(tmp_path / "c", stored, series_uid=uid)
    scout = np.zeros((1, 5, 4), np.int16)
    write_series(tmp_path / "c", scout, series_uid=uid, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                 names=["scout.dcm"], column=(0, 0, -1))
    sagittal = np.ones((2, 5, 4), np.int16)
    write_series(tmp_path / "c", sagittal, series_uid=uid, row=(0, 1, 0), column=(0, 0, -1),
                 names=["s1.dcm", "s2.dcm"])
    volumes, result = build(tmp_path / "c")
    np.testing.assert_array_equal(volumes["c"].array, stored)
    notes = " ".join(n.text for n in result.notices)
    assert "1 localizer" in notes and "2 image(s) in another orientation" in notes


def test_missing_slice_is_an_error_naming_the_gap(tmp_path, stored):
    folder = tmp_path / "c"
    paths = write_series(folder, stored, names=[f"{k}.dcm" for k in range(6)], spacing=(2.0, 1, 1),
                         origin=(0, 0, 0))
    paths[3].unlink()
    scanned = scan(find_files([folder], suffixes=None))
    result = plan(scanned.frames, roots=[folder])
    assert not result.stacks
    message = str(result.failures[0][1])
    assert "missing slices" in message and "4 mm between slices 2 and 3" in message
    assert "at 4.00 mm" in message and "--allow-gaps" in message


def test_allow_gaps_interpolates_onto_a_uniform_grid(tmp_path):
    stored = np.stack([np.full((3, 3), 10 * k, np.int16) for k in range(6)])
    folder = tmp_path / "c"
    paths = write_series(folder, stored, names=[f"{k}.dcm" for k in range(6)], spacing=(2.0, 1, 1),
                         origin=(0, 0, 0))
    paths[3].unlink()
    volumes, result = build(folder, allow_gaps=True)
    volume = volumes["c"]
    assert volume.shape == (6, 3, 3) and volume.spacing[0] == pytest.approx(2.0)
    np.testing.assert_array_equal(volume.array[:, 0, 0], [0, 10, 20, 30, 40, 50])  # 30 interpolated
    assert volume.meta["slice_positions"] == [0.0, 2.0, 4.0, 8.0, 10.0]
    assert volume.meta["interpolated_slices"] == 1
    assert any("--allow-gaps" in n.text for n in result.notices)


def test_small_position_jitter_is_not_a_gap(tmp_path, stored):
    jitter = [(0.0, 0.0, 2.0 * k + (0.02 if k % 2 else 0.0)) for k in range(6)]
    write_series(tmp_path / "c", stored, positions=jitter, spacing=(2.0, 1, 1))
    volume = build(tmp_path / "c")[0]["c"]
    assert volume.spacing[0] == pytest.approx(2.0, abs=2e-3)   # least squares, not end to end


def test_exact_duplicate_slice_is_dropped_with_a_warning(tmp_path, stored):
    paths = write_series(tmp_path / "c", stored)
    shutil.copy(paths[2], tmp_path / "c" / "copy_of_slice.dcm")
    volumes, result = build(tmp_path / "c")
    np.testing.assert_array_equal(volumes["c"].array, stored)
    assert any("1 exact duplicate" in n.text and n.level == "warning" for n in result.notices)


def test_same_position_different_pixels_splits_into_phases(tmp_path, stored):
    uid = "1.2.3.9"
    write_series(tmp_path / "c", stored, series_uid=uid,
                 extra=[{"TemporalPositionIdentifier": 1}] * 6)
    write_series(tmp_path / "c", stored + 5, series_uid=uid, seed=2,
                 extra=[{"TemporalPositionIdentifier": 2}] * 6)
    volumes, result = build(tmp_path / "c")
    assert sorted(volumes) == ["c_series3_phase1", "c_series3_phase2"]
    np.testing.assert_array_equal(volumes["c_series3_phase2"].array, stored + 5)
    assert any("multi-phase" in n.text and "TemporalPositionIdentifier" in n.text for n in result.notices)


def test_phases_nothing_tells_apart_are_refused_not_merged(tmp_path, stored):
    uid = "1.2.3.10"
    write_series(tmp_path / "c", stored, series_uid=uid)
    write_series(tmp_path / "c", stored + 5, series_uid=uid, seed=2)
    scanned = scan(find_files([tmp_path / "c"], suffixes=None))
    result = plan(scanned.frames, roots=[tmp_path / "c"])
    assert not result.stacks
    assert "6 slice position(s) hold different images" in str(result.failures[0][1])


def _tilted(tmp_path, shift_mm=1.0):
    """A straight volume, written as a tilted acquisition: slice k shifted k*shift_mm in y."""
    rng = np.random.default_rng(0)
    straight = rng.integers(0, 1000, size=(5, 12, 10)).astype(np.int16)
    tilted = np.empty_like(straight)
    positions = []
    for k in range(5):        # content of slice k moved up by k rows; its IPP moves down by k mm
        tilted[k] = np.roll(straight[k], -k, axis=0)
        positions.append((0.0, k * shift_mm, 2.0 * k))
    write_series(tmp_path / "tilt", tilted, positions=positions, spacing=(2.0, 1.0, 1.0),
                 padding=-2000, extra=[{"GantryDetectorTilt": 26.57}] * 5)
    return straight


def test_gantry_tilt_is_refused_with_no_untilt(tmp_path):
    _tilted(tmp_path)
    scanned = scan(find_files([tmp_path / "tilt"], suffixes=None))
    result = plan(scanned.frames, roots=[tmp_path / "tilt"], untilt=False)
    message = str(result.failures[0][1])
    assert "gantry tilt of 26.57 degrees" in message and "--no-untilt" in message


def test_untilt_resamples_onto_a_straight_grid_that_holds_every_pixel(tmp_path):
    """Slice k of the tilted acquisition lies k mm (k rows) further along y; the straight grid
    is 4 rows taller, starts where slice 0 does, and holds every source pixel."""
    straight = _tilted(tmp_path)
    (volume,), result = build(tmp_path / "tilt")[0].values(), build(tmp_path / "tilt")[1]
    assert volume.meta["gantry_tilt_deg"] == pytest.approx(26.565, abs=1e-3)
    assert volume.meta["untilt_added_pixels"] == {"rows": [0, 4], "columns": [0, 0]}
    assert volume.orientation == "LPS" and volume.spacing[0] == pytest.approx(2.0)
    assert volume.shape == (5, 12 + 4, 10)
    assert "widened by 4 pixel(s)" in " ".join(n.text for n in result.notices)
    # whole-pixel shifts: resampling is exact; every source row is in the output
    for k in range(5):
        tilted = np.roll(straight[k], -k, axis=0)
        np.testing.assert_array_equal(volume.array[k, k:k + 12], tilted)
        assert np.all(volume.array[k, :k] == -2000) and np.all(volume.array[k, k + 12:] == -2000)


def test_per_slice_rescale_is_kept_per_slice(tmp_path, stored):
    intercepts = [-1024, -1024, -2047, -2047, -1024, -1024]
    write_series(tmp_path / "c", stored, intercept=intercepts)
    volume = build(tmp_path / "c")[0]["c"]
    np.testing.assert_array_equal(volume.array, stored)
    assert volume.meta["rescale"]["intercept"] == intercepts and volume.meta["rescale"]["slope"] == 1.0


def test_unsigned_12_bit_with_junk_in_the_high_bits_is_masked(tmp_path):
    values = np.arange(4 * 3 * 3, dtype=np.uint16).reshape(4, 3, 3) * 100
    junk = values | np.uint16(0xF000)
    write_series(tmp_path / "c", junk, signed=False, bits_stored=12, intercept=-1024)
    volume = build(tmp_path / "c")[0]["c"]
    assert volume.array.dtype == np.uint16
    np.testing.assert_array_equal(volume.array, values)


def test_signed_12_bit_is_sign_extended(tmp_path):
    values = np.array([-2048, -1, 0, 2047], np.int16).reshape(1, 2, 2).repeat(3, axis=0)
    raw = (values.view(np.uint16) & np.uint16(0x0FFF)).view(np.int16)   # 12-bit two's complement
    write_series(tmp_path / "c", raw, signed=True, bits_stored=12)
    volume = build(tmp_path / "c")[0]["c"]
    np.testing.assert_array_equal(volume.array, values)


def test_missing_positions_fall_back_to_instance_number_with_a_warning(tmp_path, stored):
    write_series(tmp_path / "c", stored, omit=("ImagePositionPatient",),
                 extra=[{"SpacingBetweenSlices": 3.0}] * 6)
    volumes, result = build(tmp_path / "c")
    volume = volumes["c"]
    np.testing.assert_array_equal(volume.array, stored[::-1])   # InstanceNumber = count - k
    assert volume.spacing[0] == 3.0 and volume.meta["slice_spacing_source"] == "SpacingBetweenSlices"
    assert any("InstanceNumber" in n.text for n in result.notices)


def test_enhanced_multiframe_gives_the_volume(tmp_path, stored):
    write_enhanced(tmp_path / "mf" / "enhanced.dcm", stored, spacing=(2.0, 0.8, 0.7))
    volume = build(tmp_path / "mf")[0]["mf"]
    np.testing.assert_array_equal(volume.array, stored)
    assert volume.spacing == pytest.approx((2.0, 0.8, 0.7))
    assert volume.origin == (-40.0, -30.0, 100.0)
    assert volume.meta["rescale"] == {"slope": 1.0, "intercept": -1024.0}


def test_rle_compressed_series_decodes_to_the_same_pixels(tmp_path, stored):
    from pydicom.uid import RLELossless

    write_series(tmp_path / "plain", stored, seed=1)
    write_series(tmp_path / "rle", stored, transfer_syntax=RLELossless, seed=1)
    volumes, _ = build(tmp_path / "plain", tmp_path / "rle")
    np.testing.assert_array_equal(volumes["rle"].array, volumes["plain"].array)
    assert volumes["rle"].meta["dicom"]["transfer_syntax"] == "RLE Lossless"


def test_a_single_image_is_a_2d_volume_with_its_plane(tmp_path, stored):
    write_series(tmp_path / "one", stored[:1], spacing=(2.5, 0.8, 0.7))
    volume = build(tmp_path / "one")[0]["one"]
    assert volume.ndim == 2 and volume.spacing == (0.8, 0.7)
    np.testing.assert_array_equal(volume.array, stored[0])
    np.testing.assert_allclose(volume.world([1, 1]), [-40 + 0.7, -30 + 0.8, 100])


def test_chest_xray_is_2d_with_pixel_spacing_and_patient_orientation(phantom_dir):
    xray = sorted((phantom_dir / "cxr").glob("*.dcm"))[0]
    volume = build(xray)[0]
    (volume,) = volume.values()
    assert volume.ndim == 2 and volume.array.dtype == np.uint8
    import pydicom

    ds = pydicom.dcmread(xray)
    np.testing.assert_array_equal(volume.array, ds.pixel_array)
    assert volume.spacing == tuple(float(v) for v in ds.PixelSpacing)
    if list(ds.PatientOrientation) == ["L", "F"]:   # rows run to the left, columns to the feet
        np.testing.assert_allclose(volume.direction[:, 2], [1, 0, 0])
        np.testing.assert_allclose(volume.direction[:, 1], [0, 0, -1])


def test_bad_files_are_reported_and_the_rest_converts(tmp_path, stored):
    paths = write_series(tmp_path / "good", stored)
    bad = tmp_path / "bad"
    bad.mkdir()
    data = paths[0].read_bytes()
    (bad / "truncated.dcm").write_bytes(data[: len(data) - 20])
    (bad / "notes.txt").write_text("not dicom")
    scanned = scan(find_files([tmp_path], suffixes=None))
    assert [p for p, _ in scanned.skipped] == [str(bad / "notes.txt")]
    (name, error), = scanned.failures
    assert name.endswith("truncated.dcm") and "truncated" in str(error)
    result = plan(scanned.frames, roots=[tmp_path])
    assert [s.name for s in result.stacks] == ["good"]


def test_unknown_series_uid_is_a_usage_error(tmp_path, stored):
    from medtool.errors import UsageError

    write_series(tmp_path / "c", stored)
    scanned = scan(find_files([tmp_path], suffixes=None))
    with pytest.raises(UsageError, match="no series with this SeriesInstanceUID"):
        plan(scanned.frames, roots=[tmp_path], series="1.2.999")
    assert InputError  # the module's errors are importable from medtool.errors
