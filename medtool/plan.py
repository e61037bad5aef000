"""What training planned for the data, value by value, and why: the data set's fingerprint and
the plan of a segmentation run (``train segment`` prints it, ``--plan-only`` stops there; it is
written as ``RUN/plan.json`` and kept in the checkpoint's recipe).

The **fingerprint** is computed from the training cases as the cache brings them into the
model's space (:func:`medtool.segmentation.preprocess_case`): spacings and shapes of the
images, intensity statistics inside the foreground (nnU-Net's: mean, standard deviation, 0.5
and 99.5 percentiles, of the original intensities), and per class the share of voxels, the
cases that hold it, its connected components per case and their sizes (mm³).

Each **plan line** says a value, whether it was ``planned`` from the data, ``given`` as an
option, or medtool's ``default``, and why. What is planned today: the spacing (the median of
the training images), the patch (their median size at that spacing, within the largest patch),
the normalisation (:func:`medtool.intensity.plan_normalization`) and the inference's
``keep-largest`` (1 when every training case holds one component of each class it has, as
lungs do; predict then uses it unless ``--keep-largest`` is given). The other values are the
options' defaults or what was given, printed so that every choice can be seen and overridden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

#: The percentiles of the foreground intensities in the fingerprint (nnU-Net's).
FOREGROUND_PERCENTILES = (0.5, 99.5)
#: Sources of a plan line.
PLANNED, GIVEN, DEFAULT = "planned", "given", "default"


def foreground_statistics(image: np.ndarray, foreground: np.ndarray) -> dict[str, float] | None:
    """Mean, standard deviation, 0.5 and 99.5 percentiles, min and max of ``image`` inside
    ``foreground`` (``None`` when the mask is empty)."""
    values = np.asarray(image)[np.asarray(foreground)].astype(np.float64)
    if values.size == 0:
        return None
    low, high = np.percentile(values, FOREGROUND_PERCENTILES)
    return {"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(low), "p99_5": float(high),
            "min": float(values.min()), "max": float(values.max()), "voxels": int(values.size)}


def fingerprint(entries: Sequence[dict[str, Any]], *, spacings: np.ndarray, shapes: np.ndarray,
                voxel_mm3: float, classes: Sequence[str]) -> dict[str, Any]:
    """The data set's fingerprint (see the module docstring) from the cache ``entries`` of the
    training cases, their images' ``spacings`` and ``shapes`` ``(N, 3)`` and the model-space
    voxel volume ``voxel_mm3``; ``classes`` are the foreground names by label value."""
    intensity = _pooled([e["foreground"] for e in entries if e.get("foreground")])
    channels = max((len(e.get("foreground_channels") or []) for e in entries), default=0)
    per_channel = [_pooled([e["foreground_channels"][c] for e in entries
                            if e.get("foreground_channels") and e["foreground_channels"][c]])
                   for c in range(channels)]
    total = float(sum(int(np.prod(e["shape"])) for e in entries))
    per_class = {}
    for value, name in enumerate(classes, start=1):
        found = [[o for o in e["objects"] if o[0] == value] for e in entries]
        sizes = np.array([o[1] for objs in found for o in objs], dtype=np.float64) * voxel_mm3
        counts = [len(objs) for objs in found if objs]
        per_class[name] = {"voxel_share": float(sizes.sum() / voxel_mm3 / total) if total else 0.0,
                           "cases": len(counts), "components_per_case_max": max(counts, default=0),
                           "components_per_case_median": float(np.median(counts)) if counts else 0.0,
                           "object_mm3_median": float(np.median(sizes)) if sizes.size else 0.0,
                           "object_mm3_min": float(sizes.min()) if sizes.size else 0.0}
    return {"cases": len(entries), "spacing_median": np.median(spacings, axis=0).tolist(),
            "spacing_min": spacings.min(axis=0).tolist(), "spacing_max": spacings.max(axis=0).tolist(),
            "shape_median": np.median(shapes, axis=0).tolist(), "foreground_intensity": intensity,
            **({"foreground_intensity_channels": per_channel} if per_channel else {}),
            "classes": per_class}


def _pooled(stats: Sequence[dict[str, float]]) -> dict[str, float] | None:
    """Foreground statistics of several cases pooled: means and percentiles weighted by the
    voxel counts, the standard deviation of the union, the extremes; ``None`` for none."""
    if not stats:
        return None
    weights = np.array([s["voxels"] for s in stats], dtype=np.float64)
    intensity = {key: float(np.average([s[key] for s in stats], weights=weights)) for key in ("mean", "p00_5", "p99_5")}
    intensity["std"] = float(np.sqrt(np.average([s["std"] ** 2 + (s["mean"] - intensity["mean"]) ** 2
                                                 for s in stats], weights=weights)))
    intensity.update(min=float(min(s["min"] for s in stats)), max=float(max(s["max"] for s in stats)))
    return intensity


@dataclass
class PlanLine:
    """One value of the plan: its option name, the value, ``planned`` / ``given`` / ``default``,
    and why."""

    name: str
    value: Any
    source: str
    why: str

    def describe(self) -> str:
        value = " ".join(map(str, self.value)) if isinstance(self.value, (list, tuple)) else self.value
        why = self.source if self.why in ("", self.source) else f"{self.source}: {self.why}"
        return f"  {self.name:<14} {value}  ({why})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def option_line(options, name: str, value: Any = None, *, chosen: dict[str, str] | None = None) -> PlanLine:
    """The plan line of option ``name`` of a task's (or the loop's) options: planned for the
    device when ``chosen`` says why, else given or medtool's default (``value``: what to show,
    default the option's value)."""
    shown = getattr(options, name) if value is None else value
    if chosen and name in chosen:
        return PlanLine(name, shown, PLANNED, chosen[name])
    given = getattr(options, "given", None)
    source = "option" if given is None else GIVEN if name in given else DEFAULT
    return PlanLine(name, shown, source, "given" if source == GIVEN else "medtool's default")


def keep_largest(print_: dict[str, Any]) -> tuple[int, str]:
    """The inference's ``keep-largest`` from a fingerprint: 1 when every training case holds one
    component of each class it has, else 0 (keep all), and why."""
    classes = print_["classes"]
    several = {name: c["components_per_case_max"] for name, c in classes.items() if c["components_per_case_max"] > 1}
    if classes and not several:
        return 1, "every training case holds one component of each class"
    named = ", ".join(f"{name} up to {n}" for name, n in several.items())
    return 0, f"training cases hold several components ({named})" if several else "no class in the training masks"
