"""Writing phantom data as DICOM files that look like a hospital export.

CT: one file per slice, Explicit VR Little Endian, signed 16-bit with RescaleIntercept -1024,
out-of-field pixels stored as -2000 (PixelPaddingValue), instance 1 at the top (head-first
scan), file names not in slice order. Chest X-rays: 8-bit CR images as in the RSNA Pneumonia
Detection Challenge. Both carry the fake identity (names, IDs, dates, institution, staff,
a private block and a nested sequence) that ``medtool anonymize`` must remove.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ComputedRadiographyImageStorage, ExplicitVRLittleEndian, \
    generate_uid

from .. import __version__
from ..hounsfield import CT_PADDING_STORED, CT_RESCALE_INTERCEPT
from .ct import CTCase
from .identity import Person, Site, age_string

#: Implementation identifiers written into the file meta information.
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1431.1"  # medtool phantom writer
IMPLEMENTATION_VERSION = f"MEDTOOL_{__version__}"[:16]
_INT16 = np.iinfo(np.int16)
#: Size (rows, columns) of the RGB dose screen of ``--clutter``.
DOSE_SCREEN_SIZE = (240, 320)


@dataclass
class Study:
    """One imaging study of a patient: when, and its identifiers."""

    date: dt.date
    time: str
    accession: str
    study_id: str
    description: str
    uid_seed: str

    def uid(self, *parts: object) -> str:
        """A deterministic UID for ``parts`` of this study (same seed, same UID)."""
        return generate_uid(entropy_srcs=[self.uid_seed, *map(str, parts)])


def stored_ct_values(hu: np.ndarray) -> np.ndarray:
    """HU (NaN outside the field of view) to the stored int16 values of the DICOM pixels."""
    stored = np.rint(hu - CT_RESCALE_INTERCEPT)
    stored = np.clip(np.nan_to_num(stored, nan=CT_PADDING_STORED), _INT16.min, _INT16.max)
    return stored.astype(np.int16)


def _patient_module(ds: Dataset, person: Person, study: Study) -> None:
    ds.PatientName = person.name
    ds.PatientID = person.patient_id
    ds.IssuerOfPatientID = "HOSPITAL MRN"
    ds.OtherPatientIDs = person.other_ids
    ds.PatientBirthDate = person.birth_date.strftime("%Y%m%d")
    ds.PatientBirthTime = person.birth_time
    ds.PatientSex = person.sex
    ds.PatientAge = age_string(person.birth_date, study.date)
    ds.PatientSize = person.height_m
    ds.PatientWeight = person.weight_kg
    ds.PatientAddress = person.address
    ds.PatientTelephoneNumbers = person.phone
    ds.AdditionalPatientHistory = f"Smoker. Follow-up of {person.name.split('^')[0].title()} family history."


def _study_module(ds: Dataset, site: Site, study: Study, modality: str) -> None:
    date, time = study.date.strftime("%Y%m%d"), study.time
    ds.StudyInstanceUID = study.uid("study")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = site.referring
    ds.PerformingPhysicianName = site.performing
    ds.OperatorsName = site.operator
    ds.InstitutionName = site.institution
    ds.InstitutionAddress = site.address
    ds.InstitutionalDepartmentName = site.department
    ds.StationName = site.station
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model
    ds.DeviceSerialNumber = site.device_serial
    ds.SoftwareVersions = site.software
    ds.Modality = modality
    request = Dataset()
    request.RequestedProcedureID = f"RP{study.accession}"
    request.ScheduledProcedureStepID = f"SPS{study.accession}"
    request.RequestedProcedureDescription = study.description
    request.StudyInstanceUID = ds.StudyInstanceUID
    ds.RequestAttributesSequence = Sequence([request])
    block = ds.private_block(0x0009, site.private_creator, create=True)
    block.add_new(0x01, "LO", f"{ds.PatientName}")
    block.add_new(0x02, "LO", site.station)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def write_ct_series(folder: Path, case: CTCase, *, person: Person, site: Site, study: Study,
                    rng: np.random.Generator, series_number: int = 2, key: str = "ct",
                    kernel: str | None = None, hu: np.ndarray | None = None,
                    z_positions: np.ndarray | None = None, tilt_deg: float = 0.0,
                    description: str | None = None, names: str = "random",
                    prefix: str = "IM") -> list[Path]:
    """Write ``case`` as one DICOM file per slice into ``folder`` (which must exist).

    Slices are numbered from the top (instance 1 = most superior, as a head-first scan); file
    names are random (``IM-NNNN.dcm``, not in slice order) or, with ``names="tcia"``, TCIA's
    ``1-NNN.dcm`` in instance order. Another series of the same study takes its own
    ``series_number`` and ``key`` (its UIDs), ``kernel`` and ``hu`` (a second
    reconstruction); ``z_positions`` (mm, one per slice of ``hu``) give uneven spacing;
    ``tilt_deg`` writes the slices as a gantry-tilted acquisition (image planes tilted about
    the x axis, positions advancing along z as the table moves; ``hu`` must then hold the
    values sampled on those planes). Returns the paths written.
    """
    hu = case.hu if hu is None else hu
    n_slices = hu.shape[0]
    x0, y0, z0 = case.origin
    zs = z0 + np.arange(n_slices) * case.spacing[0] if z_positions is None else np.asarray(z_positions)
    ds = _ct_series_header(case, hu.shape[1:], person=person, site=site, study=study, rng=rng,
                           series_number=series_number, key=key, kernel=kernel or site.kernel,
                           even=z_positions is None, tilt_deg=tilt_deg, description=description)
    stored = stored_ct_values(hu)
    order = rng.permutation(n_slices) + 1
    written = []
    for instance in range(1, n_slices + 1):
        k = n_slices - instance                     # array index: 0 is the most inferior slice
        sop_uid = study.uid(key, instance)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [round(x0, 6), round(y0, 6), round(float(zs[k]), 6)]
        ds.SliceLocation = round(float(zs[k]), 6)
        ds.PixelData = stored[k].tobytes()
        ds.file_meta = _file_meta(CTImageStorage, sop_uid)
        name = (f"1-{instance:03d}.dcm" if names == "tcia"
                else f"{prefix}-{order[instance - 1]:04d}.dcm")
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


#: Window presets written into every CT slice: (centre, width, explanation).
CT_WINDOWS = ((-600, 1500, "LUNG"), (40, 400, "MEDIASTINUM"))


def _ct_series_header(case: CTCase, shape: tuple[int, int], *, person: Person, site: Site,
                      study: Study, rng: np.random.Generator, series_number: int, key: str,
                      kernel: str, even: bool, tilt_deg: float, description: str | None) -> Dataset:
    """The header that every slice of a CT series shares (patient, study, series, equipment,
    image plane and pixel description): all but the slice's UID, number, position and pixels.

    ``shape`` is (rows, columns); ``even``: the slices are evenly spaced (SpacingBetweenSlices
    is written); ``tilt_deg``: the image planes are tilted about the x axis by this much.
    """
    rows, cols = shape
    dz, dy, dx = case.spacing
    tilt = np.deg2rad(tilt_deg)
    ds = Dataset()
    _patient_module(ds, person, study)
    _study_module(ds, site, study, "CT")
    ds.SOPClassUID = CTImageStorage
    ds.SeriesInstanceUID = study.uid("series", key)
    ds.FrameOfReferenceUID = study.uid("frame", "ct")
    ds.PositionReferenceIndicator = ""
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.SeriesDescription = description or f"CHEST {case.slice_thickness:.3g}mm {kernel}"
    ds.ProtocolName = "CHEST ROUTINE"
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = "HFS"
    ds.ScanOptions = "HELICAL MODE"
    ds.KVP = 120
    ds.XRayTubeCurrent = int(rng.integers(80, 400))
    ds.ConvolutionKernel = kernel
    ds.SliceThickness = case.slice_thickness
    if even:
        ds.SpacingBetweenSlices = round(dz, 6)
    ds.ReconstructionDiameter = round(case.fov_mm, 3)
    ds.DataCollectionDiameter = 500
    if tilt_deg:
        ds.GantryDetectorTilt = round(tilt_deg, 2)
        ds.ImageOrientationPatient = [1, 0, 0, 0, round(float(np.cos(tilt)), 8),
                                      round(float(-np.sin(tilt)), 8)]
    else:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [round(dy, 8), round(dx, 8)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelPaddingValue = CT_PADDING_STORED
    ds.RescaleIntercept = CT_RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [centre for centre, _, _ in CT_WINDOWS]
    ds.WindowWidth = [width for _, width, _ in CT_WINDOWS]
    ds.WindowCenterWidthExplanation = [name for _, _, name in CT_WINDOWS]
    return ds


def write_localizer(folder: Path, case: CTCase, *, person: Person, site: Site, study: Study,
                    name: str = "IM-LOC1.dcm") -> Path:
    """A frontal scout (topogram) of ``case``: ImageType LOCALIZER, a coronal projection."""
    hu = np.nan_to_num(case.hu, nan=-1000.0)
    projection = (hu.mean(axis=1)[::-1] + 1000.0) * 2.0          # rows: z from the top, x
    ds = _single_object(person, site, study, modality="CT", sop_class=CTImageStorage,
                        key="localizer", series_number=1, description="TOPOGRAM 0.6 T20f")
    ds.FrameOfReferenceUID = study.uid("frame", "ct")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    dz, _, dx = case.spacing
    x0, y0, z0 = case.origin
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.ImagePositionPatient = [round(x0, 6), 0.0, round(z0 + (case.hu.shape[0] - 1) * dz, 6)]
    ds.PixelSpacing = [round(dz, 8), round(dx, 8)]
    _gray16(ds, np.clip(projection, 0, 4095).astype(np.uint16))
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def write_dose_screen(folder: Path, *, person: Person, site: Site, study: Study,
                      rng: np.random.Generator, name: str = "IM-DOSE1.dcm") -> Path:
    """The RGB dose screen scanners add to a study: a colour Secondary Capture with the dose
    table burned in (here: bands of colour and noise standing for the text)."""
    from pydicom.uid import SecondaryCaptureImageStorage

    rows, cols = DOSE_SCREEN_SIZE
    image = np.zeros((rows, cols, 3), np.uint8)
    image[..., 2] = 60
    for top in range(20, rows - 20, 24):                        # "lines of text"
        image[top:top + 12, 20:cols - 20] = rng.integers(150, 255, size=(12, cols - 40, 3))
    ds = _single_object(person, site, study, modality="CT",
                        sop_class=SecondaryCaptureImageStorage, key="dose-screen",
                        series_number=501, description="Patient Protocol")
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = image.tobytes()
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def write_dose_report(folder: Path, *, person: Person, site: Site, study: Study,
                      name: str = "IM-SR1.dcm") -> Path:
    """An X-Ray Radiation Dose SR (a structured report: no pixel data)."""
    from pydicom.uid import XRayRadiationDoseSRStorage

    ds = _single_object(person, site, study, modality="SR", sop_class=XRayRadiationDoseSRStorage,
                        key="dose-sr", series_number=502, description="Dose Report")
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator = "113701", "DCM"
    concept.CodeMeaning = "X-Ray Radiation Dose Report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    ds.ContinuityOfContent = "SEPARATE"
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def _single_object(person: Person, site: Site, study: Study, *, modality: str, sop_class: str,
                   key: str, series_number: int, description: str) -> Dataset:
    """The header of a one-file series of the study: identity, study, SOP and series."""
    ds = Dataset()
    _patient_module(ds, person, study)
    _study_module(ds, site, study, modality)
    sop_uid = study.uid(key)
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.SeriesInstanceUID = study.uid("series", key)
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.SeriesDescription = description
    return ds


def _gray16(ds: Dataset, image: np.ndarray) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint16).tobytes()


def write_cxr(path: Path, image: np.ndarray, *, spacing_mm: float, view: str, person: Person,
              site: Site, study: Study) -> None:
    """Write an 8-bit chest X-ray ``image`` (rows, columns) as a CR DICOM file at ``path``."""
    ds = _single_object(person, site, study, modality="CR",
                        sop_class=ComputedRadiographyImageStorage, key="cxr", series_number=1,
                        description=f"view: {view}")
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"] if view == "PA" else ["R", "F"]
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [round(spacing_mm, 6), round(spacing_mm, 6)]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
