"""Nested regions of a label map: BraTS's whole tumour, tumour core and enhancing tumour.

A region is a named set of labels; a label map is scored (and, later, trained) as the binary
masks of its regions, which may overlap. The BraTS sets:

* ``brats``: whole tumour ``wt`` = 1, 2, 3, 4; tumour core ``tc`` = 1, 3, 4; enhancing tumour
  ``et`` = 4. It fits the labels of BRATS 2015 (necrosis 1, edema 2, non-enhancing 3,
  enhancing 4) and of BraTS 2017-2021 (necrotic and non-enhancing core 1, edema 2,
  enhancing 4), where label 3 does not occur.
* ``brats2023``: ``wt`` = 1, 2, 3; ``tc`` = 1, 3; ``et`` = 3 (BraTS 2023: core 1, edema 2,
  enhancing 3).

Any other set is written ``NAME=L+L+...,NAME=...`` (``wt=1+2+4,tc=1+4,et=4``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UsageError

#: Region sets by name: region name -> its labels.
REGION_SETS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats": {"wt": (1, 2, 3, 4), "tc": (1, 3, 4), "et": (4,)},
    "brats2023": {"wt": (1, 2, 3), "tc": (1, 3), "et": (3,)},
}
#: What the BraTS region names stand for.
REGION_TITLES = {"wt": "whole tumour", "tc": "tumour core", "et": "enhancing tumour"}
#: Labels up to this value are looked up in a table (fast); larger ones go through np.isin.
_TABLE_LIMIT = 1 << 16


def parse_regions(text: str) -> dict[str, tuple[int, ...]]:
    """``brats``, ``brats2023`` or ``NAME=L+L,...`` -> region name -> labels (in order given).

    Raises
    ------
    UsageError
        An unknown set name, or a spec that is not ``NAME=L+L+...`` with positive labels.
    """
    text = text.strip()
    if text.lower() in REGION_SETS:
        return dict(REGION_SETS[text.lower()])
    hint = f"give {' or '.join(REGION_SETS)}, or NAME=L+L,... (e.g. wt=1+2+4,tc=1+4,et=4)"
    if "=" not in text:
        raise UsageError(f"--regions {text!r}: not a region set", hint=hint)
    regions: dict[str, tuple[int, ...]] = {}
    for part in text.split(","):
        name, _, members = part.partition("=")
        name = name.strip()
        try:
            labels = tuple(int(v) for v in members.split("+") if v.strip())
        except ValueError:
            raise UsageError(f"--regions {text!r}: {members.strip()!r} is not a list of labels", hint=hint) from None
        if not name or not labels or min(labels) < 1 or name in regions:
            raise UsageError(f"--regions {text!r}: {part.strip()!r} is not NAME=L+L+... "
                             "(a new name, positive labels)", hint=hint)
        regions[name] = labels
    return regions


def region_mask(labels: np.ndarray, members: tuple[int, ...]) -> np.ndarray:
    """The voxels of an integer label map whose label is one of ``members``."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        table = np.zeros(_TABLE_LIMIT, bool)
        table[[m for m in members if m < _TABLE_LIMIT]] = True
        return table[labels]
    return np.isin(labels, members)


def describe(regions: dict[str, tuple[int, ...]]) -> str:
    """``wt (whole tumour) = 1+2+3+4, ...`` for help texts and reports."""
    return ", ".join(f"{name}{f' ({REGION_TITLES[name]})' if name in REGION_TITLES else ''} = "
                     f"{'+'.join(map(str, labels))}" for name, labels in regions.items())


def paint_order(regions: dict[str, Sequence[int]]) -> list[tuple[str, int]]:
    """How region masks become one label map again (nnU-Net's ``regions_class_order``): the
    regions from the one of most labels to the one of fewest, each painting the label it holds
    that no later region holds (the smallest such; the smallest of its own when all are in later
    ones). For BraTS's ``wt, tc, et`` that is wt -> 2 (edema), tc -> 1 (the core), et -> 4:
    labels of one region that no smaller region tells apart (necrosis 1 and non-enhancing 3 of
    BRATS 2015, both only in ``tc``) come back as one (1)."""
    order = sorted(regions, key=lambda name: -len(regions[name]))
    painted = []
    for index, name in enumerate(order):
        later = {label for other in order[index + 1:] for label in regions[other]}
        own = sorted(set(regions[name]) - later) or sorted(regions[name])
        painted.append((name, int(own[0])))
    return painted


def labels_from_regions(masks: np.ndarray, regions: dict[str, Sequence[int]]) -> np.ndarray:
    """A uint8 label map from binary region masks ``(R, ...)`` in ``regions``' order, painted as
    :func:`paint_order` says (later, smaller regions over earlier ones)."""
    masks = np.asarray(masks, dtype=bool)
    names = list(regions)
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for name, label in paint_order(regions):
        labels[masks[names.index(name)]] = label
    return labels


def region_masks(labels: np.ndarray, regions: dict[str, Sequence[int]]) -> np.ndarray:
    """The binary masks ``(R, ...)`` of every region of a label map, in ``regions``' order."""
    return np.stack([region_mask(labels, tuple(members)) for members in regions.values()])
