"""A synthetic chest CT with exact truth, built from analytic shapes in patient millimetres.

The anatomy is described in LPS millimetres (x to the patient's left, y posterior, z superior),
so the same case looks the same at any resolution; ``shape`` only sets the sampling. Every
structure is rasterised inside its own bounding box, so a realistic 512 x 512 x 100+ case takes
about a second.

What is in it (and what the algorithms downstream must cope with): a body outline with a fat
layer, both lungs (around -850 HU, denser posteriorly) with vessels and small airways, trachea
and main bronchi joining the lungs, mediastinum and heart, aorta, spine with discs and ribs,
liver and a stomach gas bubble under the diaphragm, a carbon-fibre scanner bed with a foam core,
the circular field of view (outside: stored -2000), and in some cases a lobulated tumour.
Lungs may touch at the anterior junction; large patients are cut by the field of view.

On request (:class:`Anatomy`) a case also has what real scans have: another scan range
(chest-abdomen-pelvis, abdomen only, lung bases only, apices only), bowel (the stomach with a
gas/fluid level, the colon with haustra, gas pockets and stool, small-bowel loops with fluid
and gas, all below the diaphragm), a pleural effusion, emphysema, one lung only
(pneumonectomy: the other hemithorax is fluid) and a large juxtapleural tumour. Every added
structure has exact truth: :attr:`CTCase.anatomy` (labels :data:`ANATOMY_LABELS`). The lung truth
stays exact: an effusion and the pneumonectomy space are not lung, emphysema is lung, a
juxtapleural tumour is lung (as every tumour of the phantom: it lies inside the lung truth).

Random draws: the default anatomy draws exactly what it always drew, so the same seed gives
the same case as before; the added structures draw from a side stream of the same seed
(:func:`side_stream`), so switching one on leaves the rest of the patient as it was (a scan
range other than the chest changes the grid, and with it the vessels and later draws).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import hounsfield as hu
from ..errors import UsageError

# Tissue labels of the internal label volume (painted in this order, later wins).
AIR, BED_SHELL, BED_FOAM, FAT, SOFT, LIVER, GAS, LUNG, VESSEL, AIRWAY, HEART, BONE, MARROW, \
    DISC, CANAL, TUMOUR = range(16)
# Labels of the optional anatomy (appended, so the default labels and values stay as they were).
BOWEL_GAS, BOWEL_FLUID, STOOL, EFFUSION, SPACE, EMPHYSEMA = range(16, 22)
#: HU of the optional anatomy: gas in the bowel is air; bowel fluid, pleural effusion and the
#: fluid of a pneumonectomy space are water-like; stool is mottled; emphysema is nearly air.
HU_BOWEL_FLUID = 10.0
HU_STOOL = -60.0
HU_EFFUSION = 12.0
HU_PNEUMONECTOMY_SPACE = 20.0
HU_EMPHYSEMA = -975.0
#: Emphysematous lung is less dense than healthy lung around its bullae (HU added to LUNG).
EMPHYSEMA_LUNG_SHIFT_HU = -50.0
#: Mean HU and noise scale of each tissue label.
_TISSUE_HU = np.array([
    hu.HU_AIR, 250.0, -950.0, hu.HU_FAT, hu.HU_SOFT_TISSUE, hu.HU_LIVER, hu.HU_AIR, hu.HU_LUNG,
    hu.HU_SOFT_TISSUE, hu.HU_AIR, hu.HU_SOFT_TISSUE, hu.HU_CORTICAL_BONE, hu.HU_TRABECULAR_BONE,
    80.0, 15.0, 30.0,
    hu.HU_AIR, HU_BOWEL_FLUID, HU_STOOL, HU_EFFUSION, HU_PNEUMONECTOMY_SPACE, HU_EMPHYSEMA,
], dtype=np.float32)
# Gas in the bowel gets the same noise as tissue (quantum noise does not know what it is in).
_TISSUE_NOISE = np.array([0.5, 1.5, 0.5, 1, 1, 1, 0.5, 1, 1.5, 0.5, 1, 2, 1.5, 1, 1, 1.2,
                          1, 1, 2.5, 1, 1, 1], dtype=np.float32)

#: Labels of :attr:`CTCase.anatomy` (``truth/<case>_anatomy.nii.gz``): what is not lung, and
#: emphysema (which is).
AIRWAY_TRUTH, BOWEL_GAS_TRUTH, BOWEL_CONTENT_TRUTH, EFFUSION_TRUTH, EMPHYSEMA_TRUTH, \
    SPACE_TRUTH = range(1, 7)
ANATOMY_LABELS = {
    str(AIRWAY_TRUTH): "trachea and main bronchi (air)",
    str(BOWEL_GAS_TRUTH): "gas in the stomach, small bowel and colon",
    str(BOWEL_CONTENT_TRUTH): "bowel content (fluid, stool)",
    str(EFFUSION_TRUTH): "pleural effusion (not lung)",
    str(EMPHYSEMA_TRUTH): "emphysema (inside the lung truth)",
    str(SPACE_TRUTH): "pneumonectomy space (fluid, not lung)",
}
#: Tissue label -> anatomy truth label (the rest: 0).
_ANATOMY_OF_TISSUE = np.zeros(len(_TISSUE_HU), dtype=np.uint8)
_ANATOMY_OF_TISSUE[[GAS, BOWEL_GAS]] = BOWEL_GAS_TRUTH
_ANATOMY_OF_TISSUE[[BOWEL_FLUID, STOOL]] = BOWEL_CONTENT_TRUTH
_ANATOMY_OF_TISSUE[EFFUSION] = EFFUSION_TRUTH
_ANATOMY_OF_TISSUE[EMPHYSEMA] = EMPHYSEMA_TRUTH
_ANATOMY_OF_TISSUE[SPACE] = SPACE_TRUTH

#: Label of each lung in the truth: 1 = right lung (patient's right, x < 0), 2 = left lung.
RIGHT_LUNG, LEFT_LUNG = 1, 2
#: Default chance that a case has a lung tumour.
TUMOUR_FRACTION = 0.65
#: Cases whose tumour's longest axial diameter is at least this are labelled 1.
LABEL_DIAMETER_MM = 20.0
#: Realistic reconstruction choices at the default 512 x 512 size.
DEFAULT_SHAPE = 512
SLICE_SPACINGS_MM = (1.25, 1.5, 2.0, 2.5, 3.0)
FOV_RANGE_MM = (330.0, 450.0)

#: Scan ranges of :class:`Anatomy`: the chest (lung bases to above the apices, 55 mm of upper
#: abdomen), chest-abdomen-pelvis, abdomen only (no lung), lung bases only (an abdominal scan
#: whose top slices hold the lung bases), apices only.
SCAN_RANGES = ("chest", "cap", "abdomen", "bases", "apices")
#: Study description of each scan range (before WITHOUT CONTRAST / FOLLOW-UP).
STUDY_TITLES = {"chest": "CT CHEST", "cap": "CT CHEST ABDOMEN PELVIS", "abdomen": "CT ABDOMEN PELVIS",
                "bases": "CT ABDOMEN", "apices": "CT NECK CHEST"}
#: Ranges that hold the abdomen: the bowel is in them unless asked otherwise.
ABDOMINAL_RANGES = ("cap", "abdomen", "bases")
#: Scans longer than the chest are reconstructed with slices at least this far apart (mm, 512²).
ABDOMINAL_MIN_SLICE_MM = 2.5
#: Extent of the ranges (mm): from the lowest lung point down to the pelvic floor; the bases
#: scan's top above the lowest lung point; the apices scan's bottom below the lung apex.
PELVIS_DEPTH_MM = (320.0, 380.0)
BASES_TOP_MM = (45.0, 90.0)
BASES_DEPTH_MM = (150.0, 260.0)
APICES_HEIGHT_MM = (55.0, 90.0)
#: Tissue between a lung and any bowel lumen (mm): diaphragm and bowel wall.
DIAPHRAGM_GAP_MM = 6.0
#: Bowel wall thickness (mm).
BOWEL_WALL_MM = 3.0
#: Diameters (mm) of a juxtapleural tumour (``Anatomy.juxtapleural``).
JUXTAPLEURAL_DIAMETER_MM = (30.0, 60.0)
#: A juxtapleural tumour keeps this far (mm) from the heart and the mediastinum.
JUXTAPLEURAL_CLEARANCE_MM = 5.0
#: Side of the remaining lung in :attr:`Anatomy.one_lung` ("either": drawn per case).
ONE_LUNG_SIDES = ("right", "left", "either")


@dataclass(frozen=True)
class Anatomy:
    """What a phantom case holds beyond the default chest (the default: today's chest CT).

    Parameters
    ----------
    scan_range
        One of :data:`SCAN_RANGES`.
    bowel
        Stomach (gas/fluid level), colon (haustra, gas pockets, stool) and small-bowel loops
        (fluid, gas) below the diaphragm. ``None``: present in the abdominal ranges
        (:data:`ABDOMINAL_RANGES`); otherwise the default chest's small stomach gas bubble only.
    effusion
        A dependent pleural effusion (fluid, not lung) at the base of one or both lungs.
    emphysema
        Emphysema: bullae and low-attenuation areas (lung), upper lobes most.
    one_lung
        ``"right"`` or ``"left"``: only that lung (the other side is a fluid-filled
        pneumonectomy space); ``"either"``: the side is drawn per case; ``None``: both lungs.
    juxtapleural
        The case's tumour (when it has one) is a 30-60 mm mass on the pleura of the chest wall.
    """

    scan_range: str = "chest"
    bowel: bool | None = None
    effusion: bool = False
    emphysema: bool = False
    one_lung: str | None = None
    juxtapleural: bool = False

    def __post_init__(self):
        if self.scan_range not in SCAN_RANGES:
            raise UsageError(f"scan range {self.scan_range!r}: choose one of {', '.join(SCAN_RANGES)}")
        if self.one_lung is not None and self.one_lung not in ONE_LUNG_SIDES:
            raise UsageError(f"one lung {self.one_lung!r}: choose one of {', '.join(ONE_LUNG_SIDES)}")

    @property
    def has_bowel(self) -> bool:
        """Whether the case has the bowel (``bowel``, or by default the abdominal ranges)."""
        return self.scan_range in ABDOMINAL_RANGES if self.bowel is None else bool(self.bowel)

    @property
    def is_default(self) -> bool:
        """Whether this is the default chest (then nothing new is drawn or written)."""
        return self == Anatomy()

    def describe(self) -> str:
        """A short name of the anatomy, e.g. ``cap+bowel+effusion``."""
        parts = [self.scan_range]
        parts += ["bowel"] if self.has_bowel else []
        parts += [name for name, on in (("effusion", self.effusion), ("emphysema", self.emphysema),
                                        ("juxtapleural", self.juxtapleural)) if on]
        parts += [f"one-lung-{self.one_lung}"] if self.one_lung else []
        return "+".join(parts)


def side_stream(rng: np.random.Generator, key: int) -> np.random.Generator:
    """A generator derived from ``rng``'s seed (not its state) and ``key``: drawing from it
    leaves ``rng`` as it was, and the same seed gives the same stream."""
    seq = getattr(rng.bit_generator, "seed_seq", None)
    if not isinstance(seq, np.random.SeedSequence):       # a generator without a seed sequence
        return np.random.default_rng(rng.integers(2 ** 63))
    return np.random.default_rng(np.random.SeedSequence(
        seq.entropy, spawn_key=(*seq.spawn_key, _SIDE_STREAM_BASE + key), pool_size=seq.pool_size))


# Spawn keys of the side streams: far from the small keys SeedSequence.spawn hands out.
_SIDE_STREAM_BASE = 0x5EED0000
_EXTRA_ANATOMY = 1


@dataclass
class CTCase:
    """One synthetic CT and its truth, on the grid of its DICOM series."""

    hu: np.ndarray            # (z, y, x) float32 HU; outside the field of view: NaN
    lungs: np.ndarray         # (z, y, x) uint8: 0, RIGHT_LUNG, LEFT_LUNG
    tumour: np.ndarray        # (z, y, x) uint8 0/1
    spacing: tuple[float, float, float]   # (z, y, x) mm
    origin: tuple[float, float, float]    # LPS of voxel [0, 0, 0]: the most inferior slice
    fov_mm: float
    slice_thickness: float
    facts: dict = field(default_factory=dict)
    #: (z, y, x) uint8 truth of the structures that are not lung (:data:`ANATOMY_LABELS`).
    anatomy: np.ndarray | None = None


class Grid:
    """Voxel-centre coordinates (mm) of an axial grid and block-wise painting on it."""

    def __init__(self, z: np.ndarray, y: np.ndarray, x: np.ndarray):
        self.z, self.y, self.x = (np.asarray(a, dtype=np.float32) for a in (z, y, x))
        self.shape = (len(z), len(y), len(x))

    def block(self, zlim, ylim, xlim) -> tuple[slice, slice, slice]:
        """Index slices covering the mm box ``zlim x ylim x xlim`` (may be empty)."""
        return tuple(_index_range(axis, lo, hi) for axis, (lo, hi)
                     in zip((self.z, self.y, self.x), (zlim, ylim, xlim)))

    def coords(self, block):
        """Broadcastable ``Z, Y, X`` mm coordinates of ``block``."""
        zs, ys, xs = block
        return self.z[zs, None, None], self.y[None, ys, None], self.x[None, None, xs]


def _index_range(axis: np.ndarray, lo: float, hi: float) -> slice:
    # The axis is increasing: first and last index inside [lo, hi].
    start = int(np.searchsorted(axis, lo, side="left"))
    stop = int(np.searchsorted(axis, hi, side="right"))
    return slice(start, max(start, stop))


def _paint(labels: np.ndarray, grid: Grid, bounds, inside, value: int, *, where=None) -> None:
    """Set ``labels`` to ``value`` where ``inside(Z, Y, X)`` holds, within the mm ``bounds``.

    ``where`` optionally restricts painting to voxels whose current label is in that set.
    """
    block = grid.block(*bounds)
    if any(s.stop <= s.start for s in block):
        return
    target = labels[block]
    mask = np.broadcast_to(inside(*grid.coords(block)), target.shape)
    if where is not None:
        mask = mask & np.isin(target, where)
    target[mask] = value


def _tube(a, b, radius):
    """Inside-test of the capsule around the segment a-b, and its mm bounds."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    ab = b - a
    length2 = float(ab @ ab)

    def inside(Z, Y, X):
        t = ((X - a[0]) * ab[0] + (Y - a[1]) * ab[1] + (Z - a[2]) * ab[2]) / length2
        t = np.clip(t, 0.0, 1.0)
        dx, dy, dz = X - (a[0] + t * ab[0]), Y - (a[1] + t * ab[1]), Z - (a[2] + t * ab[2])
        return dx * dx + dy * dy + dz * dz <= radius * radius

    lo, hi = np.minimum(a, b) - radius, np.maximum(a, b) + radius
    return ((lo[2], hi[2]), (lo[1], hi[1]), (lo[0], hi[0])), inside


def make_ct(rng: np.random.Generator, *, shape: int = DEFAULT_SHAPE,
            tumour_probability: float = TUMOUR_FRACTION, anatomy: Anatomy | None = None,
            tumour_growth: float = 1.0, noise_rng: np.random.Generator | None = None) -> CTCase:
    """Generate one CT case (by default a chest CT).

    Parameters
    ----------
    rng
        Source of every random choice of the anatomy (same state, same case).
    shape
        In-plane size (rows = columns). Pixel spacing is the field of view over ``shape``; the
        slice spacing is a realistic 1.25-3 mm at 512 (at least
        :data:`ABDOMINAL_MIN_SLICE_MM` for the ranges longer than the chest) and grows as
        ``sqrt(512 / shape)`` for small test cases.
    tumour_probability
        Chance that the case has a lung tumour.
    anatomy
        What the case holds beyond the default chest (:class:`Anatomy`); ``None``: the default.
    tumour_growth
        The tumour's diameter is this times what ``rng`` draws (same place): a follow-up scan
        of the same patient is ``make_ct`` with the baseline's ``rng`` seed, a growth and its
        own ``noise_rng``.
    noise_rng
        Source of the image noise (and the reconstruction's slice thickness); ``None``: ``rng``.
    """
    anatomy = anatomy or Anatomy()
    extra = side_stream(rng, _EXTRA_ANATOMY) if not anatomy.is_default else None
    torso, scan = _draw_patient(rng, extra, anatomy, shape=shape)
    grid = scan.grid
    labels = np.full(grid.shape, AIR, dtype=np.uint8)
    _add_bed(labels, grid, torso, zlim=scan.zlim)
    _add_body(labels, grid, torso, zlim=scan.zlim)
    pleura = _add_lungs(labels, grid, torso, anatomy, extra)
    _add_liver(labels, grid, torso, extra, z0=scan.z0)
    _add_gas_bubble(labels, grid, torso, rng, has_bowel=anatomy.has_bowel)
    _add_heart(labels, grid, torso, rng, z0=scan.z0)
    central_airway = _add_airways(labels, grid, torso, rng, scan, removed_side=pleura[1])

    # --- lung vessels: intersections of two smooth random level sets are tubes ----------------
    _add_vessels(labels, grid, torso.lung_box, rng)
    if anatomy.emphysema:
        _add_emphysema(labels, grid, torso.lung_box, extra, z_base=torso.z_base,
                       lung_height=torso.lung_height)

    # --- truth lungs: the lung region (vessels, small airways inside it), minus the trachea and
    #     main bronchi; split right/left at the patient midline -------------------------------
    in_lung = np.isin(labels, [LUNG, VESSEL, AIRWAY, EMPHYSEMA]) & ~central_airway
    labels[central_airway & (labels != BED_FOAM)] = AIRWAY
    if anatomy.has_bowel:
        _add_bowel(labels, grid, extra, torso, pelvis=scan.pelvis)
    _add_skeleton(labels, grid, rng, centre_x=torso.centre_x, centre_y=torso.centre_y,
                  body_ax=torso.body_ax, body_ay=torso.body_ay, fat=torso.fat,
                  spine_y=torso.spine_y, zlim=scan.zlim, z_base=torso.z_base,
                  z_top=torso.z_apex + NECK_BASE_MM)
    in_lung &= ~np.isin(labels, [BONE, MARROW])
    tumour = _add_lung_tumour(in_lung, labels, grid, torso, rng, extra, scan=scan,
                              probability=tumour_probability,
                              juxtapleural=anatomy.juxtapleural, growth=tumour_growth)
    lungs = _split_lungs(in_lung, labels, grid, torso)

    noise = rng if noise_rng is None else noise_rng
    values, structures = _render(labels, lungs, tumour, torso, scan, noise, anatomy=anatomy)
    thickness = scan.slice_spacing * float(noise.choice([1.0, 1.0, 2.0]))   # sometimes overlapping recon
    return CTCase(
        hu=values, lungs=lungs, tumour=tumour.astype(np.uint8),
        spacing=(float(scan.slice_spacing), float(scan.pixel), float(scan.pixel)),
        origin=(float(scan.x[0]), float(scan.y[0]), float(scan.z[0])), fov_mm=scan.fov,
        slice_thickness=float(round(thickness, 3)),
        facts=_case_facts(torso, scan, anatomy, pleura, tumour_growth=tumour_growth),
        anatomy=structures,
    )


#: The liver keeps its full section down to this far below the lowest lung point (mm), then
#: narrows to its tip (:data:`LIVER_DEPTH_MM` below).
LIVER_FULL_MM = 60.0
LIVER_DEPTH_MM = (140.0, 180.0)
#: A pneumonectomy's bronchial stump: this fraction of the main bronchus is left.
STUMP_FRACTION = 0.35
#: The bowel stays this far (mm) inside the body's soft-tissue outline (abdominal wall muscle).
ABDOMINAL_WALL_MM = 16.0
#: z (mm) of the lowest lung point (the top of the lower diaphragm dome): the phantom's z origin.
LUNG_BASE_Z_MM = 0.0
#: The chest range reaches this far (mm) below the lowest lung point (upper abdomen) and above
#: the lung apices (neck base); the trachea starts above the neck base in every range.
CHEST_BELOW_MM = 55.0
NECK_BASE_MM = 25.0
#: Curvature (1/mm) of the scanner bed's tabletop.
BED_SAG_PER_MM = 0.0006


@dataclass
class _Torso:
    """The body and thoracic cavity of one case (LPS mm), shared by the steps of :func:`make_ct`.

    ``body_ax`` / ``body_ay`` are the half-width and half-depth of the body outline around
    (``centre_x``, ``centre_y``), ``fat`` its fat layer; ``cav_*`` the thoracic cavity's
    half-axes and centre, ``gap`` the anterior junction of the lungs (0: they touch),
    ``mediastinum_mid`` the mediastinum's half-width, ``dome`` and ``right_dome_extra`` the
    height of the diaphragm domes, ``spine_y`` the vertebral body's centre. The methods are the
    analytic shapes the steps share (drawn by :func:`_draw_patient`).
    """

    centre_x: float
    centre_y: float
    body_ax: float
    body_ay: float
    lung_height: float
    fat: float
    cav_ax: float
    cav_ay: float
    cav_cy: float
    gap: float
    mediastinum_mid: float
    dome: float
    right_dome_extra: float
    spine_y: float
    z_base: float = LUNG_BASE_Z_MM

    @property
    def z_apex(self) -> float:
        """z (mm) of the lung apices."""
        return self.z_base + self.lung_height

    @property
    def lung_box(self):
        """The mm bounds ``(z, y, x)`` of both lungs."""
        return ((self.z_base - 1, self.z_apex + 1), (self.cav_cy - self.cav_ay - 2, self.cav_cy + self.cav_ay + 2),
                (self.centre_x - self.cav_ax - 2, self.centre_x + self.cav_ax + 2))

    def body_scale(self, Z):
        """Width of the body at ``Z`` relative to its widest: a little narrower at the ends."""
        t = (Z - self.z_base) / self.lung_height
        return 1.0 - 0.06 * (t - 0.4) ** 2

    def cavity_scale(self, Z):
        """Width of the thoracic cavity at ``Z`` relative to its base: narrowing to the apex."""
        t = np.clip((Z - self.z_base) / self.lung_height, 0.0, 1.0)
        return np.sqrt(np.clip(1.0 - t ** 2.2, 0.0, 1.0)) * (0.92 + 0.08 * (1 - t))

    def mediastinum_halfwidth(self, Y):
        """Half-width (mm) of the mediastinum at ``Y``: narrow at the anterior junction."""
        v = (Y - self.cav_cy) / self.cav_ay                       # -1 anterior ... +1 posterior
        gap, mid = self.gap, self.mediastinum_mid
        return np.interp(v, [-1.2, -0.75, -0.35, 0.3, 0.7, 1.2],
                         [gap / 2, gap / 2 + 4, mid, mid, mid + 4, mid + 10]).astype(np.float32)

    def diaphragm(self, X, Y, side):
        """z (mm) of the diaphragm dome of ``side`` (-1 right, +1 left) at ``X``, ``Y``."""
        cx = side * self.cav_ax * 0.5
        r2 = ((X - cx) / (self.cav_ax * 0.55)) ** 2 + ((Y - self.cav_cy) / (self.cav_ay * 0.9)) ** 2
        lift = self.right_dome_extra if side < 0 else 0.0
        return self.z_base + (self.dome + lift) * np.clip(1.0 - r2, 0.0, 1.0)

    def floor(self, X, Y):
        """Lowest tissue under the lungs at ``X``, ``Y``: the diaphragm of that side."""
        return np.where(X < self.centre_x, self.diaphragm(X, Y, -1), self.diaphragm(X, Y, 1))

    def abdomen_inside(self, Z, Y, X):
        """Inside-test of the abdomen within the abdominal wall's muscle."""
        return _in_ellipse(X, Y, self.centre_x, self.centre_y,
                           self.body_ax * self.body_scale(Z) - self.fat - ABDOMINAL_WALL_MM,
                           self.body_ay - self.fat * 0.8 - ABDOMINAL_WALL_MM)

    def lung_inside(self, side, effusion_mm=None):
        """Inside-test of the lung of ``side``; ``effusion_mm(Z)``: the depth of an effusion
        that moves its posterior edge forward."""
        centre_x, cav_ax, cav_ay, cav_cy = self.centre_x, self.cav_ax, self.cav_ay, self.cav_cy

        def inside(Z, Y, X):
            s = self.cavity_scale(Z)
            if effusion_mm is None:
                in_cavity = ((X - centre_x) / (cav_ax * s + 1e-3)) ** 2 + \
                    ((Y - cav_cy) / (cav_ay * (0.55 + 0.45 * s) + 1e-3)) ** 2 <= 1.0
            else:      # the posterior edge moves forward by the effusion's depth
                depth = effusion_mm(Z)
                in_cavity = ((X - centre_x) / (cav_ax * s + 1e-3)) ** 2 + \
                    ((Y - cav_cy + depth / 2) / (cav_ay * (0.55 + 0.45 * s) - depth / 2 + 1e-3)) ** 2 <= 1.0
            lateral = (side * (X - centre_x) >= self.mediastinum_halfwidth(Y))
            return in_cavity & lateral & (Z >= self.diaphragm(X, Y, side))
        return inside


@dataclass
class _Scan:
    """The reconstruction of one case: field of view, pixel and slice spacing (mm), the
    float64 voxel-centre axes ``x``, ``y``, ``z`` and their :class:`Grid`; ``z0`` is the lowest
    slice, ``pelvis`` how far below the lowest lung point the abdominal ranges reach."""

    fov: float
    pixel: float
    slice_spacing: float
    pelvis: float
    z0: float
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    grid: Grid

    @property
    def zlim(self) -> tuple[float, float]:
        """The z bounds (mm) of the whole scan, a millimetre beyond its first and last slice."""
        return (self.z[0] - 1, self.z[-1] + 1)


def _in_ellipse(X, Y, cx, cy, ax, ay):
    return ((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2 <= 1.0


def _draw_patient(rng: np.random.Generator, extra: np.random.Generator | None, anatomy: Anatomy,
                  *, shape: int) -> tuple[_Torso, _Scan]:
    """Draw the patient's body and cavity from ``rng``, and the scan of ``anatomy``'s range.

    The draws from ``rng`` come in the order the phantom has always made them (body outline,
    slice spacing, fat layer, cavity), so the same seed gives the same patient; the extent of
    the ranges other than the chest comes from ``extra``.
    """
    body_ax = rng.uniform(140.0, 195.0)        # half-width of the body (mm)
    body_ay = rng.uniform(95.0, 125.0)         # half-depth
    fov = float(np.clip(rng.uniform(*FOV_RANGE_MM), 2 * body_ay + 60.0, FOV_RANGE_MM[1]))
    centre_x = rng.uniform(-10.0, 10.0)        # patient centre vs reconstruction centre
    centre_y = rng.uniform(-25.0, -5.0)        # the bed lifts the patient anteriorly
    lung_height = rng.uniform(210.0, 270.0)
    scan = _draw_scan(rng, extra, anatomy, shape=shape, fov=fov, lung_height=lung_height)
    fat = rng.uniform(8.0, 25.0)
    cav_ax = body_ax - fat - rng.uniform(14.0, 20.0)
    cav_ay = body_ay - fat * 0.8 - rng.uniform(12.0, 16.0)
    cav_cy = centre_y + rng.uniform(0.0, 6.0)
    gap = float(rng.choice([0.0, 1.0, 3.0, 6.0]))     # anterior junction; 0: the lungs touch
    mediastinum_mid = rng.uniform(15.0, 24.0)
    dome = rng.uniform(25.0, 40.0)                    # height of the diaphragm domes
    right_dome_extra = rng.uniform(8.0, 18.0)         # the liver lifts the right dome
    spine_y = centre_y + body_ay - fat * 0.8 - rng.uniform(42.0, 52.0)   # vertebral body centre
    torso = _Torso(centre_x=centre_x, centre_y=centre_y, body_ax=body_ax, body_ay=body_ay,
                   lung_height=lung_height, fat=fat, cav_ax=cav_ax, cav_ay=cav_ay, cav_cy=cav_cy,
                   gap=gap, mediastinum_mid=mediastinum_mid, dome=dome,
                   right_dome_extra=right_dome_extra, spine_y=spine_y)
    return torso, scan


def _draw_scan(rng: np.random.Generator, extra: np.random.Generator | None, anatomy: Anatomy, *,
               shape: int, fov: float, lung_height: float) -> _Scan:
    """The grid of the scan: the slice spacing drawn from ``rng``, the range's extent from
    ``extra`` (the chest: :data:`CHEST_BELOW_MM` below the lungs to :data:`NECK_BASE_MM` above)."""
    pixel = fov / shape
    z_base = LUNG_BASE_Z_MM
    z_apex = z_base + lung_height
    slice_spacing = float(rng.choice(SLICE_SPACINGS_MM)) * np.sqrt(DEFAULT_SHAPE / shape)
    pelvis = float(extra.uniform(*PELVIS_DEPTH_MM)) if extra is not None else CHEST_BELOW_MM
    if anatomy.scan_range == "chest":
        n_slices = int(np.ceil((lung_height + CHEST_BELOW_MM + NECK_BASE_MM) / slice_spacing))
        z0 = z_base - CHEST_BELOW_MM
    else:
        z0, z_top = _scan_extent(anatomy.scan_range, extra, z_base=z_base, z_apex=z_apex,
                                 above=NECK_BASE_MM, pelvis=pelvis)
        if anatomy.scan_range in ABDOMINAL_RANGES:
            slice_spacing = max(slice_spacing, ABDOMINAL_MIN_SLICE_MM * np.sqrt(DEFAULT_SHAPE / shape))
        n_slices = int(np.ceil((z_top - z0) / slice_spacing))
    half = (shape - 1) / 2.0 * pixel
    x = np.linspace(-half, half, shape)
    y = np.linspace(-half, half, shape)
    z = z0 + slice_spacing * np.arange(n_slices)
    return _Scan(fov=fov, pixel=pixel, slice_spacing=slice_spacing, pelvis=pelvis, z0=z0,
                 x=x, y=y, z=z, grid=Grid(z, y, x))


def _add_bed(labels: np.ndarray, grid: Grid, torso: _Torso, *, zlim) -> None:
    """The scanner bed under the body: a curved carbon-fibre shell with a foam core."""
    bed_top = torso.centre_y + torso.body_ay + 1.0
    bed_sag = BED_SAG_PER_MM
    _paint(labels, grid, (zlim, (bed_top - 5, bed_top + 60), (-230, 230)),
           lambda Z, Y, X: (Y >= bed_top + bed_sag * X * X) & (Y <= bed_top + 45 + bed_sag * X * X)
           & (np.abs(X) <= 220), BED_SHELL)
    _paint(labels, grid, (zlim, (bed_top - 5, bed_top + 60), (-230, 230)),
           lambda Z, Y, X: (Y >= bed_top + 3 + bed_sag * X * X) & (Y <= bed_top + 42 + bed_sag * X * X)
           & (np.abs(X) <= 216), BED_FOAM)


def _add_body(labels: np.ndarray, grid: Grid, torso: _Torso, *, zlim) -> None:
    """The body outline: a fat layer around soft tissue."""
    t = torso
    body_box = (zlim, (t.centre_y - t.body_ay - 2, t.centre_y + t.body_ay + 2),
                (t.centre_x - t.body_ax - 2, t.centre_x + t.body_ax + 2))
    _paint(labels, grid, body_box,
           lambda Z, Y, X: _in_ellipse(X, Y, t.centre_x, t.centre_y, t.body_ax * t.body_scale(Z), t.body_ay),
           FAT)
    _paint(labels, grid, body_box,
           lambda Z, Y, X: _in_ellipse(X, Y, t.centre_x, t.centre_y, t.body_ax * t.body_scale(Z) - t.fat,
                                       t.body_ay - t.fat * 0.8), SOFT)


def _add_lungs(labels: np.ndarray, grid: Grid, torso: _Torso, anatomy: Anatomy,
               extra: np.random.Generator | None) -> tuple[tuple[int, ...], int]:
    """Both lungs, or on request a pneumonectomy space or an effusion at a lung's base.

    Returns the sides with an effusion and the side of the pneumonectomy, as
    :func:`_draw_pleura` (drawn from ``extra``; without it: none).
    """
    lung_box = torso.lung_box
    effusion_sides, removed_side = (), 0
    if extra is not None:
        effusion_sides, removed_side = _draw_pleura(anatomy, extra)
    for side in (-1, +1):
        if side == removed_side:                 # pneumonectomy: the hemithorax is fluid
            _paint(labels, grid, lung_box, torso.lung_inside(side), SPACE)
        elif side in effusion_sides:
            depth_mm, height_mm = extra.uniform(25.0, 55.0), extra.uniform(70.0, 140.0)
            _paint(labels, grid, lung_box, torso.lung_inside(side), EFFUSION)
            _paint(labels, grid, lung_box,
                   torso.lung_inside(side, _effusion_profile(depth_mm, height_mm, torso.z_base)),
                   LUNG, where=[EFFUSION])
        else:
            _paint(labels, grid, lung_box, torso.lung_inside(side), LUNG)
    return effusion_sides, removed_side


def _add_liver(labels: np.ndarray, grid: Grid, torso: _Torso, extra: np.random.Generator | None,
               *, z0: float) -> None:
    """The liver under the right dome; in a scan below the chest (``extra``) it narrows to its
    tip :data:`LIVER_DEPTH_MM` under the lungs."""
    t = torso
    liver_full = t.z_base - LIVER_FULL_MM            # the liver narrows below this
    lateral = (t.centre_x - t.cav_ax, t.centre_x + 20)
    _paint(labels, grid, ((max(z0, liver_full), t.z_base + t.dome + t.right_dome_extra), t.lung_box[1], lateral),
           lambda Z, Y, X: (Z < t.diaphragm(X, Y, -1) - 4) & _in_ellipse(
               X, Y, t.centre_x - t.cav_ax * 0.35, t.cav_cy, t.cav_ax * 0.75, t.cav_ay * 0.85),
           LIVER, where=[SOFT])
    if z0 < liver_full and extra is not None:
        liver_bottom = t.z_base - extra.uniform(*LIVER_DEPTH_MM)

        def liver_taper(Z):
            return np.sqrt(np.clip(1.0 - ((liver_full - Z) / (liver_full - liver_bottom)) ** 2, 0.0, 1.0))

        _paint(labels, grid, ((liver_bottom, liver_full), t.lung_box[1], lateral),
               lambda Z, Y, X: (Z < liver_full) & _in_ellipse(
                   X, Y, t.centre_x - t.cav_ax * 0.35, t.cav_cy, t.cav_ax * 0.75 * liver_taper(Z) + 1e-3,
                   t.cav_ay * 0.85 * liver_taper(Z) + 1e-3), LIVER, where=[SOFT])


def _add_gas_bubble(labels: np.ndarray, grid: Grid, torso: _Torso, rng: np.random.Generator, *,
                    has_bowel: bool) -> None:
    """The default chest's stomach gas bubble under the left dome (none with the bowel, which
    has the whole stomach; its radius is drawn either way, so that later draws stay)."""
    t = torso
    gas_r = rng.uniform(18.0, 30.0)
    if has_bowel:
        return
    gas_c = (t.centre_x + t.cav_ax * 0.45, t.cav_cy - t.cav_ay * 0.2, t.z_base - 12.0)
    _paint(labels, grid, ((gas_c[2] - gas_r, gas_c[2] + gas_r * 0.6), (gas_c[1] - gas_r * 1.3, gas_c[1] + gas_r * 1.3),
                          (gas_c[0] - gas_r * 1.3, gas_c[0] + gas_r * 1.3)),
           lambda Z, Y, X: (((X - gas_c[0]) / (gas_r * 1.3)) ** 2 + ((Y - gas_c[1]) / (gas_r * 1.2)) ** 2
                            + ((Z - gas_c[2]) / gas_r) ** 2 <= 1.0) & (Z < t.diaphragm(X, Y, 1) - 6),
           GAS, where=[SOFT, FAT])


def _add_heart(labels: np.ndarray, grid: Grid, torso: _Torso, rng: np.random.Generator, *,
               z0: float) -> None:
    """The heart (an ellipsoid that indents the left lung) and the aorta: ascending, the arch
    and descending beside the spine to below the scan (painted as heart: soft tissue)."""
    t = torso
    heart_c = np.array([t.centre_x + rng.uniform(12.0, 28.0), t.cav_cy - t.cav_ay * 0.25,
                        t.z_base + t.dome * 0.6 + rng.uniform(30.0, 45.0)])
    heart_r = np.array([rng.uniform(45.0, 55.0), rng.uniform(38.0, 48.0), rng.uniform(42.0, 52.0)])
    _paint(labels, grid, ((heart_c[2] - heart_r[2], heart_c[2] + heart_r[2]),
                          (heart_c[1] - heart_r[1], heart_c[1] + heart_r[1]),
                          (heart_c[0] - heart_r[0], heart_c[0] + heart_r[0])),
           lambda Z, Y, X: ((X - heart_c[0]) / heart_r[0]) ** 2 + ((Y - heart_c[1]) / heart_r[1]) ** 2
           + ((Z - heart_c[2]) / heart_r[2]) ** 2 <= 1.0, HEART)
    arch_z = t.z_base + t.lung_height * 0.72
    aorta_r = rng.uniform(11.0, 15.0)
    desc = (t.centre_x + 22.0, t.spine_y - 22.0)
    asc = (t.centre_x + 8.0, t.cav_cy - t.cav_ay * 0.35)
    for a, b in (((asc[0], asc[1], heart_c[2]), (asc[0], asc[1], arch_z)),
                 ((asc[0], asc[1], arch_z), (desc[0], desc[1], arch_z + 8)),
                 ((desc[0], desc[1], arch_z + 8), (desc[0], desc[1], z0 - 5))):
        bounds, inside = _tube(a, b, aorta_r)
        _paint(labels, grid, bounds, inside, HEART)


def _add_airways(labels: np.ndarray, grid: Grid, torso: _Torso, rng: np.random.Generator,
                 scan: _Scan, *, removed_side: int) -> np.ndarray:
    """The trachea and main bronchi (returned as a mask, painted later) and three lobar bronchi
    per lung (painted into the lung); a pneumonectomy (``removed_side``) leaves a stump."""
    t = torso
    trachea_r = rng.uniform(8.0, 10.5)
    trachea_y = t.spine_y - rng.uniform(38.0, 46.0)
    carina = np.array([t.centre_x, trachea_y, t.z_base + t.lung_height * rng.uniform(0.55, 0.62)])
    hila = {
        -1: carina + np.array([-t.cav_ax * 0.42, 6.0, -rng.uniform(28.0, 36.0)]),   # right: steeper
        +1: carina + np.array([t.cav_ax * 0.45, 8.0, -rng.uniform(18.0, 26.0)]),
    }
    # the trachea leaves the top of the scan (and starts above the neck base in any range)
    trachea_top = max(float(scan.z[-1]), t.z_apex + NECK_BASE_MM - scan.slice_spacing) + 10.0
    airway_tubes = [((t.centre_x, trachea_y, trachea_top), tuple(carina), trachea_r)]
    for s in (-1, 1):                             # a pneumonectomy leaves a bronchial stump
        end = hila[s] if s != removed_side else carina + STUMP_FRACTION * (hila[s] - carina)
        airway_tubes.append((tuple(carina), tuple(end), trachea_r * (0.72 if s < 0 else 0.62)))
    central_airway = np.zeros(grid.shape, dtype=bool)
    for a, b, r in airway_tubes:
        bounds, inside = _tube(a, b, r)
        block = grid.block(*bounds)
        central_airway[block] |= inside(*grid.coords(block))
    lobar_tubes = []
    for s in (-1, 1):
        for _ in range(3):
            direction = np.array([s * rng.uniform(0.3, 1.0), rng.uniform(-0.6, 0.6), rng.uniform(-1.0, 0.8)])
            direction /= np.linalg.norm(direction)
            end = hila[s] + direction * rng.uniform(35.0, 60.0)
            lobar_tubes.append((tuple(hila[s]), tuple(end), rng.uniform(2.5, 4.0)))
    for a, b, r in lobar_tubes:
        bounds, inside = _tube(a, b, r)
        _paint(labels, grid, bounds, inside, AIRWAY, where=[LUNG])
    return central_airway


def _add_lung_tumour(in_lung: np.ndarray, labels: np.ndarray, grid: Grid, torso: _Torso,
                     rng: np.random.Generator, extra: np.random.Generator | None, *, scan: _Scan,
                     probability: float, juxtapleural: bool, growth: float) -> np.ndarray:
    """With chance ``probability``, a tumour in the lung (:func:`_add_tumour`, or with
    ``juxtapleural`` :func:`_add_juxtapleural`); its mask. The tumour is painted into
    ``labels`` and added to ``in_lung`` (in place)."""
    t = torso
    tumour = np.zeros(grid.shape, dtype=bool)
    if rng.uniform() < probability and in_lung.any():
        if juxtapleural:
            tumour = _add_juxtapleural(in_lung, labels, grid, extra, centre=(t.centre_x, t.cav_cy),
                                       z_range=(t.z_base + t.dome + t.right_dome_extra + 5.0, t.z_apex - 40.0),
                                       mediastinum_mm=t.mediastinum_mid, growth=growth)
        else:
            tumour = _add_tumour(in_lung, grid, rng, pixel=scan.pixel, growth=growth)
        labels[tumour] = TUMOUR
        in_lung |= tumour
    return tumour


def _split_lungs(in_lung: np.ndarray, labels: np.ndarray, grid: Grid, torso: _Torso) -> np.ndarray:
    """The lung truth: ``in_lung`` split at the patient's midline into :data:`RIGHT_LUNG` and
    :data:`LEFT_LUNG`, each lung's islands dropped (:func:`_drop_islands`)."""
    lungs = np.zeros(grid.shape, dtype=np.uint8)
    x_right = (grid.x < torso.centre_x)[None, None, :]
    lungs[in_lung & x_right] = RIGHT_LUNG
    lungs[in_lung & ~x_right] = LEFT_LUNG
    _drop_islands(lungs, labels, grid.block(*torso.lung_box))
    return lungs


def _render(labels: np.ndarray, lungs: np.ndarray, tumour: np.ndarray, torso: _Torso, scan: _Scan,
            noise: np.random.Generator, *, anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray | None]:
    """The image (HU, NaN outside the circular field of view) and the anatomy truth (``None``
    for the default chest); ``lungs`` and ``tumour`` are cleared outside the field of view."""
    grid = scan.grid
    fov_outside = (grid.x[None, :] ** 2 + grid.y[:, None] ** 2) > (scan.fov / 2.0) ** 2
    values = _intensities(labels, grid, noise, cav_cy=torso.cav_cy, cav_ay=torso.cav_ay,
                          lung_shift=EMPHYSEMA_LUNG_SHIFT_HU if anatomy.emphysema else 0.0)
    values[:, fov_outside] = np.nan
    lungs[:, fov_outside] = 0
    tumour[:, fov_outside] = False
    structures = None
    if not anatomy.is_default:
        structures = _ANATOMY_OF_TISSUE[labels]
        structures[(labels == AIRWAY) & (lungs == 0)] = AIRWAY_TRUTH
        structures[:, fov_outside] = 0
    return values, structures


def _case_facts(torso: _Torso, scan: _Scan, anatomy: Anatomy, pleura: tuple[tuple[int, ...], int],
                *, tumour_growth: float) -> dict:
    """:attr:`CTCase.facts`: the lung gap, whether the field of view cuts the body, and what
    the anatomy options put into the case (``pleura``: effusion sides and removed side)."""
    effusion_sides, removed_side = pleura
    facts = {"lung_gap_mm": torso.gap,
             "body_cut_by_fov": bool(torso.body_ax > scan.fov / 2 - abs(torso.centre_x))}
    if not anatomy.is_default:
        facts.update(anatomy=anatomy.describe(), scan_range=anatomy.scan_range,
                     midline_x_mm=float(torso.centre_x),
                     bowel=anatomy.has_bowel,
                     effusion=[("right" if s < 0 else "left") for s in effusion_sides],
                     emphysema=anatomy.emphysema,
                     one_lung={-1: "left", 0: None, 1: "right"}[removed_side],
                     juxtapleural=anatomy.juxtapleural)
    if tumour_growth != 1.0:
        facts["tumour_growth"] = float(tumour_growth)
    return facts


def _scan_extent(scan_range: str, rng: np.random.Generator, *, z_base: float, z_apex: float,
                 above: float, pelvis: float) -> tuple[float, float]:
    """Lowest and highest slice position (mm) of a scan range other than the chest."""
    if scan_range == "cap":
        return z_base - pelvis, z_apex + above
    if scan_range == "abdomen":                  # starts just under the lowest lung point
        return z_base - pelvis, z_base - float(rng.uniform(4.0, 10.0))
    if scan_range == "bases":
        return z_base - float(rng.uniform(*BASES_DEPTH_MM)), z_base + float(rng.uniform(*BASES_TOP_MM))
    return z_apex - float(rng.uniform(*APICES_HEIGHT_MM)), z_apex + above     # apices


def _draw_pleura(anatomy: Anatomy, rng: np.random.Generator) -> tuple[tuple[int, ...], int]:
    """Sides (-1 right, +1 left) with an effusion, and the side of a pneumonectomy (0: none)."""
    removed = 0
    if anatomy.one_lung is not None:
        remaining = anatomy.one_lung if anatomy.one_lung != "either" else \
            ("right", "left")[int(rng.integers(2))]
        removed = +1 if remaining == "right" else -1
    sides: tuple[int, ...] = ()
    if anatomy.effusion:
        sides = ((-1,), (1,), (-1, 1))[int(rng.integers(3))]
        if removed:                               # the remaining lung has it
            sides = (-removed,)
    return sides, removed


def _effusion_profile(depth_mm: float, height_mm: float, z_base: float):
    """Depth (mm, front to back) of a dependent effusion at each height: deepest at the base."""
    def depth(Z):
        return depth_mm * np.clip(1.0 - (Z - z_base) / height_mm, 0.0, 1.0) ** 0.7
    return depth


def _upsample(field: np.ndarray, positions) -> np.ndarray:
    """Trilinear values of ``field`` (float32, unit spacing) at the outer product of three 1D
    ``positions`` in its index units (separable: one axis at a time)."""
    out = field
    for axis in (2, 1, 0):
        pos = np.clip(np.asarray(positions[axis], dtype=np.float64), 0.0, field.shape[axis] - 1.000001)
        low = np.floor(pos).astype(int)
        weight = (pos - low).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = -1
        weight = weight.reshape(shape)
        out = out.take(low, axis) * (1 - weight) + out.take(low + 1, axis) * weight
    return out


def _add_emphysema(labels: np.ndarray, grid: Grid, lung_box, rng: np.random.Generator, *,
                   z_base: float, lung_height: float) -> None:
    """Low-attenuation areas (a smooth random field above a height-dependent level: 3-8 % of
    the lung at the base, 20-35 % at the apex) and a few bullae of 8-22 mm radius."""
    from scipy import ndimage
    from scipy.special import ndtri

    block = grid.block(*lung_box)
    if any(s.stop <= s.start for s in block):
        return
    Z, Y, X = grid.coords(block)
    step = 2.0
    shape = tuple(int(np.ceil((c.max() - c.min()) / step)) + 2 for c in (Z, Y, X))
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=1.2)
    field /= field.std()
    fine = _upsample(field, [(c.ravel() - c.min()) / step for c in (Z, Y, X)])
    low, high = rng.uniform(0.03, 0.08), rng.uniform(0.2, 0.35)
    t = np.clip((Z - z_base) / lung_height, 0.0, 1.0)
    level = ndtri(1.0 - (low + (high - low) * t)).astype(np.float32)
    target = labels[block]
    target[(fine > level) & np.isin(target, [LUNG, VESSEL])] = EMPHYSEMA
    lung = np.flatnonzero(target == LUNG)
    if not len(lung):
        return
    for index in rng.choice(lung, size=min(int(rng.integers(2, 6)), len(lung)), replace=False):
        iz, iy, ix = np.unravel_index(index, target.shape)
        c = (Z.ravel()[iz], Y.ravel()[iy], X.ravel()[ix])
        r = rng.uniform(8.0, 22.0)
        _paint(labels, grid, tuple((v - r, v + r) for v in c),
               lambda Zc, Yc, Xc, c=c, r=r: (Zc - c[0]) ** 2 + (Yc - c[1]) ** 2 + (Xc - c[2]) ** 2 <= r * r,
               EMPHYSEMA, where=[LUNG, VESSEL, EMPHYSEMA])


def _catmull_rom(points: np.ndarray, step: float) -> np.ndarray:
    """Samples about ``step`` mm apart on the Catmull-Rom curve through ``points`` (N, D); the
    first three columns are x, y, z, the others (radius, gas level ...) are carried along."""
    padded = np.vstack([points[:1], points, points[-1:]])
    pieces = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1:i + 3]
        n = max(2, int(np.ceil(np.linalg.norm(p2[:3] - p1[:3]) / step)))
        t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
        pieces.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                             + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    pieces.append(padded[-2][None])
    return np.vstack(pieces)


#: Colon centreline: (x / cavity half-width, y / cavity half-depth, z in mm from the lowest
#: lung point, or ("P", mm) above the pelvic floor, radius mm, gas level, haustra weight).
#: The gas level is where gas ends, as a fraction of the radius from the tube's centre toward
#: the back (-1: no gas, +1: all gas); gas rises to the front of a supine patient.
_COLON = (   # fx,    fy,   z,             r,   level, haustra
    (-0.62, 0.05, ("P", 125.0), 32.0, -0.1, 1.0),    # caecum
    (-0.72, 0.28, ("P", 175.0), 28.0, -0.3, 1.0),    # ascending colon
    (-0.74, 0.30, -120.0, 27.0, -0.2, 1.0),
    (-0.62, -0.25, -95.0, 26.0, 0.3, 1.0),           # hepatic flexure
    (-0.30, -0.62, -105.0, 26.0, 0.55, 1.0),         # transverse colon, sagging in front
    (0.05, -0.66, -125.0, 25.0, 0.6, 1.0),
    (0.40, -0.55, -80.0, 25.0, 0.6, 1.0),
    (0.66, -0.25, -30.0, 24.0, 0.7, 1.0),            # splenic flexure, up under the left dome
    (0.76, 0.12, -8.0, 23.0, 0.6, 1.0),
    (0.80, 0.35, -60.0, 22.0, 0.3, 0.6),             # descending colon
    (0.80, 0.35, ("P", 160.0), 21.0, 0.2, 0.6),
    (0.50, 0.05, ("P", 115.0), 20.0, 0.4, 0.3),      # sigmoid
    (0.12, -0.25, ("P", 100.0), 20.0, 0.5, 0.3),
    (-0.10, 0.20, ("P", 80.0), 20.0, 0.2, 0.3),
    (0.00, 0.50, ("P", 60.0), 22.0, -0.2, 0.0),      # rectum
    (0.00, 0.55, ("P", 15.0), 20.0, -0.4, 0.0),
)
#: Small-bowel loops: length (mm), radius (mm) of the walk's tube; step of every centreline (mm).
SMALL_BOWEL_MM = (1800.0, 2600.0)
SMALL_BOWEL_RADIUS_MM = (10.0, 13.5)
_BOWEL_STEP_MM = 6.0


def _add_bowel(labels: np.ndarray, grid: Grid, rng: np.random.Generator, torso: _Torso, *,
               pelvis: float) -> None:
    """Stomach, colon and small bowel: tubes (and the stomach's ellipsoid) of wall, gas in front
    of a gas/fluid level and fluid or stool behind it, kept :data:`DIAPHRAGM_GAP_MM` under the
    lungs' floor and inside the abdominal wall; painted over soft tissue and fat only.

    Every voxel belongs to the structure whose surface it lies deepest under (one pass per
    tube segment over its bounding box, then one vectorised decision).
    """
    bowel = _draw_bowel(rng, torso, pelvis=pelvis)
    claimed = _claim_bowel(grid, bowel)
    if claimed is None:
        return
    box, depth, owner = claimed
    _fill_bowel(labels, grid, torso, bowel, box=box, depth=depth, owner=owner)
    _mottle_stool(labels[box], grid.coords(box), rng)


@dataclass
class _Bowel:
    """The tube segments of the colon and small bowel and the stomach's ellipsoid (mm).

    Segment ``i`` runs from ``a[i]`` to ``b[i]`` (x, y, z) with radius ``ra[i]`` to ``rb[i]``,
    gas level ``level[i]`` (as in :data:`_COLON`) and ``content[i]`` (the label behind the
    level); the stomach has centre ``stomach_c`` and radii ``stomach_r`` (x, y, z) and its own
    gas level.
    """

    a: np.ndarray
    b: np.ndarray
    ra: np.ndarray
    rb: np.ndarray
    level: np.ndarray
    content: np.ndarray
    stomach_c: np.ndarray
    stomach_r: np.ndarray
    stomach_level: float


def _draw_bowel(rng: np.random.Generator, torso: _Torso, *, pelvis: float) -> _Bowel:
    """Draw the colon, the small bowel and the stomach (in this order, from ``rng``)."""
    t = torso
    colon = _colon_centreline(rng, torso, pelvis=pelvis)
    small = _small_bowel_centreline(rng, torso, pelvis=pelvis)
    # segments: (a, b, radius a, radius b, gas level, content)
    segments = [(c[:-1, :3], c[1:, :3], c[:-1, 3], c[1:, 3], (c[:-1, 4] + c[1:, 4]) / 2, content)
                for c, content in ((colon, STOOL), (small, BOWEL_FLUID))]
    # the stomach: under the left dome, gas in front of a level, fluid behind it
    stomach_c = np.array([t.centre_x + 0.42 * t.cav_ax, t.cav_cy - 0.12 * t.cav_ay, 0.0])
    stomach_r = np.array([rng.uniform(40.0, 55.0), rng.uniform(34.0, 46.0), rng.uniform(55.0, 75.0)])
    stomach_c[2] = t.z_base - 0.4 * stomach_r[2]
    stomach_level = rng.uniform(-0.4, 0.3)
    return _Bowel(a=np.vstack([s[0] for s in segments]), b=np.vstack([s[1] for s in segments]),
                  ra=np.concatenate([s[2] for s in segments]), rb=np.concatenate([s[3] for s in segments]),
                  level=np.concatenate([s[4] for s in segments]),
                  content=np.concatenate([np.full(len(s[0]), s[5], np.uint8) for s in segments]),
                  stomach_c=stomach_c, stomach_r=stomach_r, stomach_level=stomach_level)


def _colon_centreline(rng: np.random.Generator, torso: _Torso, *, pelvis: float) -> np.ndarray:
    """Samples (x, y, z, radius, gas level, haustra) along the colon: the control points of
    :data:`_COLON` jittered, haustra as a periodic narrowing along the arc length."""
    t = torso

    def point(fx, fy, z):
        z = -pelvis + z[1] if isinstance(z, tuple) else z
        return t.centre_x + fx * t.cav_ax, t.cav_cy + fy * t.cav_ay, t.z_base + z

    control = np.array([(*point(fx, fy, z), r * rng.uniform(0.85, 1.15),
                         np.clip(level + rng.uniform(-0.25, 0.25), -1.0, 0.9), haustra)
                        for fx, fy, z, r, level, haustra in _COLON])
    control[:, :2] += rng.uniform(-6.0, 6.0, size=(len(control), 2))
    colon = _catmull_rom(control, _BOWEL_STEP_MM / 2)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(colon[:, :3], axis=0), axis=1))]
    period, phase = rng.uniform(22.0, 32.0), rng.uniform(0.0, 2 * np.pi)
    colon[:, 3] *= 1.0 - 0.28 * colon[:, 5] * (0.5 + 0.5 * np.cos(2 * np.pi * arc / period + phase)) ** 6
    colon[:, 4] += 0.2 * np.sin(2 * np.pi * arc / rng.uniform(150.0, 300.0) + rng.uniform(0, 2 * np.pi))
    return colon


def _small_bowel_centreline(rng: np.random.Generator, torso: _Torso, *, pelvis: float) -> np.ndarray:
    """Samples (x, y, z, radius, gas level) along the small bowel: a random walk with momentum
    inside the mid and lower abdomen, with fluid and a few gas pockets."""
    from scipy.ndimage import gaussian_filter1d

    t = torso
    sb_centre = np.array([t.centre_x, t.cav_cy - 0.1 * t.cav_ay, t.z_base - 0.55 * pelvis])
    sb_radii = np.array([0.5 * t.cav_ax, 0.42 * t.cav_ay, 0.27 * pelvis])
    steps = int(rng.uniform(*SMALL_BOWEL_MM) / _BOWEL_STEP_MM)
    position = sb_centre + rng.uniform(-0.3, 0.3, 3) * sb_radii
    direction = rng.standard_normal(3)
    walk = np.empty((steps, 3))
    for i in range(steps):                        # a path of a few hundred points, not voxels
        direction = direction / np.linalg.norm(direction) + rng.normal(0.0, 0.45, 3)
        direction /= np.linalg.norm(direction)
        if np.linalg.norm((position + _BOWEL_STEP_MM * direction - sb_centre) / sb_radii) > 1.0:
            direction = (sb_centre - position) / np.linalg.norm(sb_centre - position) + rng.normal(0, 0.3, 3)
            direction /= np.linalg.norm(direction)
        position = position + _BOWEL_STEP_MM * direction
        walk[i] = position
    pockets = gaussian_filter1d(rng.standard_normal(steps), 10.0)
    pockets /= pockets.std() + 1e-9
    sb_level = np.where(pockets > 0.9, np.clip(-0.4 + 0.4 * pockets, -0.4, 0.5), -1.5)
    return np.column_stack([walk, np.full(steps, rng.uniform(*SMALL_BOWEL_RADIUS_MM))
                            * rng.uniform(0.9, 1.1, steps), sb_level])


def _claim_bowel(grid: Grid, bowel: _Bowel) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """The block of the grid around the bowel, and in it each voxel's signed depth (mm, < 0
    inside) under the surface of the structure that owns it and the owner's index (segment
    ``i``, or ``len(a)`` for the stomach; -1: none within a wall's thickness); ``None`` when the
    block lies outside the grid."""
    a, b, ra, rb = bowel.a, bowel.b, bowel.ra, bowel.rb
    stomach_c, stomach_r = bowel.stomach_c, bowel.stomach_r
    wall = BOWEL_WALL_MM
    lo = np.minimum(np.minimum(a, b).min(axis=0), stomach_c - stomach_r) - 40.0
    hi = np.maximum(np.maximum(a, b).max(axis=0), stomach_c + stomach_r) + 40.0
    box = grid.block((lo[2], hi[2]), (lo[1], hi[1]), (lo[0], hi[0]))
    if any(s.stop <= s.start for s in box):
        return None
    offset = np.array([s.start for s in box])
    depth = np.full(tuple(s.stop - s.start for s in box), np.inf, dtype=np.float32)
    owner = np.full(depth.shape, -1, dtype=np.int32)

    def claim(bounds, signed, index):
        sub = grid.block(*bounds)
        if any(s.stop <= s.start for s in sub):
            return
        local = tuple(slice(s.start - o, s.stop - o) for s, o in zip(sub, offset))
        d = signed(*grid.coords(sub))
        view, who = depth[local], owner[local]
        better = (d < view) & (d < wall)
        view[better] = d[better]
        who[better] = index

    for i in range(len(a)):
        r = max(ra[i], rb[i]) + wall
        seg_lo, seg_hi = np.minimum(a[i], b[i]) - r, np.maximum(a[i], b[i]) + r
        ab = (b[i] - a[i]).astype(np.float32)
        length2 = float(ab @ ab) + 1e-6

        def signed(Z, Y, X, i=i, ab=ab, length2=length2):
            t = np.clip(((X - a[i, 0]) * ab[0] + (Y - a[i, 1]) * ab[1] + (Z - a[i, 2]) * ab[2]) / length2, 0, 1)
            dx, dy, dz = X - a[i, 0] - t * ab[0], Y - a[i, 1] - t * ab[1], Z - a[i, 2] - t * ab[2]
            return np.sqrt(dx * dx + dy * dy + dz * dz) - (ra[i] + t * (rb[i] - ra[i]))
        claim(((seg_lo[2], seg_hi[2]), (seg_lo[1], seg_hi[1]), (seg_lo[0], seg_hi[0])), signed, i)

    def stomach(Z, Y, X):
        rho = np.sqrt(((X - stomach_c[0]) / stomach_r[0]) ** 2 + ((Y - stomach_c[1]) / stomach_r[1]) ** 2
                      + ((Z - stomach_c[2]) / stomach_r[2]) ** 2)
        return (rho - 1.0) * stomach_r.min()
    s_lo, s_hi = stomach_c - stomach_r - wall, stomach_c + stomach_r + wall
    claim(((s_lo[2], s_hi[2]), (s_lo[1], s_hi[1]), (s_lo[0], s_hi[0])), stomach, len(a))
    return box, depth, owner


def _fill_bowel(labels: np.ndarray, grid: Grid, torso: _Torso, bowel: _Bowel, *, box,
                depth: np.ndarray, owner: np.ndarray) -> None:
    """One decision for every claimed voxel of ``box`` (:func:`_claim_bowel`): free soft tissue
    or fat inside the abdomen becomes the owner's lumen (gas in front of its level, its content
    behind) or wall, below the lungs' floor."""
    a, b = bowel.a, bowel.b
    centre_y = np.append((a[:, 1] + b[:, 1]) / 2, bowel.stomach_c[1])
    radius = np.append((bowel.ra + bowel.rb) / 2, bowel.stomach_r[1])
    gas_y = (centre_y + np.append(bowel.level, bowel.stomach_level) * radius).astype(np.float32)
    fill = np.append(bowel.content, np.uint8(BOWEL_FLUID))
    Z, Y, X = grid.coords(box)
    target = labels[box]
    claimed = owner >= 0
    lung_floor = torso.floor(X, Y)
    free = claimed & np.isin(target, [SOFT, FAT]) & torso.abdomen_inside(Z, Y, X)
    lumen = free & (depth < 0) & (Z < lung_floor - DIAPHRAGM_GAP_MM)
    tube_wall = free & ~lumen & (Z < lung_floor - DIAPHRAGM_GAP_MM / 2)
    who = np.where(claimed, owner, 0)
    gas = lumen & (Y < gas_y[who])
    target[tube_wall] = SOFT
    target[lumen] = fill[who[lumen]]
    target[gas] = BOWEL_GAS


#: Stool is mottled: gas bubbles in this fraction of cells of this size (mm).
STOOL_BUBBLE_CELL_MM = 3.0
STOOL_BUBBLE_FRACTION = 0.06


def _mottle_stool(target: np.ndarray, coords, rng: np.random.Generator) -> None:
    """Small gas bubbles in the stool of ``target`` (a block of labels at the mm ``coords``
    ``Z, Y, X``): :data:`STOOL_BUBBLE_FRACTION` of cells of :data:`STOOL_BUBBLE_CELL_MM`."""
    stool = target == STOOL
    if stool.any():
        Z, Y, X = coords
        cell = STOOL_BUBBLE_CELL_MM
        cells = tuple(int(np.ceil((c.max() - c.min()) / cell)) + 1 for c in (Z, Y, X))
        bubbles = rng.uniform(size=cells) < STOOL_BUBBLE_FRACTION
        index = [np.clip(((c.ravel() - c.min()) / cell).astype(int), 0, n - 1) for c, n in zip((Z, Y, X), cells)]
        target[stool & bubbles.take(index[0], 0).take(index[1], 1).take(index[2], 2)] = BOWEL_GAS


def _add_juxtapleural(in_lung: np.ndarray, labels: np.ndarray, grid: Grid, rng: np.random.Generator,
                      *, centre, z_range, mediastinum_mm: float, growth: float = 1.0) -> np.ndarray:
    """A lobulated 30-60 mm mass on the costal pleura: its centre a little inside the lung's
    surface against the chest wall, the part inside the lung is the tumour (its mask). It
    keeps :data:`JUXTAPLEURAL_CLEARANCE_MM` from the heart and the mediastinum (a mass that
    touches the chest wall and the mediastinum alike is another case)."""
    diameter = rng.uniform(*JUXTAPLEURAL_DIAMETER_MM)
    radius = diameter / 2.0
    inset = rng.uniform(0.15, 0.35) * radius
    lobes = rng.uniform(0.0, 2 * np.pi, size=3)
    tumour = np.zeros(grid.shape, dtype=bool)
    zs = _index_range(grid.z, z_range[0] + radius * 0.5, z_range[1] - radius * 0.5)
    if zs.stop <= zs.start:
        zs = _index_range(grid.z, z_range[0], z_range[1])
    sub = in_lung[zs]
    if not sub.any():
        return tumour
    edge = sub.copy()                               # lung voxels with a non-lung neighbour in-plane
    edge[:, 1:-1, 1:-1] &= ~(sub[:, :-2, 1:-1] & sub[:, 2:, 1:-1] & sub[:, 1:-1, :-2] & sub[:, 1:-1, 2:])
    candidates = np.flatnonzero(edge)
    for index in rng.choice(candidates, size=min(300, len(candidates)), replace=False):
        k, iy, ix = np.unravel_index(index, sub.shape)
        k += zs.start
        px, py = float(grid.x[ix]), float(grid.y[iy])
        side = np.sign(px - centre[0]) or 1.0
        section = in_lung[k] & (side * (grid.x - centre[0]) > 0)[None, :]
        rows, cols = np.nonzero(section)
        normal = np.array([px - grid.x[cols].mean(), py - grid.y[rows].mean()])
        radial = np.array([px - centre[0], py - centre[1]])
        if np.linalg.norm(normal) < 1e-6 or \
                normal @ radial < 0.5 * np.linalg.norm(normal) * np.linalg.norm(radial):
            continue                                # a mediastinal or diaphragmatic surface
        normal /= np.linalg.norm(normal)
        c = np.array([grid.z[k], py - normal[1] * inset, px - normal[0] * inset])
        grown = radius * growth
        clear = grown * 1.2 + JUXTAPLEURAL_CLEARANCE_MM
        if abs(c[2] - centre[0]) - clear < mediastinum_mm or \
                np.any(labels[grid.block(*((v - clear, v + clear) for v in c))] == HEART):
            continue
        block = grid.block(*((v - grown * 1.2, v + grown * 1.2) for v in c))
        Z, Y, X = grid.coords(block)
        dz, dy, dx = Z - c[0], Y - c[1], X - c[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        theta = np.arctan2(dy, dx)
        phi = np.arccos(np.clip(dz / np.maximum(r, 1e-6), -1, 1))
        bumpy = grown * (1.0 + 0.12 * np.sin(3 * theta + lobes[0]) * np.sin(2 * phi + lobes[1])
                         + 0.06 * np.cos(5 * theta + lobes[2]))
        inside = (r <= bumpy) & in_lung[block]
        if inside.any():
            tumour[block] = inside
            return tumour
    return tumour


def _drop_islands(lungs: np.ndarray, labels: np.ndarray, block) -> None:
    """Keep each lung's largest connected piece; voxel-sized islands left by the staircase of
    the diaphragm domes and ribs become soft tissue (in the image and the truth alike)."""
    from scipy import ndimage

    sub, tissue = lungs[block], labels[block]
    for label in (RIGHT_LUNG, LEFT_LUNG):
        pieces, count = ndimage.label(sub == label)
        if count > 1:
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            island = (pieces > 0) & (pieces != np.argmax(sizes))
            sub[island] = 0
            tissue[island] = SOFT


#: Independent noise slices generated per case; each slice of the volume uses one of them,
#: shifted by a random offset (generating 30M+ normal deviates per case would dominate).
_NOISE_BANK = 12
#: Half-width of the two level sets whose intersection draws the lung vessels (in std units).
VESSEL_LEVEL = 0.22


def _intensities(labels: np.ndarray, grid: Grid, rng: np.random.Generator, *, cav_cy: float,
                 cav_ay: float, lung_shift: float = 0.0) -> np.ndarray:
    """HU of every voxel: tissue means, tissue-scaled noise, and lung density gradient
    (plus ``lung_shift`` HU on the lung parenchyma: emphysematous lung is less dense)."""
    sigma = np.float32(rng.uniform(12.0, 28.0))
    bank = rng.standard_normal((_NOISE_BANK,) + grid.shape[1:], dtype=np.float32) * sigma
    # Dependent (posterior) lung is denser; vessels blur into lung by partial volume.
    lung_gradient = ((grid.y - cav_cy) / cav_ay * 35.0 + 10.0).astype(np.float32)[:, None]
    if lung_shift:
        lung_gradient += np.float32(lung_shift)
    picks = rng.integers(0, _NOISE_BANK, size=grid.shape[0])
    shifts = rng.integers(0, grid.shape[1], size=(grid.shape[0], 2))
    values = np.empty(grid.shape, dtype=np.float32)
    for k in range(grid.shape[0]):
        tissue = labels[k]
        out = values[k]
        np.take(_TISSUE_HU, tissue, out=out)
        out += _TISSUE_NOISE[tissue] * np.roll(bank[picks[k]], tuple(shifts[k]), axis=(0, 1))
        lung = tissue == LUNG
        out[lung] += np.broadcast_to(lung_gradient, tissue.shape)[lung]
        vessel = tissue == VESSEL
        out[vessel] -= rng.uniform(0.0, 350.0, size=int(vessel.sum())).astype(np.float32)
    return values


def _add_vessels(labels: np.ndarray, grid: Grid, lung_box, rng: np.random.Generator) -> None:
    from scipy import ndimage

    step = 3.0  # mm grid of the level-set fields
    block = grid.block(*lung_box)
    if any(s.stop <= s.start for s in block):          # a scan without lungs
        return
    Z, Y, X = grid.coords(block)
    shape = tuple(int(np.ceil((c.max() - c.min()) / step)) + 2 for c in (Z, Y, X))
    fields = []
    for _ in range(2):
        f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=4.0)
        fields.append(f / f.std())
    coarse = (np.abs(fields[0]) < VESSEL_LEVEL) & (np.abs(fields[1]) < VESSEL_LEVEL)
    index = [np.clip(((c.ravel() - c.min()) / step).astype(int), 0, n - 1)
             for c, n in zip((Z, Y, X), shape)]
    fine = coarse.take(index[0], 0).take(index[1], 1).take(index[2], 2)
    target = labels[block]
    target[fine & (target == LUNG)] = VESSEL


def _add_skeleton(labels, grid, rng, *, centre_x, centre_y, body_ax, body_ay, fat, spine_y,
                  zlim, z_base, z_top) -> None:
    vb_ax, vb_ay = rng.uniform(17.0, 22.0), rng.uniform(14.0, 18.0)
    disc_period, disc_thickness = rng.uniform(24.0, 28.0), 5.0
    disc_phase = rng.uniform(0.0, disc_period)
    box = (zlim, (spine_y - vb_ay - 2, spine_y + vb_ay + 60), (centre_x - 40, centre_x + 40))

    def vertebral_body(shrink):
        return lambda Z, Y, X: ((X - centre_x) / (vb_ax - shrink)) ** 2 + ((Y - spine_y) / (vb_ay - shrink)) ** 2 <= 1.0

    _paint(labels, grid, box, vertebral_body(0.0), BONE)
    _paint(labels, grid, box, vertebral_body(2.5), MARROW)
    _paint(labels, grid, box,
           lambda Z, Y, X: vertebral_body(0.0)(Z, Y, X) & (np.mod(Z - disc_phase, disc_period) < disc_thickness),
           DISC)
    canal_y = spine_y + vb_ay + 9.0
    _paint(labels, grid, box,   # neural arch around the canal, and the spinous process
           lambda Z, Y, X: (((X - centre_x) ** 2 + (Y - canal_y) ** 2) <= 13.0 ** 2)
           | ((np.abs(X - centre_x) <= 4.0) & (Y >= canal_y) & (Y <= canal_y + 30.0)), BONE)
    _paint(labels, grid, box,
           lambda Z, Y, X: ((X - centre_x) ** 2 + (Y - canal_y) ** 2) <= 7.5 ** 2, CANAL)

    # Ribs: a ring inside the body wall; each rib falls ~35 mm from back to front.
    ring_ax, ring_ay = body_ax - fat - 8.0, body_ay - fat * 0.8 - 6.0
    rib_period, rib_half = rng.uniform(24.0, 28.0), rng.uniform(3.5, 5.0)
    rib_phase = rng.uniform(0.0, rib_period)
    sternum_y = centre_y - body_ay + fat * 0.8 + 10.0
    ribs_z = (z_base - 40.0, z_top)

    # The ring is the same on every slice: find its pixels once, then test the rib levels.
    Y2, X2 = grid.y[:, None], grid.x[None, :]
    u, v = (X2 - centre_x) / ring_ax, (Y2 - centre_y) / ring_ay
    radius = np.sqrt(u * u + v * v)
    ring = (np.abs(radius - 1.0) * min(ring_ax, ring_ay) <= rib_half) & (np.abs(X2 - centre_x) > 22.0)
    rows, cols = np.nonzero(ring)
    frontness = (1.0 - v[rows, 0] / np.maximum(radius[rows, cols], 1e-6)) / 2.0  # 0 back, 1 front
    zs = grid.block(ribs_z, (0, 0), (0, 0))[0]
    level = np.mod(grid.z[zs, None] + 35.0 * frontness[None, :] - rib_phase, rib_period) < 2 * rib_half
    current = labels[zs][:, rows, cols]
    hit = level & np.isin(current, [SOFT, FAT, LUNG, VESSEL, LIVER])
    current[hit] = BONE
    labels[zs][:, rows, cols] = current
    _paint(labels, grid, (zlim, (sternum_y - 8, sternum_y + 8), (centre_x - 16, centre_x + 16)),
           lambda Z, Y, X: (((X - centre_x) / 15.0) ** 2 + ((Y - sternum_y) / 7.0) ** 2 <= 1.0)
           & (Z > z_base) & (Z < z_top - 30), BONE)


def _add_tumour(in_lung: np.ndarray, grid: Grid, rng: np.random.Generator, *, pixel: float,
                growth: float = 1.0) -> np.ndarray:
    """A lobulated tumour inside a lung (sometimes touching the chest wall); its mask. The
    place is chosen for the drawn diameter, the tumour drawn ``growth`` times as large."""
    diameter = rng.uniform(max(8.0, 3 * pixel), 50.0)
    radius = diameter / 2.0
    candidates = np.flatnonzero(in_lung)
    lobes = rng.uniform(0.0, 2 * np.pi, size=3)
    tumour = np.zeros(grid.shape, dtype=bool)
    for centre_index in rng.choice(candidates, size=min(200, len(candidates)), replace=False):
        iz, iy, ix = np.unravel_index(centre_index, grid.shape)
        c = np.array([grid.z[iz], grid.y[iy], grid.x[ix]])
        block = grid.block(*((v - radius * 1.2 * growth, v + radius * 1.2 * growth) for v in c))
        Z, Y, X = grid.coords(block)
        dz, dy, dx = Z - c[0], Y - c[1], X - c[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        theta = np.arctan2(dy, dx)
        phi = np.arccos(np.clip(dz / np.maximum(r, 1e-6), -1, 1))
        bumpy = radius * growth * (1.0 + 0.12 * np.sin(3 * theta + lobes[0]) * np.sin(2 * phi + lobes[1])
                                   + 0.06 * np.cos(5 * theta + lobes[2]))
        shape = r <= bumpy
        core = r <= radius * 0.6
        lung_block = in_lung[block]
        if core.sum() and np.all(lung_block[core]):     # core inside the lung; rim may touch the wall
            tumour[block] = shape & lung_block
            return tumour
    return tumour
