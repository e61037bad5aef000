"""NRRD, 3D Slicer's .seg.nrrd and MetaImage (.mha, .mhd): round trips keep arrays and geometry
exactly, and SimpleITK (ITK's own readers and writers) agrees with medtool both ways, on an
oblique grid and on a flipped one."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medtool.errors import InputError
from medtool.formats import load_volume, save_volume
from medtool.volume import Volume, direction_from_cosines

sitk = pytest.importorskip("SimpleITK")

SUFFIXES = (".nrrd", ".mha", ".mhd")


def _oblique():
    rng = np.random.default_rng(0)
    a, b = np.radians(10.0), np.radians(6.0)                            # a tilted, rotated grid
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rotation = rx @ rz
    direction = direction_from_cosines(rotation[:, 0], rotation[:, 1])
    return Volume(rng.integers(-1024, 2000, (5, 7, 9)).astype(np.int16), spacing=(2.5, 0.7, 0.75),
                  origin=(-120.5, 33.25, 410.0), direction=direction, meta={"units": "HU", "modality": "CT"})


def _flipped():
    direction = np.column_stack([[0, 0, -1.0], [0, -1.0, 0], [-1.0, 0, 0]])   # every axis reversed
    return Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), spacing=(3.0, 1.5, 1.25),
                  origin=(10.0, -20.0, 30.0), direction=direction)


def _as_sitk(volume):
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(volume.direction[:, ::-1].ravel()))
    return image


def _same(volume, image):
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.array)
    np.testing.assert_allclose(image.GetSpacing(), volume.spacing[::-1], atol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-9)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), volume.direction[:, ::-1], atol=1e-9)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("make", [_oblique, _flipped])
def test_round_trip_is_exact_and_itk_reads_it_the_same(tmp_path, suffix, make):
    volume = make()
    path = save_volume(volume, tmp_path / f"v{suffix}")
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype and back.spacing == volume.spacing
    assert back.origin == volume.origin and np.array_equal(back.direction, volume.direction)
    assert back.meta == volume.meta
    _same(volume, sitk.ReadImage(str(path)))


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("make", [_oblique, _flipped])
def test_files_itk_writes_read_with_itk_geometry(tmp_path, suffix, make):
    volume = make()
    sitk.WriteImage(_as_sitk(volume), str(tmp_path / f"itk{suffix}"), useCompression=suffix != ".mhd")
    read = load_volume(tmp_path / f"itk{suffix}")
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.spacing, volume.spacing, atol=1e-9)
    np.testing.assert_allclose(read.origin, volume.origin, atol=1e-6)
    np.testing.assert_allclose(read.direction, volume.direction, atol=1e-6)
    assert read.same_grid(volume, atol=1e-5)


def test_ras_nrrd_of_another_tool_is_turned_into_lps(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)            # (z, y, x)
    header = ("NRRD0004\ntype: uchar\ndimension: 3\nspace: right-anterior-superior\nsizes: 4 3 2\n"
              "space directions: (-0.5,0,0) (0,-0.5,0) (0,0,2)\nkinds: domain domain domain\n"
              "endian: little\nencoding: gzip\nspace origin: (100,50,-30)\n\n")
    (tmp_path / "ras.nrrd").write_bytes(header.encode() + gzip.compress(data.tobytes()))
    volume = load_volume(tmp_path / "ras.nrrd")
    np.testing.assert_array_equal(volume.array, data)
    # RAS (-0.5, 0, 0) is LPS (+0.5, 0, 0): x runs left, as LPS +x; the origin flips sign in x, y
    assert volume.origin == (-100.0, -50.0, -30.0) and volume.spacing == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(volume.direction, np.eye(3)[:, ::-1])
    _same(volume, sitk.ReadImage(str(tmp_path / "ras.nrrd")))


def test_slicer_segmentation_names_its_labels_and_overlapping_layers_are_refused(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1:3, 1:4] = 1
    labels[2, 2, 2] = 4
    volume = Volume(labels, spacing=(2.0, 1.0, 1.0), meta={"units": "label", "labels": {"1": "right lung", "4": "tumour"}})
    save_volume(volume, tmp_path / "s.seg.nrrd")
    text = (tmp_path / "s.seg.nrrd").read_bytes().split(b"\n\n")[0].decode()
    assert "Segment1_Name:=tumour" in text and "Segment1_LabelValue:=4" in text
    back = load_volume(tmp_path / "s.seg.nrrd")
    np.testing.assert_array_equal(back.array, labels)
    (tmp_path / "plain.seg.nrrd").write_bytes(text.split("medtool:=")[0].encode() + b"\n"
                                              + gzip.compress(labels.tobytes()))
    assert load_volume(tmp_path / "plain.seg.nrrd").meta["labels"] == {"1": "right lung", "4": "tumour"}
    layered = ("NRRD0004\ntype: uchar\ndimension: 4\nspace: left-posterior-superior\nsizes: 2 5 4 3\n"
               "space directions: none (1,0,0) (0,1,0) (0,0,2)\nkinds: list domain domain domain\n"
               "encoding: raw\nspace origin: (0,0,0)\nSegment0_Name:=a\nSegment1_Name:=b\n\n")
    (tmp_path / "layers.seg.nrrd").write_bytes(layered.encode() + bytes(2 * 60))
    with pytest.raises(InputError, match="2 overlapping segment layers"):
        load_volume(tmp_path / "layers.seg.nrrd")


def test_damaged_files_are_one_error(tmp_path):
    save_volume(_oblique(), tmp_path / "v.mha")
    data = (tmp_path / "v.mha").read_bytes()
    (tmp_path / "cut.mha").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mha"):
        load_volume(tmp_path / "cut.mha")
    (tmp_path / "no.nrrd").write_bytes(b"P5 not an nrrd")
    with pytest.raises(InputError, match="not an NRRD file"):
        load_volume(tmp_path / "no.nrrd")
    save_volume(_oblique(), tmp_path / "v.mhd")
    (tmp_path / "v.raw").unlink()
    with pytest.raises(InputError, match="pixel file is missing"):
        load_volume(tmp_path / "v.mhd")
