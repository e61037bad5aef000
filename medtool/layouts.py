"""Other tools' dataset layouts, read as they are: the Medical Segmentation Decathlon, nnU-Net v2
raw datasets and the BraTS folder-per-case layout (``train segment --dataset DIR``); and the
nnU-Net v2 raw layout written from medtool volumes (``medtool export nnunet``).

The three layouts, as their owners publish them:

Decathlon (``TaskNN_Name/``)
    ``dataset.json`` with ``modality`` (``{"0": "CT"}``), ``labels`` (``{"0": "background",
    "1": "liver"}``, value -> name) and ``training`` (``[{"image": "./imagesTr/liver_0.nii.gz",
    "label": "./labelsTr/liver_0.nii.gz"}, ...]``), ``test`` (image paths). The image list is
    taken from ``training``, so the macOS ``._liver_0.nii.gz`` files the archives hold are never
    read as cases.
nnU-Net v2 raw (``DatasetNNN_Name/``)
    ``dataset.json`` with ``channel_names`` (``{"0": "CT"}``), ``labels`` (``{"background": 0,
    "liver": 1}``, name -> value) and ``file_ending``; ``imagesTr/<case>_<channel:04d><ending>``,
    ``labelsTr/<case><ending>``, ``imagesTs/`` for prediction.
BraTS (no ``dataset.json``)
    a folder per case, ``<case>/<case>_flair.nii.gz``, ``_t1``, ``_t1ce``, ``_t2`` and the label
    map ``<case>_seg.nii.gz`` (cases without one are test cases).

A case keeps one image file per channel (or one 4D file, the Decathlon's); its input channels
are every channel the dataset has, in its order, unless ``channels`` picks some (nnU-Net trains
on all of them). The choice is said in :meth:`Layout.describe`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .channels import InputChannels, parse_channels
from .datasets import Case
from .errors import InputError, UsageError
from .files import VOLUME_SUFFIXES, strip_suffix
from .folds import NNUNET_SPLITS

#: The description file of the Decathlon and nnU-Net layouts.
DATASET_JSON = "dataset.json"
#: nnU-Net's channel suffix: ``<case>_0000.nii.gz`` is channel 0 of ``<case>``.
NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: The label map of a BraTS case: ``<case>_seg.nii.gz``.
BRATS_LABELS = "_seg"
#: Channel names that mean CT in dataset.json (nnU-Net normalises these with its CT scheme).
CT_NAMES = frozenset({"ct"})


@dataclass
class Layout:
    """A dataset read in its own layout.

    ``cases`` are the training cases (image = the first chosen channel's file, ``extra`` the
    other chosen channels' files, one label map); ``test`` the images without labels (their
    first chosen channel); ``classes`` the foreground names by label value (1, 2, ...);
    ``chosen`` the input channels taken of ``channels``, ``suffixes`` their file-name suffixes
    after the case id (empty when ``four_d``: one 4D file holds them); ``image_suffix`` the
    first one's (``_0000``, ``_flair``: predict strips it).
    """

    kind: str
    root: Path
    cases: list[Case]
    test: list[Path] = field(default_factory=list)
    classes: list[str] | None = None
    channels: list[str] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    mask_suffix: str = ""
    four_d: bool = False
    indices: list[int] = field(default_factory=list)

    @property
    def channel(self) -> str:
        """The first input channel."""
        return self.chosen[0] if self.chosen else ""

    @property
    def image_suffix(self) -> str:
        return self.suffixes[0] if self.suffixes else ""

    @property
    def is_ct(self) -> bool:
        return self.channel.lower() in CT_NAMES

    def input_channels(self) -> InputChannels | None:
        """How a case's files hold the chosen channels, or ``None`` for one plain image."""
        if len(self.chosen) <= 1 and not self.four_d:
            return None
        return InputChannels(tuple(self.chosen), tuple(self.suffixes), self.four_d, tuple(self.indices))

    def describe(self) -> str:
        """One line for the user: the layout, cases, channel and where each came from."""
        text = f"{self.kind} dataset {self.root}: {len(self.cases)} training cases"
        if self.test:
            text += f", {len(self.test)} test images"
        if self.classes:
            text += f"; classes {', '.join(self.classes)}"
        if self.chosen:
            text += f"; {'channels' if len(self.chosen) > 1 else 'channel'} {', '.join(self.chosen)}"
            if len(self.channels) > len(self.chosen):
                text += f" (of {', '.join(self.channels)}; choose with --channels)"
            elif len(self.channels) > 1:
                text += " (all; choose with --channels)"
        return text


def input_channels(layout: Layout | None, names: Sequence[str] | None) -> InputChannels | None:
    """The input channels of a training set: the chosen channels of ``layout`` (a dataset), or
    ``names`` (``--channels``) read as files ``<case>_<name>`` beside each other; ``None`` for
    one image per case."""
    if layout is not None:
        return layout.input_channels()
    names = parse_channels(names)
    return InputChannels(tuple(names), tuple(f"_{n}" for n in names)) if names else None


def read_layout(root: str | os.PathLike, *, channels: Sequence[str] | None = None) -> Layout:
    """The dataset under ``root``, recognised by its files (see the module docstring).

    Raises
    ------
    InputError
        ``root`` is none of the layouts, its ``dataset.json`` is damaged, or a listed file is
        missing.
    UsageError
        ``channels`` names a channel the dataset does not have, or more than one.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root, hint="give the dataset's top folder (the one with dataset.json)")
    description = root / DATASET_JSON
    if description.exists():
        meta = _read_json(description)
        if "channel_names" in meta:
            return _nnunet(root, meta, channels)
        if "modality" in meta or "training" in meta:
            return _decathlon(root, meta, channels)
        raise InputError("neither a Decathlon nor an nnU-Net dataset.json (no modality, training "
                         "or channel_names)", path=description, hint="check the file")
    brats = _brats(root, channels)
    if brats is not None:
        return brats
    raise InputError("no dataset.json and no BraTS case folders (<case>/<case>_seg.nii.gz)", path=root,
                     hint="give a Decathlon or nnU-Net dataset folder, or use --images and --masks")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read it: {exc}", path=path, hint="check the file") from None
    if not isinstance(meta, dict):
        raise InputError("not a JSON object", path=path, hint="check the file")
    return meta


def _choose(names: list[str], wanted: Sequence[str] | None, path: Path) -> list[str]:
    """The channels to train on: ``wanted`` (any case, in the order given), else all of ``names``."""
    if not names:
        raise InputError("the dataset names no input channel", path=path, hint="check dataset.json")
    if not wanted:
        return list(names)
    lowered = {n.lower(): n for n in names}
    unknown = [w for w in wanted if w.lower() not in lowered]
    if unknown:
        raise UsageError(f"--channels {','.join(wanted)}: the dataset has no {', '.join(unknown)}",
                         hint=f"choose from {', '.join(names)}")
    return [lowered[w.lower()] for w in wanted]


def _classes(labels: dict[int, str], path: Path) -> list[str]:
    """Foreground names by value 1..N (the values must run without gaps)."""
    values = sorted(v for v in labels if v != 0)
    if values != list(range(1, len(values) + 1)):
        raise InputError(f"label values {values} do not run 1..N", path=path,
                         hint="renumber the labels without gaps")
    return [labels[v] for v in values]


def _nnunet(root: Path, meta: dict[str, Any], wanted) -> Layout:
    path = root / DATASET_JSON
    channels = [str(meta["channel_names"][k]) for k in sorted(meta["channel_names"], key=int)]
    chosen = _choose(channels, wanted, path)
    suffixes = [f"_{channels.index(name):04d}" for name in chosen]
    labels: dict[int, str] = {}
    for name, value in (meta.get("labels") or {}).items():
        if not isinstance(value, int):
            raise InputError(f"label {name!r} is a region ({value}); region-based datasets are "
                             "not read yet", path=path, hint="give plain labels (name: value)")
        labels[value] = str(name)
    ending = str(meta.get("file_ending") or ".nii.gz")
    images, labels_dir = root / "imagesTr", root / "labelsTr"
    suffix = suffixes[0]
    cases = []
    for image in sorted(images.glob(f"*{suffix}{ending}")):
        case_id = image.name[: -len(suffix + ending)]
        if case_id.startswith("."):
            continue
        mask = labels_dir / f"{case_id}{ending}"
        if not mask.exists():
            raise InputError(f"no label file {mask.name} in {labels_dir}", path=image,
                             hint="every training image needs its label map")
        extra = [images / f"{case_id}{s}{ending}" for s in suffixes[1:]]
        missing = [p.name for p in extra if not p.exists()]
        if missing:
            raise InputError(f"channel file {missing[0]} is missing from imagesTr", path=image,
                             hint="every case needs a file per channel of dataset.json")
        cases.append(Case(case_id, image, [mask], extra))
    if not cases:
        raise InputError(f"no images <case>{suffix}{ending} in imagesTr", path=root, hint="check the dataset")
    declared = meta.get("numTraining")
    if isinstance(declared, int) and declared != len(cases):
        raise InputError(f"dataset.json says numTraining {declared}, imagesTr holds {len(cases)} cases",
                         path=path, hint="fix numTraining or the missing files")
    test = sorted(p for p in (root / "imagesTs").glob(f"*{suffix}{ending}") if not p.name.startswith("."))
    return Layout("nnU-Net", root, cases, test, _classes(labels, path) if labels else None,
                  channels, chosen, suffixes)


def _decathlon(root: Path, meta: dict[str, Any], wanted) -> Layout:
    path = root / DATASET_JSON
    modality = meta.get("modality") or {"0": "image"}
    channels = [str(modality[k]) for k in sorted(modality, key=int)]
    chosen = _choose(channels, wanted, path)
    labels = {int(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    cases = []
    for item in meta.get("training") or []:
        image, mask = root / item["image"], root / item["label"]
        for file in (image, mask):
            if not file.exists():
                raise InputError(f"dataset.json lists {file.relative_to(root)}, which is missing",
                                 path=path, hint="download the dataset again or fix the list")
        cases.append(Case(strip_suffix(image), image, [mask]))
    if not cases:
        raise InputError("dataset.json lists no training cases", path=path, hint="check the file")
    test = [root / p for p in meta.get("test") or [] if (root / p).exists()]
    four_d = len(channels) > 1      # the Decathlon keeps several channels in one 4D file
    return Layout("Decathlon", root, cases, test, _classes(labels, path) if labels else None, channels, chosen,
                  four_d=four_d, indices=[channels.index(c) for c in chosen] if four_d else [])


def _brats(root: Path, wanted) -> Layout | None:
    found, separator = _brats_files(root)
    seg = BRATS_LABELS[1:]
    if not any(seg in files for files in found.values()):
        return None
    channels = sorted({key for files in found.values() for key in files if key != seg}, key=_brats_order)
    chosen = _choose(channels, wanted, root)
    cases, test = [], []
    for case_id, files in found.items():
        missing = [c for c in chosen if c not in files]
        if missing:
            raise InputError(f"no {case_id}{separator}{missing[0]} image in this case", path=root / case_id,
                             hint="every case needs each chosen channel; choose others with --channels")
        if seg in files:
            cases.append(Case(case_id, files[chosen[0]], [files[seg]], [files[c] for c in chosen[1:]]))
        else:
            test.append(files[chosen[0]])
    return Layout("BraTS", root, cases, test, None, channels, chosen, [f"{separator}{c}" for c in chosen],
                  mask_suffix=f"{separator}{seg}")


def _brats_files(root: Path) -> tuple[dict[str, dict[str, Path]], str]:
    """The volume files of each case folder by the name after the case id (``flair``, ``seg``),
    and the separator before it: ``_`` up to BraTS 2021 (``<case>_flair``), ``-`` from 2023
    (``BraTS-GLI-00000-000-t2f``)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: dict[str, dict[str, Path]] = {}
    separators: set[str] = set()
    for folder in folders:
        files = {}
        for file in folder.iterdir():
            if file.name.startswith(".") or not file.name.lower().endswith(VOLUME_SUFFIXES):
                continue
            stem = strip_suffix(file)
            for separator in BRATS_SEPARATORS:
                if stem.startswith(folder.name + separator):
                    files[stem[len(folder.name) + 1:].lower()] = file
                    separators.add(separator)
                    break
        if files:
            found[folder.name] = files
    return found, (sorted(separators)[0] if len(separators) == 1 else BRATS_SEPARATORS[0])


#: What separates the case id from the sequence in BraTS file names (2012-2021, 2023 on).
BRATS_SEPARATORS = ("_", "-")
#: BraTS modalities in the order the challenge lists them (others after, by name); 2023 on:
#: t1n (native T1), t1c (contrast), t2w, t2f (FLAIR).
_BRATS_MODALITIES = ("flair", "t1", "t1ce", "t1gd", "t2", "t1n", "t1c", "t2w", "t2f")


def _brats_order(name: str) -> tuple[int, str]:
    return (_BRATS_MODALITIES.index(name) if name in _BRATS_MODALITIES else len(_BRATS_MODALITIES), name)


# -- nnU-Net v2 raw dataset out ------------------------------------------------------------------
#: A valid nnU-Net v2 dataset folder name: ``Dataset`` + three digits + ``_`` + a name.
NNUNET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")
#: The file format nnU-Net reads most widely.
NNUNET_ENDING = ".nii.gz"


@dataclass
class _ExportJob:
    case: Case
    images: list[Path]
    label: Path
    inputs: InputChannels | None = None


def _export_case(job: _ExportJob) -> dict[str, Any]:
    """One case into the dataset: its channels as NIfTI files on the first one's grid, its masks
    merged into one uint8 label map on that grid (refused when they are not on it)."""
    import numpy as np

    from .datasets import merge_masks
    from .formats import load_volume, save_volume

    channels = job.inputs.read(job.case.inputs) if job.inputs is not None else [load_volume(job.case.image)]
    image = channels[0]
    masks = [load_volume(m) for m in job.case.masks]
    for mask, path in zip(masks, job.case.masks):
        if not mask.same_grid(image):
            raise InputError(f"the mask is not on its image's grid ({job.case.image.name})", path=path,
                             hint="bring it onto the image first: medtool resample MASK --like IMAGE "
                                  "(or medtool attach for arrays without geometry)")
    try:
        labels, counts = merge_masks([m.array for m in masks])
    except ValueError as exc:
        raise InputError(str(exc), path=job.case.masks[0], hint="masks hold labels 0..255") from None
    for volume, path in zip(channels, job.images):
        save_volume(volume, path)
    save_volume(masks[0].with_array(labels.astype(np.uint8)), job.label)
    return {"case_id": job.case.case_id, "labels": int(labels.max()), "counts": counts}


def export_nnunet(cases: Sequence[Case], out: str | os.PathLike, *, classes: Sequence[str] | None,
                  channels: Sequence[str], inputs: InputChannels | None = None,
                  folds: dict[str, int | str] | None = None, workers: int = 1,
                  force: bool = False, progress: bool = False, on_error=None) -> dict[str, Any]:
    """Write ``cases`` as the nnU-Net v2 raw dataset ``out`` (``DatasetNNN_Name``): images as
    ``imagesTr/<case>_0000.nii.gz`` (channel ``channels[0]``; ``_0001`` ... the others, read as
    ``inputs`` say), label maps as ``labelsTr/<case>.nii.gz``,
    ``dataset.json`` (``classes`` by value 1..N; planned ``label_N`` names when ``None``) and,
    from ``folds``, ``splits_final.json`` (nnU-Net reads it from its preprocessed folder: copy it
    there). The folder appears complete or not at all; returns what was written.

    Raises
    ------
    UsageError
        ``out`` is not named as nnU-Net requires, or ``classes`` does not match the labels.
    """
    from .batch import run_batch
    from .files import atomic_directory, check_writable
    from .folds import nnunet_splits

    out = Path(out)
    if not NNUNET_NAME.match(out.name):
        raise UsageError(f"{out.name}: nnU-Net needs the folder named DatasetNNN_Name (three digits)",
                         hint="e.g. nnUNet_raw/Dataset501_Lung")
    check_writable(out, force=force)
    with atomic_directory(out, force=force) as temp:
        (temp / "imagesTr").mkdir()
        (temp / "labelsTr").mkdir()
        jobs = [_ExportJob(c, [temp / "imagesTr" / f"{c.case_id}_{k:04d}{NNUNET_ENDING}" for k in range(len(channels))],
                           temp / "labelsTr" / f"{c.case_id}{NNUNET_ENDING}", inputs) for c in cases]
        outcome = run_batch(_export_case, jobs, workers=workers, description="exporting", progress=progress,
                            on_error=on_error, name=lambda job: str(job.case.image))
        if outcome.failures:
            raise outcome.failures[0][1]
        top = max(r["labels"] for r in outcome.results)
        if classes is None:
            classes = [f"label_{v}" for v in range(1, top + 1)]
        if len(classes) < top:
            raise UsageError(f"{len(classes)} class names for labels 1..{top}", hint="give one name per label")
        description = {"channel_names": {str(k): name for k, name in enumerate(channels)},
                       "labels": {"background": 0, **{name: value for value, name in enumerate(classes, 1)}},
                       "numTraining": len(cases), "file_ending": NNUNET_ENDING,
                       "name": out.name.split("_", 1)[1], "description": "written by medtool export nnunet"}
        (temp / DATASET_JSON).write_text(json.dumps(description, indent=2) + "\n")
        split = nnunet_splits(folds, [c.case_id for c in cases]) if folds else None
        if split is not None:
            (temp / NNUNET_SPLITS).write_text(json.dumps(split, indent=2) + "\n")
    return {"dataset": str(out), "cases": len(cases), "classes": list(classes), "channels": list(channels),
            "splits": len(split) if split else 0}


@dataclass
class ExportCases:
    """What ``medtool export`` writes: the cases, their class names, nnU-Net's channel names
    with why they were chosen, and how a case's files hold the channels (``None``: one image)."""

    cases: list[Case]
    classes: list[str] | None
    channels: list[str]
    why: str
    inputs: InputChannels | None = None


def export_cases(*, images=None, masks=None, mask_suffixes: Sequence[str] = ("",), image_suffix: str = "",
                 dataset=None, channels: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                 channel_name: str | None = None) -> ExportCases:
    """The cases ``medtool export`` writes, found as ``train segment`` finds them, their class
    names and nnU-Net's channel names with why they were chosen (given; the dataset's or
    ``channels``; for one image, CT when the first image is in HU, else MRI).

    Raises
    ------
    UsageError
        Neither or both of ``dataset`` and ``images``/``masks``, or ``channel_name`` for
        several channels.
    """
    from .datasets import match_cases
    from .formats import load_volume
    from .hounsfield import guess_units
    from .volume import UNITS_HU

    if (dataset is None) == (images is None and masks is None) or (dataset is None and (images is None or masks is None)):
        raise UsageError("give --images DIR and --masks DIR, or --dataset DIR")
    layout = read_layout(dataset, channels=channels) if dataset is not None else None
    inputs = input_channels(layout, channels)
    if layout is not None:
        cases, classes = layout.cases, list(class_names) if class_names else layout.classes
    else:
        cases = match_cases(images, masks, mask_suffixes, image_suffix=image_suffix, channels=inputs)
        classes = class_names
    if inputs is not None and len(inputs) > 1:
        if channel_name:
            raise UsageError("--channel-name names one channel; these cases have "
                             f"{', '.join(inputs.names)}", hint="leave it out: the channels keep their names")
        where = f"the {layout.kind} dataset" if layout is not None else "--channels"
        return ExportCases(cases, classes, list(inputs.names), f"from {where}", inputs)
    if channel_name:
        return ExportCases(cases, classes, [channel_name], "given", inputs)
    if layout is not None and layout.kind != "BraTS":
        return ExportCases(cases, classes, [layout.channel], f"the {layout.kind} dataset.json", inputs)
    units, why = guess_units(load_volume(cases[0].image, mmap=True))
    name = cases[0].image.name
    if units == UNITS_HU:
        return ExportCases(cases, classes, ["CT"], f"{name}: {why}; change with --channel-name", inputs)
    return ExportCases(cases, classes, ["MRI"], f"{name} is not in HU; nnU-Net z-scores it; change with --channel-name",
                       inputs)
