"""Pictures of volumes (``medtool view``): windowed slice montages with mask outlines or
heat-map overlays, drawn at their true aspect ratio.

Display conventions (radiological): axial slices show the patient's right on the left and
anterior at the top; coronal and sagittal slices show superior at the top. The array is flipped
as the geometry says, so a volume stored in another direction looks the same.

:func:`panel` builds one slice as an RGB array at voxel resolution (what the tests check);
:func:`render` lays panels out with matplotlib (Agg) and writes the PNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError, UsageError, check_choice
from .volume import UNITS_HU, Volume

PLANES = ("axial", "coronal", "sagittal", "ortho")
#: Array axis each plane slices along.
PLANE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
#: Outline colours of labels 1, 2, ... (RGB 0-255): red, green, blue, yellow, magenta, cyan.
LABEL_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25],
                          [240, 50, 230], [70, 240, 240]], dtype=np.uint8)
#: Default window of HU images (the lung window) and of other images (percentiles).
DEFAULT_HU_WINDOW = (-1350.0, 150.0)
PERCENTILES = (1.0, 99.0)
#: Heat maps are drawn where they exceed this fraction of their maximum, with this opacity.
HEAT_FLOOR = 0.2
HEAT_ALPHA = 0.5
HEAT_COLORMAP = "inferno"
#: Panel size (inches) and resolution of the PNG.
PANEL_INCHES = 3.2
DPI = 100


@dataclass
class Overlay:
    """A mask (outlined per label) or a heat map (colour-mapped), on the image's grid."""

    volume: Volume
    kind: str                                   # "mask" or "map"
    names: dict[int, str] = field(default_factory=dict)


def make_overlay(image: Volume, overlay: Volume, *, kind: str | None = None) -> Overlay:
    """Put ``overlay`` on ``image``'s grid (resampled if needed) and decide mask or map."""
    from .resample import Grid, is_mask, resample_to

    if kind is None:
        mask = is_mask(overlay) or overlay.array.dtype.kind in "iub"
    else:
        mask = kind == "mask"
    if overlay.ndim != image.ndim:
        raise InputError(f"the overlay is {overlay.ndim}D and the image {image.ndim}D",
                         hint="give an overlay of the same image")
    if not overlay.same_grid(image):
        overlay = resample_to(overlay, Grid.of(image), order=0 if mask else 1, mask=mask,
                              pad=0, antialias=False)
    names = {}
    if mask:
        for key, name in (overlay.meta.get("labels") or {}).items():
            names[int(key)] = str(name)
        return Overlay(overlay, "mask", names)
    return Overlay(overlay, "map", {})


def window_of(volume: Volume, window: tuple[float, float] | str | None) -> tuple[float, float]:
    """``(low, high)`` from explicit values, a preset name, or the default for the volume."""
    from .hounsfield import WINDOW_PRESETS

    if isinstance(window, str):
        check_choice("--preset", window, WINDOW_PRESETS)
        return WINDOW_PRESETS[window]
    if window is not None:
        low, high = window
        if not high > low:
            raise UsageError(f"the window [{low:g}, {high:g}] is empty: give LOW < HIGH")
        return float(low), float(high)
    if volume.units == UNITS_HU:
        return DEFAULT_HU_WINDOW
    low, high = np.percentile(np.asarray(volume.array, dtype=np.float32), PERCENTILES)
    return float(low), float(high if high > low else low + 1)


def plane_slice(volume: Volume, plane: str, index: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The 2D array of ``plane`` at ``index`` in display orientation, and its (row, col) mm."""
    array = np.asarray(volume.array)
    direction = volume.direction
    spacing = volume.spacing
    if plane == "axial":
        image, rows, cols = array[index], (1, direction[1, 1]), (2, direction[0, 2])
    elif plane == "coronal":
        image, rows, cols = array[:, index, :], (0, -direction[2, 0]), (2, direction[0, 2])
    else:
        image, rows, cols = array[:, :, index], (0, -direction[2, 0]), (1, direction[1, 1])
    # rows: anterior (or superior) at the top; columns: patient's right on the left
    if rows[1] < 0:
        image = image[::-1]
    if cols[1] < 0:
        image = image[:, ::-1]
    return image, (spacing[rows[0]], spacing[cols[0]])


def panel(image: Volume, plane: str, index: int, *, window: tuple[float, float],
          overlays: Sequence[Overlay] = (), thickness: int = 1,
          ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """One slice as RGB uint8 (grey window, mask outlines ``thickness`` voxels wide painted),
    the heat map to blend (float, NaN where not drawn) and the pixel size (row, col) in mm."""
    from scipy import ndimage

    values, pixel = plane_slice(image, plane, index)
    low, high = window
    grey = np.clip((values.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(np.rint(grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    heat = None
    for overlay in overlays:
        data, _ = plane_slice(overlay.volume, plane, index)
        if overlay.kind == "mask":
            for label in np.unique(data[data > 0]):
                region = data == label
                edge = region & ~ndimage.binary_erosion(region, border_value=0,
                                                        iterations=thickness)
                rgb[edge] = LABEL_COLOURS[(int(label) - 1) % len(LABEL_COLOURS)]
        else:
            top = float(np.nanmax(np.asarray(overlay.volume.array, dtype=np.float32)))
            data = data.astype(np.float32)
            heat = np.where(data > HEAT_FLOOR * top, data, np.nan) if top > 0 else None
    return rgb, heat, pixel


def pick_slices(image: Volume, plane: str, count: int, overlays: Sequence[Overlay] = ()) -> list[int]:
    """``count`` slice indices: evenly over the masks' extent, or where a heat map is
    strongest, or evenly over the volume (ends left out)."""
    axis = PLANE_AXIS[plane]
    n = image.shape[axis]
    others = tuple(a for a in range(3) if a != axis)
    for overlay in overlays:
        data = np.asarray(overlay.volume.array, dtype=np.float32)
        if overlay.kind == "map":
            strength = data.sum(axis=others)
            return sorted(int(i) for i in np.argsort(strength)[::-1][:count])
    for overlay in overlays:
        present = np.flatnonzero(np.asarray(overlay.volume.array).any(axis=others))
        if len(present):
            lo, hi = present[0], present[-1]
            return sorted(set(np.linspace(lo, hi, count + 2)[1:-1].round().astype(int).tolist())) \
                if hi - lo + 1 > count else list(range(lo, hi + 1))
    return sorted(set(np.linspace(0, n - 1, count + 2)[1:-1].round().astype(int).tolist()))


def render(image: Volume, out: str | os.PathLike, *, overlays: Sequence[Overlay] = (),
           plane: str = "axial", slices: int = 6, point: Sequence[int] | None = None,
           window: tuple[float, float] | str | None = None, columns: int | None = None,
           title: str | None = None, force: bool = False) -> Path:
    """Write a PNG montage of ``image`` (3D) to ``out``.

    Parameters
    ----------
    overlays
        Masks (outlined, one colour per label, with a legend) and heat maps (colour-mapped over
        the image with a colour bar).
    plane
        ``axial``, ``coronal``, ``sagittal``, or ``ortho`` (the three planes through ``point``).
    slices
        Number of slices of the montage (chosen by :func:`pick_slices`).
    point
        Voxel index ``(z, y, x)`` the ``ortho`` planes go through (default: the centre of the
        first mask, or of the volume).
    window
        ``(low, high)``, a preset name (lung, mediastinum, bone), or ``None`` for the default.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .files import atomic_output

    if image.ndim != 3:
        raise InputError(f"view draws 3D volumes, this one is {image.ndim}D",
                         hint="give a CT volume")
    check_choice("--plane", plane, PLANES)
    if slices < 1:
        raise UsageError("--slices needs at least 1")
    low_high = window_of(image, window)
    views = _views(image, plane, slices, point, overlays)
    columns = columns or min(len(views), 4)
    rows = -(-len(views) // columns)
    heat_map = any(o.kind == "map" for o in overlays)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES * columns + (0.8 if heat_map else 0),
                                                     PANEL_INCHES * rows + 0.5),
                             squeeze=False, facecolor="black")
    heat_image = None
    top = max((float(np.nanmax(np.asarray(o.volume.array, dtype=np.float32)))
               for o in overlays if o.kind == "map"), default=1.0)
    for ax, (name, index) in zip(axes.ravel(), views):
        # outlines stay visible when the panel shows several voxels per screen pixel
        thickness = max(1, int(np.ceil(max(image.shape) / (PANEL_INCHES * DPI))))
        rgb, heat, (row_mm, col_mm) = panel(image, name, index, window=low_high,
                                            overlays=overlays, thickness=thickness)
        extent = (0, rgb.shape[1] * col_mm, rgb.shape[0] * row_mm, 0)
        ax.imshow(rgb, extent=extent, interpolation="nearest", aspect="equal")
        if heat is not None:
            heat_image = ax.imshow(heat_rgba(heat, top), extent=extent, interpolation="nearest", aspect="equal")
        ax.set_title(f"{name} {index}", color="white", fontsize=9)
        ax.set_axis_off()
    for ax in axes.ravel()[len(views):]:
        ax.set_axis_off()
    _legend(fig, overlays)
    if heat_image is not None:
        scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(HEAT_FLOOR * top, top), HEAT_COLORMAP)
        bar = fig.colorbar(scale, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    caption = f"{title or ''}  window {low_high[0]:g}..{low_high[1]:g}".strip()
    fig.suptitle(caption, color="white", fontsize=10)
    out = Path(out)
    try:
        with atomic_output(out, force=force) as temp:
            fig.savefig(temp, format="png", dpi=DPI, facecolor="black")
    finally:
        plt.close(fig)
    return out


def heat_rgba(heat: np.ndarray, top: float) -> np.ndarray:
    """A heat map (NaN where not drawn) as RGBA over the picture: coloured by
    :data:`HEAT_COLORMAP` from ``HEAT_FLOOR * top`` to ``top``, its opacity rising with the value
    from 0 to :data:`HEAT_ALPHA`, so weak attention stays see-through instead of a dark colour
    that reads like anatomy."""
    import matplotlib

    floor = HEAT_FLOOR * top
    scaled = np.clip((np.nan_to_num(heat, nan=floor) - floor) / max(top - floor, 1e-12), 0.0, 1.0)
    rgba = matplotlib.colormaps[HEAT_COLORMAP](scaled)
    rgba[..., 3] = np.where(np.isnan(heat), 0.0, HEAT_ALPHA * scaled)
    return rgba


def _views(image: Volume, plane: str, slices: int, point, overlays) -> list[tuple[str, int]]:
    """The panels ``(plane, slice index)``: ``slices`` picked slices, or for ``ortho`` the three
    planes through ``point`` (default: the centre of the first non-empty mask, or the volume's)."""
    if plane != "ortho":
        return [(plane, k) for k in pick_slices(image, plane, slices, overlays)]
    centre = point
    if centre is None:
        masks = [o for o in overlays if np.asarray(o.volume.array).any()]
        centre = (np.argwhere(np.asarray(masks[0].volume.array) > 0).mean(axis=0).round()
                  if masks else (np.asarray(image.shape) - 1) / 2).astype(int)
    centre = [int(np.clip(c, 0, n - 1)) for c, n in zip(centre, image.shape)]
    return [(name, centre[PLANE_AXIS[name]]) for name in ("axial", "coronal", "sagittal")]


def _legend(fig, overlays) -> None:
    """A legend of the mask labels drawn (their colour and name), under the panels."""
    from matplotlib.patches import Patch

    labels = sorted({(int(v), o.names.get(int(v), f"label {int(v)}")) for o in overlays
                     if o.kind == "mask" for v in np.unique(np.asarray(o.volume.array)) if v > 0})
    if labels:
        handles = [Patch(color=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)] / 255, label=name)
                   for v, name in labels]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                   labelcolor="white", fontsize=9)


@dataclass
class ViewJob:
    """One picture: the image file, its overlays, the PNG and how to draw it."""

    source: Path
    path: Path
    overlays: list[Path]
    plane: str
    slices: int
    point: tuple[int, int, int] | None
    window: tuple[float, float] | str | None
    force: bool


def overlay_for(source: Path, overlay: Path, roots: Sequence[Path]) -> Path:
    """The overlay of ``source``: ``overlay`` itself, or in a folder the file that mirrors
    ``source``'s name (any volume suffix)."""
    from .files import VOLUME_SUFFIXES, mirror_path

    if not overlay.is_dir():
        return overlay
    stem = mirror_path(source, roots, overlay, "")
    for suffix in VOLUME_SUFFIXES:
        if stem.with_name(stem.name + suffix).exists():
            return stem.with_name(stem.name + suffix)
    raise InputError(f"no overlay named {stem.name}.* in {overlay}",
                     hint="name the masks as the images (medtool lungmask does)")


def draw(job: ViewJob) -> dict:
    """Run one :class:`ViewJob`; the row the command prints."""
    from .files import check_writable
    from .formats import load_volume

    check_writable(job.path, force=job.force)
    image = load_volume(job.source, mmap=True)
    overlays = []
    for path in job.overlays:
        try:
            overlays.append(make_overlay(image, load_volume(path, mmap=True)))
        except InputError as exc:
            exc.path = exc.path or str(path)
            raise
    render(image, job.path, overlays=overlays, plane=job.plane, slices=job.slices,
           point=job.point, window=job.window, title=job.source.name, force=job.force)
    return {"output": str(job.path), "input": str(job.source),
            "overlays": [str(p) for p in job.overlays], "plane": job.plane}
