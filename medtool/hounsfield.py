"""Hounsfield units: reference values of tissues, the stored-value conventions of CT, and the
conversion of stored values to HU (windowing and normalisation included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .volume import Volume

#: Air.
HU_AIR = -1000.0
#: Aerated lung parenchyma (typical mean of a healthy lung at inspiration).
HU_LUNG = -850.0
#: Fat.
HU_FAT = -100.0
#: Water.
HU_WATER = 0.0
#: Soft tissue, muscle and unenhanced blood.
HU_SOFT_TISSUE = 40.0
#: Liver (unenhanced).
HU_LIVER = 55.0
#: Trabecular (spongy) bone.
HU_TRABECULAR_BONE = 250.0
#: Cortical bone.
HU_CORTICAL_BONE = 800.0
#: The usual RescaleIntercept of CT: stored value 0 is -1024 HU.
CT_RESCALE_INTERCEPT = -1024.0
#: Stored value many scanners put outside the circular field of view (PixelPaddingValue).
CT_PADDING_STORED = -2000
#: Lowest CT number a scanner reconstructs (12-bit scale); values below are not tissue.
HU_MIN = -1024
#: Highest CT number an int16 HU volume holds (extended CT scales reach about 30 000).
HU_MAX = 32767
#: CT numbers at or below this are out-of-field padding (stored -2000 is -3024 HU at the usual
#: intercept; some scanners write -2000 HU itself).
HU_OUT_OF_FIELD = -2000
#: Display windows (low, high) in HU for ``medtool hu --preset``.
WINDOW_PRESETS = {
    "lung": (-1350.0, 150.0),        # level -600, width 1500
    "mediastinum": (-160.0, 240.0),  # level 40, width 400
    "bone": (-500.0, 1300.0),        # level 400, width 1800
}
#: HU range that ``--normalize`` maps to [0, 1] when no window is given (the seeds' MIN/MAX).
NORMALIZE_RANGE = (-1000.0, 400.0)
#: Units of a volume normalised to [0, 1] from a HU window.
UNITS_NORMALIZED = "normalized"
#: A volume from another tool (no medtool units) is taken as CT in HU when its lowest value is
#: at or below this: air is -1000 HU, while raw MRI, PET and X-ray values are >= 0 and a
#: z-scored image never gets this low.
HU_LIKE_LOWEST = -500.0
#: ... and not below this (int16's floor; padding values of CT lie above it).
HU_LIKE_FLOOR = -32768.0


def guess_units(volume: "Volume") -> tuple[str | None, str]:
    """The units of ``volume`` and why: medtool's metadata when it has them, else a guess from
    the values of a file written by another tool (a CT NIfTI in HU has air at about -1000).

    Returns ``(units, why)``; ``units`` is ``None`` when the values cannot tell (all >= 0:
    CT stored values or another modality; or negative but never as low as air)."""
    from .volume import UNITS_HU

    units = volume.meta.get("units")
    if units:
        return str(units), f"units {units} in its metadata"
    array = np.asarray(volume.array)
    if array.size == 0 or array.dtype.kind not in "iuf":
        return None, "no units in the file and no numbers to judge by"
    low, high = float(np.min(array)), float(np.max(array))
    values = f"values {low:g} to {high:g}"
    if HU_LIKE_FLOOR <= low <= HU_LIKE_LOWEST:
        return UNITS_HU, f"no units in the file; {values} look like HU (air is about {HU_AIR:g})"
    if low >= 0:
        return None, f"no units in the file and {values}, all >= 0 (CT stored values, or not CT)"
    return None, f"no units in the file and {values}, never as low as air ({HU_AIR:g} HU)"


def to_hu(volume: "Volume", *, rescale: tuple[float, float] | None = None) -> "Volume":
    """Convert stored CT values to int16 Hounsfield units.

    Applies each slice's own RescaleSlope/Intercept (``volume.meta["rescale"]``, a value or one
    per slice), maps padding to air (:data:`HU_AIR`): PixelPaddingValue and
    PixelPaddingRangeLimit compared in stored-value space, stored -2000 and anything at or below
    :data:`HU_OUT_OF_FIELD` HU, then clips to [:data:`HU_MIN`, :data:`HU_MAX`].

    A volume whose units are HU already is returned unchanged. A volume without rescale
    information is taken as HU when it has negative values (a NIfTI from dcm2niix, say), and
    refused when all values are >= 0 (stored values, not HU).

    Parameters
    ----------
    rescale
        ``(slope, intercept)`` overriding the metadata (for files from other tools).

    Raises
    ------
    InputError
        Not CT, already normalised, or values that cannot be HU.
    """
    from .errors import InputError
    from .volume import UNITS_HU

    meta = volume.meta
    if volume.units == UNITS_HU:
        return volume
    if volume.units == UNITS_NORMALIZED:
        raise InputError("the volume is normalised already, not stored values or HU",
                         hint="run medtool hu on the volume before --normalize")
    modality = meta.get("modality")
    if modality not in (None, "", "CT"):
        raise InputError(f"modality is {modality}: Hounsfield units exist for CT only",
                         hint="medtool hu converts CT; leave this file out")
    if volume.array.dtype.kind not in "iuf" or volume.array.dtype == bool:
        raise InputError(f"values of type {volume.array.dtype} cannot be CT numbers",
                         hint="give a CT image, not a mask")
    source = meta.get("rescale")
    if rescale is not None:
        source = {"slope": rescale[0], "intercept": rescale[1]}
    if source is None:
        low = volume.array.min()
        if low >= 0:
            raise InputError("all values are >= 0 and the file has no rescale slope/intercept: "
                             "these are stored values, not HU",
                             hint="convert from the DICOM folder (medtool hu DICOM_DIR OUT), or "
                                  "pass --rescale SLOPE INTERCEPT")
        guessed, why = guess_units(volume) if "units" not in meta else (UNITS_HU, "")
        if guessed != UNITS_HU:
            raise InputError(f"{why}: these are not CT numbers in HU",
                             hint="give a CT; if these are CT numbers, pass --rescale SLOPE INTERCEPT")
        source = {"slope": 1.0, "intercept": 0.0}
    padding = meta.get("padding") or {}
    hu = np.empty(volume.shape, dtype=np.int16)
    stored3 = volume.array if volume.ndim == 3 else volume.array[np.newaxis]
    hu3 = hu if volume.ndim == 3 else hu[np.newaxis]
    count = stored3.shape[0]
    slopes = np.broadcast_to(np.asarray(source["slope"], dtype=np.float64), (count,))
    intercepts = np.broadcast_to(np.asarray(source["intercept"], dtype=np.float64), (count,))
    if slopes.shape != (count,) or intercepts.shape != (count,):
        raise InputError("the rescale values do not match the number of slices",
                         hint="the metadata was edited; convert again from DICOM")
    for k in range(count):   # slice by slice: memory stays one slice of float32
        stored = np.asarray(stored3[k])
        values = stored.astype(np.float64) * slopes[k] + intercepts[k]
        outside = _padding_mask(stored, padding)
        outside |= values <= HU_OUT_OF_FIELD
        if stored.dtype.kind == "i":
            outside |= stored == CT_PADDING_STORED
        values[outside] = HU_AIR
        hu3[k] = np.clip(np.rint(values), HU_MIN, HU_MAX)
    extra = {k: v for k, v in meta.items() if k not in ("rescale", "padding")}
    extra["units"] = UNITS_HU
    extra["hu_from"] = {"rescale": source, "padding": padding or None}
    result = volume.with_array(hu)
    result.meta = extra
    return result


def _padding_mask(stored: np.ndarray, padding: dict) -> np.ndarray:
    """Pixels that PixelPaddingValue (and PixelPaddingRangeLimit) mark, in stored values."""
    value = padding.get("value")
    if value is None:
        return np.zeros(stored.shape, dtype=bool)
    limit = padding.get("range_limit")
    if limit is None:
        return stored == value
    low, high = min(value, limit), max(value, limit)
    return (stored >= low) & (stored <= high)


def window(volume: "Volume", low: float, high: float, *, normalize: bool = False) -> "Volume":
    """Clip a HU volume to ``[low, high]``; with ``normalize`` scale it to float32 [0, 1]."""
    from .errors import UsageError

    if not high > low:
        raise UsageError(f"the window [{low:g}, {high:g}] is empty: give LOW < HIGH")
    array = np.clip(volume.array, low, high)
    meta = {"window": [float(low), float(high)]}
    if normalize:
        array = ((array.astype(np.float32) - np.float32(low)) / np.float32(high - low))
        meta.update(units=UNITS_NORMALIZED, normalized_from=[float(low), float(high)])
    else:
        array = array.astype(volume.array.dtype, copy=False)
    return volume.with_array(array, **meta)
