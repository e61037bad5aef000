"""Writing small DICOM series with pydicom, every attribute under the test's control."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _per_slice(value: Any, count: int) -> list:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) == count:
        return list(value)
    return [value] * count


def base_dataset(*, modality: str = "CT", series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PatientName = "TEST^FIXTURE"
    ds.PatientID = "FIX001"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=["frame"])
    ds.Modality = modality
    ds.SeriesNumber = 3
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _pixels(ds: Dataset, image: np.ndarray, *, signed: bool, bits_stored: int) -> None:
    ds.Rows, ds.Columns = image.shape[-2:]
    bits = image.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(image).tobytes()


def _save(ds: Dataset, path: Path, sop_class: str, transfer_syntax: str) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = getattr(ds, "SOPInstanceUID", None) or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)


def write_series(folder: Path, stored: np.ndarray, *, spacing=(2.5, 0.8, 0.7),
                 origin=(-40.0, -30.0, 100.0), row=(1.0, 0.0, 0.0), column=(0.0, 1.0, 0.0),
                 positions: Sequence[Sequence[float]] | None = None, slope: Any = 1.0,
                 intercept: Any = -1024.0, signed: bool | None = None, bits_stored: int = 0,
                 series_uid: str | None = None, modality: str = "CT", padding: int | None = None,
                 padding_limit: int | None = None, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                 extra: Sequence[dict] | None = None, names: Sequence[str] | None = None,
                 seed: int = 0, transfer_syntax: str = ExplicitVRLittleEndian,
                 omit: Sequence[str] = (), rescale: bool = True) -> list[Path]:
    """Write ``stored`` (z, y, x) as one file per slice; slice k at ``origin + k*dz*normal``.

    File names are shuffled (``f_<random>.dcm``) unless ``names`` are given. ``positions``
    overrides the computed ImagePositionPatient of each slice; ``extra`` adds attributes per
    slice; ``omit`` removes attributes from every file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    count = stored.shape[0]
    row, column = np.asarray(row, float), np.asarray(column, float)
    normal = np.cross(row, column)
    if positions is None:
        positions = [np.asarray(origin) + k * spacing[0] * normal for k in range(count)]
    if signed is None:
        signed = stored.dtype.kind == "i"
    slopes, intercepts = _per_slice(slope, count), _per_slice(intercept, count)
    extra = extra or [{}] * count
    rng = np.random.default_rng(seed)
    if names is None:
        names = [f"f_{n:05d}.dcm" for n in rng.permutation(10000)[:count]]
    uid = series_uid or generate_uid()
    paths = []
    for k in range(count):
        ds = base_dataset(modality=modality, series_uid=uid)
        ds.ImageType = list(image_type)
        ds.InstanceNumber = count - k
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [*map(float, row), *map(float, column)]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = 5.0   # deliberately not the spacing
        if rescale:
            ds.RescaleSlope = slopes[k]
            ds.RescaleIntercept = intercepts[k]
        if padding is not None:
            ds.PixelPaddingValue = padding
            if padding_limit is not None:
                ds.PixelPaddingRangeLimit = padding_limit
        for key, value in extra[k].items():
            setattr(ds, key, value)
        _pixels(ds, stored[k], signed=signed, bits_stored=bits_stored)
        for key in omit:
            if key in ds:
                delattr(ds, key)
        path = folder / names[k]
        _save(ds, path, CTImageStorage, transfer_syntax)
        paths.append(path)
    return paths


def write_enhanced(path: Path, stored: np.ndarray, *, spacing=(2.0, 0.8, 0.7),
                   origin=(-40.0, -30.0, 100.0), slope=1.0, intercept=-1024.0,
                   order: Sequence[int] | None = None) -> None:
    """An enhanced CT multi-frame file: geometry and rescale in functional groups.

    Frames are written in ``order`` (default reversed), so the file order is not slice order.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    count = stored.shape[0]
    order = list(order) if order is not None else list(range(count))[::-1]
    ds = base_dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.NumberOfFrames = count
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[2]]
    measures.SliceThickness = spacing[0]
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = intercept
    transform.RescaleType = "HU"
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        item.PlanePositionSequence = DicomSequence([position])
        content = Dataset()
        content.InStackPositionNumber = k + 1
        item.FrameContentSequence = DicomSequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _pixels(ds, stored[order], signed=True, bits_stored=16)
    _save(ds, path, ENHANCED_CT, ExplicitVRLittleEndian)


RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"


def voxel_lps(paths: Sequence[Path], index: Sequence[float]) -> np.ndarray:
    """LPS (mm) of voxel ``(k, r, c)`` straight from the DICOM headers (PS3.3 C.7.6.2.1.1):
    the image position of slice ``k`` (slices sorted along the normal) plus ``c`` column steps
    along the row cosine and ``r`` row steps along the column cosine. Independent of medtool's
    geometry code."""
    import pydicom

    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    cosines = np.asarray(headers[0].ImageOrientationPatient, float)
    row, column = cosines[:3], cosines[3:]
    normal = np.cross(row, column)
    headers.sort(key=lambda d: float(np.asarray(d.ImagePositionPatient, float) @ normal))
    k, r, c = index
    base = np.asarray(headers[int(k)].ImagePositionPatient, float)
    dy, dx = (float(v) for v in headers[0].PixelSpacing)
    return base + c * dx * row + r * dy * column


def write_structure_set(path: Path, image_paths: Sequence[Path],
                        rois: Sequence[tuple[str, Sequence[np.ndarray]]], *,
                        geometric_type: str = "CLOSED_PLANAR",
                        series_uid: str | None = None) -> Dataset:
    """A minimal RT Structure Set written with pydicom alone (not medtool's writer): one ROI
    per ``(name, contours)``, each contour an (N, 3) array of LPS points, referencing the
    images at ``image_paths``. Returns the data set (tests damage it and save again)."""
    import pydicom

    images = [pydicom.dcmread(p, stop_before_pixels=True) for p in image_paths]
    first = images[0]
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID"):
        setattr(ds, keyword, getattr(first, keyword))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "TEST"
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series_uid or first.SeriesInstanceUID
    contour_images = []
    for image in images:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        contour_images.append(item)
    ref_series.ContourImageSequence = DicomSequence(contour_images)
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref_study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    ref_frame.RTReferencedStudySequence = DicomSequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref_frame])
    structure_rois, roi_contours = [], []
    for number, (name, contours) in enumerate(rois, 1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = name
        structure_rois.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        items = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = geometric_type
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [round(float(v), 4) for v in np.asarray(points).ravel()]
            items.append(contour)
        if items:
            item.ContourSequence = DicomSequence(items)
        roi_contours.append(item)
    ds.StructureSetROISequence = DicomSequence(structure_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    save_structure_set(ds, path)
    return ds


def save_structure_set(ds: Dataset, path: Path) -> None:
    """Save an RT Structure Set data set as a Part 10 file."""
    ds.SOPInstanceUID = getattr(ds, "SOPInstanceUID", None) or generate_uid()
    _save(ds, path, RT_STRUCTURE_SET, ExplicitVRLittleEndian)
