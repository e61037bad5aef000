"""Every file of pydicom's test data (and of the pydicom-data package) through medtool.

Each file, copied into a folder of its own, goes through dicom2npy, info, hu and anonymize with
the fuzz suite's assertions (tests/fuzz_harness.py). Same-image twins stored in different
transfer syntaxes must give equal arrays through ``medtool dicom2npy``.

Only lossless twins are compared. Lossy files (``*_J2KI.dcm`` beside ``*_UNCI.dcm``,
``JPEG2000.dcm`` beside ``JPEG2000_UNC.dcm``, the JPEG baseline and near-lossless JPEG-LS
files) hold an approximation whose decoded values depend on the decoder: the uncompressed
twin is one decoder's output, not the image, so equality is not guaranteed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medtool.formats import load_volume

from .fuzz_harness import MANIFEST_NAME
from .test_fuzz import assert_clean, run_harness

pytestmark = pytest.mark.slow     # whole workflows: left out by pytest -m 'not slow'

HAS_PYDICOM_DATA = importlib.util.find_spec("data_store") is not None
needs_pydicom_data = pytest.mark.skipif(
    not HAS_PYDICOM_DATA,
    reason="pydicom-data is not installed (pip install pydicom-data, part of the dev extra)")

#: Grayscale twins: every member must convert, to the reference's (first member's) array.
GRAYSCALE_TWINS = {
    "MR_small": ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                 "MR_small_expb.dcm", "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_jpeg_ls_lossless.dcm"],
    "emri_small": ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                   "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"],
    "rtdose": ["rtdose.dcm", "rtdose_expb.dcm", "rtdose_rle.dcm"],
    "rtdose_1frame": ["rtdose_1frame.dcm", "rtdose_expb_1frame.dcm", "rtdose_rle_1frame.dcm"],
    "693": ["693_UNCR.dcm", "693_J2KR.dcm"],
    "MR2": ["MR2_UNCR.dcm", "MR2_J2KR.dcm"],
    "RG1": ["RG1_UNCR.dcm", "RG1_J2KR.dcm"],
    "RG3": ["RG3_UNCR.dcm", "RG3_J2KR.dcm"],
}
#: DICOM SEG twins (medtool.dicomlabels): label objects whose image series pydicom does not
#: ship, so each is one error line; every member must have the same outcome.
LABEL_TWINS = {
    "liver": ["liver.dcm", "liver_expb.dcm"],
    "liver_1frame": ["liver_1frame.dcm", "liver_expb_1frame.dcm"],
}
#: Colour and palette twins, which medtool may refuse: every member must have the
#: reference's outcome (the same exit code), and equal arrays when converted.
COLOUR_TWINS = {
    "SC_rgb": ["SC_rgb.dcm", "SC_rgb_expb.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm",
               "SC_rgb_gdcm2k_uncompressed.dcm"],
    "SC_rgb_2frame": ["SC_rgb_2frame.dcm", "SC_rgb_expb_2frame.dcm", "SC_rgb_rle_2frame.dcm"],
    "SC_rgb_16bit": ["SC_rgb_16bit.dcm", "SC_rgb_expb_16bit.dcm", "SC_rgb_rle_16bit.dcm"],
    "SC_rgb_32bit": ["SC_rgb_32bit.dcm", "SC_rgb_expb_32bit.dcm", "SC_rgb_rle_32bit.dcm"],
    "SC_rgb_small_odd": ["SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm"],
    "US1": ["US1_UNCR.dcm", "US1_J2KR.dcm"],
    "OBXXXX1A": ["OBXXXX1A.dcm", "OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"],
    "OBXXXX1A_2frame": ["OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm",
                        "OBXXXX1A_rle_2frame.dcm"],
    "gdcm-US-ALOKA-16": ["gdcm-US-ALOKA-16.dcm", "gdcm-US-ALOKA-16_big.dcm"],
}


def corpus_files() -> list[Path]:
    """Every regular file of pydicom's test data, the pydicom-data store included."""
    from pydicom.data import get_testdata_files

    return sorted({Path(f) for f in get_testdata_files() if Path(f).is_file()})


def copy_corpus(files: list[Path], folder: Path) -> Path:
    """Copy each file into a folder of its own under ``folder`` (names kept: DICOMDIR stays
    DICOMDIR) and write the manifest the harness reads; ``folder``."""
    manifest = []
    for number, file in enumerate(files):
        relative = Path(f"{number:03d}") / file.name
        (folder / relative).parent.mkdir(parents=True)
        shutil.copyfile(file, folder / relative)
        source = "/".join(file.parts[-3:])
        manifest.append({"file": relative.as_posix(), "source": source, "kind": "corpus",
                         "detail": source, "size": file.stat().st_size})
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


@pytest.mark.slow
@needs_pydicom_data
def test_every_test_file_fails_cleanly_or_converts(tmp_path):
    files = corpus_files()
    folder = copy_corpus(files, tmp_path / "corpus")
    report = run_harness([folder], tmp_path / "report.json")
    assert report["counts"]["mutants"] == len(files)
    assert_clean(report)


def _twin(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def _convert(cli, source: Path, folder: Path):
    """``medtool dicom2npy`` of one copied file: (exit code, array or None, stderr)."""
    folder.mkdir(parents=True)
    copy = folder / source.name
    shutil.copyfile(source, copy)
    out = folder / "out" / f"{source.stem}.npy"
    result = cli("dicom2npy", copy, out)
    array = load_volume(out).array if result.exit_code == 0 and out.is_file() else None
    return result.exit_code, array, result.stderr


def _check_twins(cli, tmp_path: Path, names: list[str], *, must_convert: bool) -> None:
    outcomes = {name: _convert(cli, _twin(name), tmp_path / name) for name in names}
    reference, (code, expected, stderr) = names[0], outcomes[names[0]]
    if must_convert:
        failed = {n: o[2].strip() for n, o in outcomes.items() if o[0] != 0}
        assert not failed, f"twins that did not convert: {failed}"
    for name, (twin_code, array, twin_stderr) in outcomes.items():
        assert twin_code == code, (
            f"{name} exits {twin_code} ({twin_stderr.strip()}), {reference} exits {code} "
            f"({stderr.strip()})")
        if expected is not None:
            assert array.shape == expected.shape, f"{name}: {array.shape} != {expected.shape}"
            np.testing.assert_array_equal(array, expected, err_msg=f"{name} != {reference}")


@pytest.mark.parametrize("group", sorted(GRAYSCALE_TWINS))
def test_grayscale_twins_give_equal_arrays(cli, tmp_path, group):
    _check_twins(cli, tmp_path, GRAYSCALE_TWINS[group], must_convert=True)


@pytest.mark.parametrize("group", sorted(LABEL_TWINS))
def test_label_object_twins_have_one_outcome(cli, tmp_path, group):
    _check_twins(cli, tmp_path, LABEL_TWINS[group], must_convert=False)


@pytest.mark.parametrize("group", sorted(COLOUR_TWINS))
def test_colour_twins_have_one_outcome(cli, tmp_path, group):
    _check_twins(cli, tmp_path, COLOUR_TWINS[group], must_convert=False)
