"""``medtool dicom2npy`` and ``medtool hu`` from the command line."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtool.formats import load_volume

from ..dicom_fixtures import write_series

PYDICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture
def stored():
    return np.random.default_rng(5).integers(-1000, 1500, size=(5, 6, 4)).astype(np.int16)


def test_converts_folders_named_after_the_case(cli, tmp_path, stored):
    write_series(tmp_path / "in" / "p1" / "ct", stored)
    write_series(tmp_path / "in" / "p2", stored + 1, seed=3)
    result = cli("dicom2npy", tmp_path / "in", tmp_path / "out", "--format", "nii.gz", "--json")
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)["written"]
    assert sorted(Path(w["output"]).relative_to(tmp_path / "out").as_posix() for w in written) == [
        "p1/ct.nii.gz", "p2.nii.gz"]
    volume = load_volume(tmp_path / "out" / "p2.nii.gz")
    np.testing.assert_array_equal(volume.array, stored + 1)
    assert volume.history[-1]["command"].startswith("medtool dicom2npy")


def test_one_output_file_and_hu(cli, tmp_path, stored):
    write_series(tmp_path / "c", stored, intercept=-1024, padding=-1000)
    result = cli("dicom2npy", tmp_path / "c", tmp_path / "c.npy", "--hu")
    assert result.exit_code == 0, result.stderr
    volume = load_volume(tmp_path / "c.npy")
    expected = np.where(stored == -1000, -1000, np.clip(stored - 1024, -1024, None))
    expected[stored - 1024 <= -2000] = -1000
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.units == "HU"


def test_hu_command_on_raw_volume_and_on_dicom_agree(cli, tmp_path, stored):
    write_series(tmp_path / "dicom" / "c", stored, intercept=[-1024, -1024, -2047, -1024, -1024])
    assert cli("dicom2npy", tmp_path / "dicom", tmp_path / "raw").exit_code == 0
    assert cli("hu", tmp_path / "raw", tmp_path / "hu_from_raw").exit_code == 0
    assert cli("hu", tmp_path / "dicom", tmp_path / "hu_from_dicom").exit_code == 0
    a = load_volume(tmp_path / "hu_from_raw" / "c.npy")
    b = load_volume(tmp_path / "hu_from_dicom" / "c.npy")
    np.testing.assert_array_equal(a.array, b.array)
    slice_hu = stored[2].astype(int) - 2047
    np.testing.assert_array_equal(a.array[2], np.where(slice_hu <= -2000, -1000,
                                                       np.clip(slice_hu, -1024, None)))
    again = cli("hu", tmp_path / "hu_from_raw" / "c.npy", tmp_path / "twice.npy")
    assert again.exit_code == 0
    np.testing.assert_array_equal(load_volume(tmp_path / "twice.npy").array, a.array)
    normalized = cli("hu", tmp_path / "raw", tmp_path / "norm", "--normalize", "--format", "nii.gz")
    assert normalized.exit_code == 0, normalized.stderr
    n = load_volume(tmp_path / "norm" / "c.nii.gz")
    assert n.array.dtype == np.float32 and 0 <= n.array.min() and n.array.max() <= 1


def test_gap_error_then_allow_gaps(cli, tmp_path, stored):
    paths = write_series(tmp_path / "c", stored, names=[f"{k}.dcm" for k in range(5)])
    paths[2].unlink()
    failed = cli("dicom2npy", tmp_path / "c", tmp_path / "out")
    assert failed.exit_code == 1
    line = failed.stderr.strip().splitlines()[0]
    assert line.startswith("error: c (series 3): missing slices") and "--allow-gaps" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    ok = cli("dicom2npy", tmp_path / "c", tmp_path / "out", "--allow-gaps")
    assert ok.exit_code == 0 and "warning:" in ok.stderr
    assert load_volume(tmp_path / "out" / "c.npy").shape == (5, 6, 4)


def test_objects_that_are_not_images_are_skipped_and_damaged_images_fail(cli, tmp_path, stored):
    """A real export mixes the series with a dose report (SR), a colour dose screen and a
    README: they are counted in one note; a damaged image is the one error."""
    write_series(tmp_path / "in" / "good", stored)
    other = tmp_path / "in" / "other"
    other.mkdir()
    (other / "report.dcm").write_bytes((PYDICOM_DATA / "reportsi.dcm").read_bytes())
    (other / "screen.dcm").write_bytes((PYDICOM_DATA / "SC_rgb_gdcm_KY.dcm").read_bytes())
    (other / "readme.txt").write_text("hello")
    clean = cli("dicom2npy", tmp_path / "in", tmp_path / "out")
    assert clean.exit_code == 0, clean.stderr
    assert "error:" not in clean.stderr
    assert ("note: skipped 3 file(s) that are not image volumes: 1 SR, 1 colour image, "
            "1 not DICOM (--verbose lists them)") in " ".join(clean.stderr.split())
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["good.npy"]
    listed = cli("dicom2npy", tmp_path / "in", tmp_path / "out2", "--verbose")
    assert f"note: skipped {other / 'report.dcm'} (SR)" in listed.stderr
    data = (PYDICOM_DATA / "CT_small.dcm").read_bytes()
    (other / "cut.dcm").write_bytes(data[:len(data) - 5000])
    damaged = cli("dicom2npy", tmp_path / "in", tmp_path / "out3")
    errors = [line for line in damaged.stderr.splitlines() if line.startswith("error:")]
    assert damaged.exit_code == 1 and len(errors) == 1 and "cut.dcm: truncated" in errors[0]
    assert (tmp_path / "out3" / "good.npy").exists()


def test_existing_output_needs_force(cli, tmp_path, stored):
    write_series(tmp_path / "c", stored)
    assert cli("dicom2npy", tmp_path / "c", tmp_path / "o").exit_code == 0
    again = cli("dicom2npy", tmp_path / "c", tmp_path / "o")
    assert again.exit_code == 1 and "--force" in again.stderr
    assert cli("dicom2npy", tmp_path / "c", tmp_path / "o", "--force").exit_code == 0


def test_hu_refuses_values_that_cannot_be_hu(cli, tmp_path):
    from medtool.formats import save_volume
    from medtool.volume import Volume

    save_volume(Volume(np.full((2, 3, 3), 500, np.uint16)), tmp_path / "v.nii.gz")
    result = cli("hu", tmp_path / "v.nii.gz", tmp_path / "o.nii.gz")
    assert result.exit_code == 1 and "all values are >= 0" in result.stderr


def test_every_pydicom_test_file_converts_or_fails_in_one_line(cli, tmp_path):
    result = cli("dicom2npy", PYDICOM_DATA, tmp_path / "out", "--json", "--allow-gaps")
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    report = json.loads(result.stdout)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    # every stderr line is an error, a note/warning, or the summaries: nothing spills over
    assert all(line.startswith(("error:", "warning:", "note:", "skipped ")) or " inputs failed" in line
               for line in lines), [l for l in lines if not l.startswith(("error:", "warning:", "note:"))]
    assert len(errors) == len(report["failed"]) >= 4           # damaged images only
    assert len(report["skipped"]) >= 100                        # SR, RT, colour, DICOMDIR, ...
    assert "note: skipped" in result.stderr and "colour image" in result.stderr
    assert len(report["written"]) >= 20 and result.exit_code == 1


def test_every_pydicom_test_file_is_accounted_for():
    from medtool.files import find_files
    from medtool.series import plan, scan

    files = {str(p) for p in find_files([PYDICOM_DATA], suffixes=None)}
    scanned = scan(sorted(files))
    result = plan(scanned.frames, roots=[PYDICOM_DATA], allow_gaps=True)
    used = {f.path for stack in result.stacks for f in stack.frames}
    dropped = {p for notice in result.notices for p in notice.paths}
    skipped = {p for p, _ in scanned.skipped}
    failed = {p for p, _ in scanned.failures}
    assert files == used | dropped | skipped | failed
    assert {"README.txt", "zipMR.gz", "DICOMDIR"} <= {Path(p).name for p in skipped}
    assert "MR_truncated.dcm" in {Path(p).name for p in failed}


@pytest.mark.parametrize("twin", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
                                  "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_padded.dcm"])
def test_compressed_and_other_encodings_match_their_uncompressed_twin(cli, tmp_path, twin):
    assert cli("dicom2npy", PYDICOM_DATA / "MR_small.dcm", tmp_path / "a.npy").exit_code == 0
    result = cli("dicom2npy", PYDICOM_DATA / twin, tmp_path / "b.npy")
    assert result.exit_code == 0, result.stderr
    a, b = load_volume(tmp_path / "a.npy"), load_volume(tmp_path / "b.npy")
    np.testing.assert_array_equal(a.array, b.array)
    assert a.same_grid(b)


@pytest.mark.parametrize("pair", [("rtdose.dcm", "rtdose_rle.dcm"), ("rtdose.dcm", "rtdose_expb.dcm")])
def test_multiframe_twins_match(cli, tmp_path, pair):
    for name, out in zip(pair, ("a.npy", "b.npy")):
        result = cli("dicom2npy", PYDICOM_DATA / name, tmp_path / out)
        assert result.exit_code == 0, result.stderr
    a, b = load_volume(tmp_path / "a.npy"), load_volume(tmp_path / "b.npy")
    np.testing.assert_array_equal(a.array, b.array)
    assert a.same_grid(b)


@pytest.mark.parametrize("name", ["liver_1frame.dcm", "liver_expb_1frame.dcm"])
def test_seg_without_its_series_is_one_error_line(cli, tmp_path, name):
    # pydicom's liver SEGs reference a CT series pydicom does not ship: a label object, not an
    # image volume (medtool.dicomlabels); --no-labels skips it as a SEG
    result = cli("dicom2npy", PYDICOM_DATA / name, tmp_path / "out")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0] and "not among the inputs" in lines[0], result.stderr
    skipped = cli("dicom2npy", PYDICOM_DATA / name, tmp_path / "out", "--no-labels", "--json")
    assert skipped.exit_code == 1 and "no DICOM image series" in skipped.stderr


def test_rtdose_multiframe_geometry_from_grid_frame_offsets(cli, tmp_path):
    assert cli("dicom2npy", PYDICOM_DATA / "rtdose.dcm", tmp_path / "d.npy").exit_code == 0
    ds = pydicom.dcmread(PYDICOM_DATA / "rtdose.dcm")
    volume = load_volume(tmp_path / "d.npy")
    assert volume.shape == (15, 10, 10)
    offsets = np.asarray(ds.GridFrameOffsetVector, float)
    assert volume.spacing[0] == pytest.approx(abs(offsets[1] - offsets[0]))


def test_phantom_nifti_equals_dcm2niix_voxel_for_voxel(cli, tmp_path, phantom_dir, dcm2niix):
    import nibabel as nib

    case = sorted((phantom_dir / "ct").iterdir())[0]
    assert cli("dicom2npy", case, tmp_path / "ours.nii.gz").exit_code == 0
    (tmp_path / "peer").mkdir()
    subprocess.run([dcm2niix, "-z", "y", "-o", tmp_path / "peer", "-f", "peer", case],
                   check=True, capture_output=True)
    ours = nib.load(tmp_path / "ours.nii.gz")
    peer = nib.load(tmp_path / "peer" / "peer.nii.gz")
    ours_c = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(ours.dataobj), ours.affine))
    peer_c = nib.as_closest_canonical(nib.Nifti1Image(peer.dataobj.get_unscaled(), peer.affine))
    np.testing.assert_array_equal(np.asarray(ours_c.dataobj), np.asarray(peer_c.dataobj))
    np.testing.assert_allclose(ours_c.affine, peer_c.affine, atol=1e-3)
    assert load_volume(tmp_path / "ours.nii.gz").meta["rescale"]["intercept"] == peer.dataobj.inter


def test_workers_give_the_same_result(cli, tmp_path, phantom_dir):
    a = cli("dicom2npy", phantom_dir / "ct", tmp_path / "a", "-j", "1")
    b = cli("dicom2npy", phantom_dir / "ct", tmp_path / "b", "-j", "2")
    assert a.exit_code == b.exit_code == 0
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b")) and len(names) == 9   # 4 x npy + json
    assert "cases.csv" in names
    for name in names:
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name))


# -- hardening: a bad file is one line for that file, and the batch goes on -----------------------

def _edited(path: Path, source: str = "CT_small.dcm", **values) -> Path:
    """A copy of one of pydicom's test files with header values set (as text where given)."""
    ds = pydicom.dcmread(PYDICOM_DATA / source)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_damaged_rle_fails_its_file_and_the_good_series_is_written(cli, tmp_path, stored):
    """RLE data whose Rows/Columns are too small made pylibjpeg-rle panic (a BaseException that
    ended the batch); the planes' run lengths now show it before any decoder runs."""
    write_series(tmp_path / "in" / "good", stored)
    bad = _edited(tmp_path / "in" / "rle" / "f.dcm", "MR_small_RLE.dcm", Rows=3, Columns=7)
    result = cli("dicom2npy", tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    (error,) = _errors(result)
    assert error.startswith(f"error: {bad}: the RLE data holds 4097 pixels a plane")
    assert "Rows x Columns is 3 x 7 = 21" in error            # 64 x 64 and a pad byte
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cases.csv", "good.json",
                                                                    "good.npy"]
    assert f"1 of 2 inputs failed: {bad}" in " ".join(result.stderr.split())


@pytest.mark.parametrize("values, message", [
    ({"RescaleSlope": "NaN"}, "RescaleSlope 'NaN' is not a usable number"),
    ({"RescaleSlope": "inf"}, "RescaleSlope 'inf' is not a usable number"),
    ({"RescaleSlope": "0"}, "RescaleSlope '0' is not a usable number"),
    ({"PixelSpacing": ["1e308", "1e308"]}, "cannot be right"),
    ({"Rows": 0, "Columns": 0}, "0 x 0 pixels"),
    ({"Rows": 32, "Columns": 32}, "the header does not describe the data"),
    ({"SamplesPerPixel": 0}, "SamplesPerPixel is 0"),
    ({"BitsStored": 20}, "BitsStored 20 / HighBit 15 do not fit BitsAllocated 16"),
    ({"HighBit": 23}, "HighBit 23 do not fit BitsAllocated 16"),
    ({"ImageOrientationPatient": [0, 0, 0, 0, 0, 0]}, "is not two unit vectors at right angles"),
    ({"ImageOrientationPatient": [-2.5] * 6}, "is not two unit vectors at right angles"),
    ({"ImagePositionPatient": [1e308, 0, 0]}, "ImagePositionPatient"),
    ({"RescaleIntercept": "1e308"}, "RescaleIntercept '1e308' is not a usable number"),
    ({"NumberOfFrames": 100000}, "truncated: pixel data has"),
])
def test_values_that_cannot_be_right_are_refused_in_one_line(cli, tmp_path, values, message):
    bad = _edited(tmp_path / "in" / "f.dcm", **values)
    before = bad.read_bytes()
    result = cli("dicom2npy", bad, tmp_path / "out")
    (error,) = _errors(result)
    assert result.exit_code == 1 and error.startswith(f"error: {bad}: ") and message in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert bad.read_bytes() == before


def test_a_decoder_that_panics_is_passed_over_for_one_that_says_why(monkeypatch):
    """pyo3's PanicException is a BaseException: it must not end the batch, and the line names
    what the other decoder found."""
    import pydicom.pixels

    from medtool.dicom import read_frames, read_pixels
    from medtool.errors import InputError

    class Panic(BaseException):
        pass

    frames = read_frames(PYDICOM_DATA / "MR_small_RLE.dcm")
    calls = []

    def decoders(ds, *, decoding_plugin):
        calls.append(decoding_plugin)
        if decoding_plugin == "pylibjpeg":
            raise Panic("index out of bounds")
        raise ValueError("The amount of decoded RLE segment data doesn't match")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", decoders)
    with pytest.raises(InputError, match="decoded RLE segment data doesn't match"):
        read_pixels(frames)
    assert sorted(calls) == ["pydicom", "pylibjpeg"]

    def panics(ds, *, decoding_plugin):
        raise Panic("index out of bounds")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", panics)
    with pytest.raises(InputError, match="the decoder stopped on damaged data"):
        read_pixels(frames)


@pytest.mark.parametrize("source, values, message", [
    ("MR_small_RLE.dcm", {"NumberOfFrames": 100000}, "holds 1 fragment(s)"),
    ("JPEG2000.dcm", {"NumberOfFrames": 100000}, "holds 1 fragment(s)"),
    ("MR_small_RLE.dcm", {"Rows": 65535, "Columns": 65535}, "cannot come from"),
    ("JPEG2000.dcm", {"Rows": 65535, "Columns": 65535}, "cannot come from"),
])
def test_sizes_from_the_header_are_checked_before_allocating(cli, tmp_path, source, values, message):
    """A 13 KB file declaring 65535 x 65535 (8 GiB) or 100000 frames is refused at once."""
    import resource
    import time

    bad = _edited(tmp_path / "f.dcm", source, **values)
    start = time.perf_counter()
    result = cli("dicom2npy", bad, tmp_path / "out.npy")
    assert time.perf_counter() - start < 5
    (error,) = _errors(result)
    assert result.exit_code == 1 and message in error
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20   # KiB: under 4 GiB


def test_a_zero_pixel_spacing_is_unknown_spacing_with_a_warning(cli, tmp_path):
    """Real CR exports (pydicom-data's RG1_*) write PixelSpacing 0\\0."""
    odd = _edited(tmp_path / "f.dcm", PixelSpacing=["0", "0"])
    result = cli("dicom2npy", odd, tmp_path / "out.npy")
    assert result.exit_code == 0, result.stderr
    assert "PixelSpacing 0/0 is not a spacing; using 1 mm pixels" in result.stderr
    volume = load_volume(tmp_path / "out.npy")
    assert volume.spacing[-2:] == (1.0, 1.0)
    assert volume.meta["pixel_spacing_source"] == "unknown"


def test_a_nan_slice_thickness_is_left_out_of_the_metadata(cli, tmp_path):
    odd = _edited(tmp_path / "f.dcm", SliceThickness="NaN")
    assert cli("dicom2npy", odd, tmp_path / "out.npy").exit_code == 0
    assert "slice_thickness" not in load_volume(tmp_path / "out.npy").meta["dicom"]


def test_file_names_with_brackets_are_printed_as_they_are(cli, tmp_path):
    folder = tmp_path / "a[/]b"
    bad = folder / "[red]scan.dcm"
    folder.mkdir(parents=True)
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    for command in (("dicom2npy", bad, tmp_path / "o"), ("anonymize", bad, tmp_path / "a",
                                                         "--salt", "s")):
        result = cli(*command)
        (error,) = _errors(result)
        assert result.exit_code == 1 and error.startswith(f"error: {bad}: ")


def test_a_file_named_on_its_own_names_its_volume(cli, tmp_path):
    """Two files of one folder named directly: out/CT_small.npy and out/MR_small.npy, not two
    outputs that both want the folder's name."""
    result = cli("dicom2npy", PYDICOM_DATA / "CT_small.dcm", PYDICOM_DATA / "MR_small.dcm",
                 tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["CT_small.npy",
                                                                       "MR_small.npy"]


def test_folder_links_inside_an_input_are_followed_once(cli, tmp_path, stored):
    write_series(tmp_path / "store" / "case", stored)
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "store" / "case", tmp_path / "in" / "linked")
    os.symlink(tmp_path / "in", tmp_path / "in" / "loop")           # a loop ends
    result = cli("dicom2npy", tmp_path / "in", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["linked.npy"]


def test_a_link_inside_the_output_folder_is_not_followed(cli, tmp_path, stored):
    write_series(tmp_path / "in" / "case", stored)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "sub")
    write_series(tmp_path / "in" / "sub" / "case", stored, seed=1)
    result = cli("dicom2npy", tmp_path / "in", tmp_path / "out")
    (error,) = _errors(result)
    assert result.exit_code == 1 and "outside" in error
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert (tmp_path / "out" / "case.npy").exists()


@pytest.mark.parametrize("command", ["dicom2npy", "hu", "anonymize"])
def test_an_existing_output_is_one_rule_for_every_command(cli, tmp_path, stored, command):
    """Exit 1, one line naming the output, the summary names the inputs; --force overwrites."""
    write_series(tmp_path / "in" / "a", stored)
    write_series(tmp_path / "in" / "b", stored + 1, seed=1)
    extra = ("--salt", "s") if command == "anonymize" else ()
    assert cli(command, tmp_path / "in", tmp_path / "out", *extra).exit_code == 0
    again = cli(command, tmp_path / "in", tmp_path / "out", *extra)
    assert again.exit_code == 1
    assert all("output exists already" in line and "--force" in line for line in _errors(again))
    summary = " ".join(again.stderr.split())
    assert str(tmp_path / "in") in summary.split("inputs failed:")[-1]
    assert str(tmp_path / "out") not in summary.split("inputs failed:")[-1]
    assert cli(command, tmp_path / "in", tmp_path / "out", *extra, "--force").exit_code == 0


# -- case names users choose, and the cases.csv index ---------------------------------------------

def test_name_template_names_cases_from_dicom_keywords(cli, tmp_path, stored):
    extra = [{"PatientName": "DOE^JOHN", "AccessionNumber": "A/17"}] * len(stored)
    write_series(tmp_path / "in" / "2.000000-CHEST4.24mmB31f-28774", stored, extra=extra)
    result = cli("dicom2npy", tmp_path / "in", tmp_path / "out",
                 "--name", "{PatientID}_{PatientName}_{SeriesNumber:03}_{AccessionNumber}_{StudyDate}")
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").glob("*.npy")] == [
        "FIX001_DOE_JOHN_003_A_17_NA.npy"]                     # ^ and / made safe, no date: NA
    bad = cli("dicom2npy", tmp_path / "in", tmp_path / "o2", "--name", "{PatientId}")
    assert bad.exit_code == 2 and "'PatientId' is not a DICOM keyword" in bad.stderr


def test_two_series_given_one_name_are_an_error_unless_largest(cli, tmp_path, stored):
    write_series(tmp_path / "in" / "thin", stored)
    write_series(tmp_path / "in" / "thick", stored[:3], seed=1)
    result = cli("dicom2npy", tmp_path / "in", tmp_path / "out", "--name", "{PatientID}")
    (error,) = _errors(result)
    assert result.exit_code == 1 and "gives 'FIX001' to 2 series" in error
    assert "--series largest" in error and not list((tmp_path / "out").glob("*.npy"))
    largest = cli("dicom2npy", tmp_path / "in", tmp_path / "out", "--name", "{PatientID}",
                  "--series", "largest")
    assert largest.exit_code == 0, largest.stderr
    assert load_volume(tmp_path / "out" / "FIX001.npy").shape == stored.shape


def test_cases_csv_indexes_every_conversion_into_a_folder(cli, tmp_path, stored):
    import csv

    from medtool.ingest import CASES_COLUMNS

    write_series(tmp_path / "a" / "p1", stored)
    write_series(tmp_path / "b" / "p2", stored, seed=1)
    assert cli("dicom2npy", tmp_path / "a", tmp_path / "out").exit_code == 0
    result = cli("dicom2npy", tmp_path / "b" / "p2", tmp_path / "out" / "p2.nii.gz")
    assert result.exit_code == 0 and "cases.csv" in result.stderr and "identifying" in result.stderr
    with open(tmp_path / "out" / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CASES_COLUMNS
    assert [(r["case_id"], r["output"], r["source"]) for r in rows] == [
        ("p1", "p1.npy", str(tmp_path / "a" / "p1")),
        ("p2", "p2.nii.gz", str(tmp_path / "b" / "p2"))]
    first = pydicom.dcmread(next((tmp_path / "a" / "p1").iterdir()))
    assert rows[0]["PatientID"] == "FIX001" and rows[0]["SeriesInstanceUID"] == first.SeriesInstanceUID
    assert rows[0]["StudyInstanceUID"] == first.StudyInstanceUID and rows[0]["files"] == "5"
    assert rows[0]["Modality"] == "CT" and rows[0]["SeriesNumber"] == "3"
    sidecar = (tmp_path / "out" / "p1.json").read_text()
    assert "FIX001" not in sidecar                                  # identity stays in cases.csv
    hu = cli("hu", tmp_path / "out", tmp_path / "hu")              # the index is no input
    assert hu.exit_code == 0 and "skipped" not in hu.stderr


def test_cases_csv_survives_parallel_case_by_case_conversions(tmp_path, stored):
    """make -j converting one case per process into one folder: every row arrives."""
    import csv
    import subprocess
    import sys

    for k in range(6):
        write_series(tmp_path / "in" / f"case_{k}", stored, seed=k)
    processes = [subprocess.Popen([sys.executable, "-m", "medtool", "dicom2npy",
                                   str(tmp_path / "in" / f"case_{k}"),
                                   str(tmp_path / "out" / f"case_{k}.npy"), "-q"])
                 for k in range(6)]
    assert [p.wait(timeout=120) for p in processes] == [0] * 6
    with open(tmp_path / "out" / "cases.csv", newline="") as handle:
        assert [r["case_id"] for r in csv.DictReader(handle)] == [f"case_{k}" for k in range(6)]


# -- a real export: clutter, tilt, uneven spacing, the TCIA tree ---------------------------------

@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """Two phantom studies laid out as a TCIA download, with everything a scanner export holds
    besides the series: a localizer, an RGB dose screen, a dose SR, a second kernel, a
    gantry-tilted series and one with uneven slice spacing."""
    from medtool.phantom import write_dataset

    out = tmp_path_factory.mktemp("export") / "data"
    write_dataset(out, cases=2, seed=43, shape=64, cxr=0, layout="tcia", clutter=True)
    return out


def test_a_real_export_converts_with_exit_0_and_only_its_image_series(cli, tmp_path, export):
    result = cli("dicom2npy", export / "ct", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    assert "error:" not in result.stderr
    written = [Path(w["output"]).relative_to(tmp_path / "out")
               for w in json.loads(result.stdout)["written"]]
    kinds = sorted(path.name.split("-")[0] for path in written)     # <series number>.000000
    assert kinds == sorted(["2.000000", "3.000000", "4.000000", "5.000000"] * 2)
    stderr = " ".join(result.stderr.split())
    assert stderr.count("dropped 1 localizer image(s)") == 2
    assert "note: skipped 4 file(s) that are not image volumes: 2 SR, 2 colour image" in stderr
    assert stderr.count("gantry tilt of") == 2 and stderr.count("resampled by default") == 2
    patients = sorted(p.name for p in (export / "ct").iterdir())
    assert sorted(path.parts[0] for path in written) == sorted(patients * 4)


def test_the_untilted_grid_holds_every_source_pixel_and_matches_it(cli, tmp_path):
    """Every source pixel centre of the tilted series lies inside the straight grid, and the
    volume there (cubic spline) equals the source within 2 HU (median; edges blur a little).
    At 160 pixels (2.4 mm, near a clinical 512 at 0.7 mm in what the pixels resolve); at 64
    the phantom's anatomy is too coarse for any resampling to come back within 2 HU."""
    from scipy import ndimage

    from medtool.phantom import write_dataset

    write_dataset(tmp_path / "data", cases=1, seed=43, shape=160, cxr=0, layout="tcia",
                  clutter=True)
    folder = next((tmp_path / "data" / "ct").glob("*/*/4.000000-*"))
    result = cli("dicom2npy", folder, tmp_path / "tilt.npy", "--hu")
    assert result.exit_code == 0, result.stderr
    volume = load_volume(tmp_path / "tilt.npy")
    assert volume.meta["untilted"] and abs(volume.meta["gantry_tilt_deg"]) >= 12
    assert sum(volume.meta["untilt_added_pixels"]["rows"]) > 0
    inverse = np.linalg.inv(volume.affine)
    differences, outside = [], 0
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        inside = ds.pixel_array != ds.PixelPaddingValue
        rows, columns = np.nonzero(np.ones(hu.shape, bool))
        cosines = np.asarray(ds.ImageOrientationPatient, float)
        dy, dx = map(float, ds.PixelSpacing)
        lps = (np.asarray(ds.ImagePositionPatient, float) + np.outer(columns * dx, cosines[:3])
               + np.outer(rows * dy, cosines[3:]))
        index = (np.c_[lps, np.ones(len(lps))] @ inverse.T)[:, :3]
        within = np.all((index > -1e-3) & (index < np.asarray(volume.shape) - 1 + 1e-3), axis=1)
        outside += int((~within).sum())
        values = ndimage.map_coordinates(volume.array.astype(np.float32), index.T, order=3,
                                         mode="nearest")
        keep = inside.ravel() & within
        differences.append(np.abs(values - hu.ravel())[keep])
    differences = np.concatenate(differences)
    assert outside == 0
    assert np.median(differences) <= 2.0, np.percentile(differences, [50, 90, 99])
