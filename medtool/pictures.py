"""2D pictures, as the X-ray tasks read them: DICOM of any file name (CR/DX/..., rescale
applied, MONOCHROME1 inverted), PNG / JPEG / TIFF (grayscale), or any medtool volume format
holding a 2D image or a one-slice volume. The image id (RSNA ``patientId``) is the file name
without its format suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

#: Suffixes of ordinary picture files (read with Pillow).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Suffixes stripped from DICOM file names to give the image id.
DICOM_SUFFIXES = (".dcm", ".dicom")


def image_id(path: str | Path) -> str:
    """The RSNA ``patientId`` of an image file: its name without the format suffix."""
    from .files import strip_suffix, volume_suffix

    path = Path(path)
    if volume_suffix(path):
        return strip_suffix(path)
    if path.suffix.lower() in PICTURE_SUFFIXES + DICOM_SUFFIXES:
        return path.name[: -len(path.suffix)]
    return path.name


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files under ``inputs``: volume and picture files by suffix, DICOM by content
    (sidecars and other files are left out; files named directly are kept)."""
    from .dicomfast import is_dicom
    from .files import find_files, volume_suffix

    found = []
    named = {Path(p) for p in inputs if not Path(p).is_dir()}
    for path in find_files(inputs, suffixes=None):
        if path in named or volume_suffix(path) or path.suffix.lower() in PICTURE_SUFFIXES or is_dicom(path):
            if path.suffix.lower() == ".json" and path not in named:
                continue
            found.append(path)
    return found


def read_image(path: str | Path) -> tuple[np.ndarray, str]:
    """A 2D image as float32 ``(rows, columns)`` and its units (``raw`` or ``HU``).

    Raises
    ------
    InputError
        Unreadable, not an image, or not 2D (a CT volume, a multi-frame file).
    """
    from .files import volume_suffix

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, hint="check the path")
    if volume_suffix(path):
        from .formats import load_volume

        volume = load_volume(path, mmap=True)
        array, units = volume.array, volume.units
    elif path.suffix.lower() in PICTURE_SUFFIXES:
        array, units = _read_picture(path), "raw"
    else:
        array, units = _read_dicom(path), "raw"
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        what = (f"a 3D volume ({array.shape[0]} slices, shape {list(array.shape)})" if array.ndim == 3
                else f"a {array.ndim}D array (shape {list(array.shape)})")
        raise InputError(f"{what} is not a 2D X-ray", path=path,
                         hint="detection takes 2D images (chest X-rays, or one slice of a volume)")
    if array.dtype.kind not in "iufb" or min(array.shape) < 2:
        raise InputError(f"not an image ({array.dtype}, shape {list(array.shape)})", path=path,
                         hint="give grayscale 2D images")
    return np.asarray(array, dtype=np.float32), units


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "I", "I;16", "F", "1"):
                if image.mode in ("RGB", "RGBA", "P", "LA") and _is_gray(image):
                    image = image.convert("L")
                else:
                    raise InputError(f"colour image ({image.mode})", path=path, hint="give grayscale X-rays")
            return np.asarray(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the picture ({exc})", path=path, hint="the file is damaged") from None


def _is_gray(image) -> bool:
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


def _read_dicom(path: Path) -> np.ndarray:
    from .dicom import NotDicomError, read_frames, read_pixels

    try:
        frames = read_frames(path)
    except NotDicomError:
        raise InputError("not an image file (DICOM, PNG, JPEG, TIFF or a volume format)", path=path,
                         hint="leave it out of the image folder") from None
    if len(frames) != 1:
        raise InputError(f"a {len(frames)}-frame DICOM is not a 2D X-ray", path=path,
                         hint="detection takes single-frame 2D images")
    frame = frames[0]
    pixels = read_pixels(frames)[0].astype(np.float32)
    if frame.has_rescale:
        pixels = pixels * np.float32(frame.slope) + np.float32(frame.intercept)
    if str(frame.facts.get("photometric", "")) == "MONOCHROME1":     # bright is low: invert
        pixels = pixels.max() + pixels.min() - pixels
    return pixels
