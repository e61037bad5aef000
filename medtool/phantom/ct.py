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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import hounsfield as hu

# Tissue labels of the internal label volume (painted in this order, later wins).
AIR, BED_SHELL, BED_FOAM, FAT, SOFT, LIVER, GAS, LUNG, VESSEL, AIRWAY, HEART, BONE, MARROW, \
    DISC, CANAL, TUMOUR = range(16)
#: Mean HU and noise scale of each tissue label.
_TISSUE_HU = np.array([
    hu.HU_AIR, 250.0, -950.0, hu.HU_FAT, hu.HU_SOFT_TISSUE, hu.HU_LIVER, hu.HU_AIR, hu.HU_LUNG,
    hu.HU_SOFT_TISSUE, hu.HU_AIR, hu.HU_SOFT_TISSUE, hu.HU_CORTICAL_BONE, hu.HU_TRABECULAR_BONE,
    80.0, 15.0, 30.0,
], dtype=np.float32)
_TISSUE_NOISE = np.array([0.5, 1.5, 0.5, 1, 1, 1, 0.5, 1, 1.5, 0.5, 1, 2, 1.5, 1, 1, 1.2],
                         dtype=np.float32)

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
            tumour_probability: float = TUMOUR_FRACTION) -> CTCase:
    """Generate one chest CT case.

    Parameters
    ----------
    rng
        Source of every random choice (same state, same case).
    shape
        In-plane size (rows = columns). Pixel spacing is the field of view over ``shape``; the
        slice spacing is a realistic 1.25-3 mm at 512 and grows as ``sqrt(512 / shape)`` for
        small test cases.
    tumour_probability
        Chance that the case has a lung tumour.
    """
    # --- body and reconstruction -------------------------------------------------------------
    body_ax = rng.uniform(140.0, 195.0)        # half-width of the body (mm)
    body_ay = rng.uniform(95.0, 125.0)         # half-depth
    fov = float(np.clip(rng.uniform(*FOV_RANGE_MM), 2 * body_ay + 60.0, FOV_RANGE_MM[1]))
    pixel = fov / shape
    centre_x = rng.uniform(-10.0, 10.0)        # patient centre vs reconstruction centre
    centre_y = rng.uniform(-25.0, -5.0)        # the bed lifts the patient anteriorly

    lung_height = rng.uniform(210.0, 270.0)
    z_base = 0.0                                # top of the diaphragm domes' lowest point
    z_apex = z_base + lung_height
    below, above = 55.0, 25.0                   # abdomen below, neck base above
    slice_spacing = float(rng.choice(SLICE_SPACINGS_MM)) * np.sqrt(DEFAULT_SHAPE / shape)
    n_slices = int(np.ceil((lung_height + below + above) / slice_spacing))
    z0 = z_base - below

    half = (shape - 1) / 2.0 * pixel
    x = np.linspace(-half, half, shape)
    y = np.linspace(-half, half, shape)
    z = z0 + slice_spacing * np.arange(n_slices)
    grid = Grid(z, y, x)
    labels = np.full(grid.shape, AIR, dtype=np.uint8)
    zlim = (z[0] - 1, z[-1] + 1)

    # --- scanner bed: carbon shell with foam core, under the body ------------------------------
    bed_top = centre_y + body_ay + 1.0
    bed_sag = 0.0006  # curved tabletop
    _paint(labels, grid, (zlim, (bed_top - 5, bed_top + 60), (-230, 230)),
           lambda Z, Y, X: (Y >= bed_top + bed_sag * X * X) & (Y <= bed_top + 45 + bed_sag * X * X)
           & (np.abs(X) <= 220), BED_SHELL)
    _paint(labels, grid, (zlim, (bed_top - 5, bed_top + 60), (-230, 230)),
           lambda Z, Y, X: (Y >= bed_top + 3 + bed_sag * X * X) & (Y <= bed_top + 42 + bed_sag * X * X)
           & (np.abs(X) <= 216), BED_FOAM)

    # --- body: fat layer, then soft tissue --------------------------------------------------
    def body_scale(Z):
        t = (Z - z_base) / lung_height
        return 1.0 - 0.06 * (t - 0.4) ** 2       # a little narrower at the top and bottom

    fat = rng.uniform(8.0, 25.0)

    def in_ellipse(X, Y, cx, cy, ax, ay):
        return ((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2 <= 1.0

    body_box = (zlim, (centre_y - body_ay - 2, centre_y + body_ay + 2),
                (centre_x - body_ax - 2, centre_x + body_ax + 2))
    _paint(labels, grid, body_box,
           lambda Z, Y, X: in_ellipse(X, Y, centre_x, centre_y, body_ax * body_scale(Z), body_ay), FAT)
    _paint(labels, grid, body_box,
           lambda Z, Y, X: in_ellipse(X, Y, centre_x, centre_y, body_ax * body_scale(Z) - fat,
                                      body_ay - fat * 0.8), SOFT)

    # --- thoracic cavity and lungs -----------------------------------------------------------
    cav_ax = body_ax - fat - rng.uniform(14.0, 20.0)
    cav_ay = body_ay - fat * 0.8 - rng.uniform(12.0, 16.0)
    cav_cy = centre_y + rng.uniform(0.0, 6.0)
    gap = float(rng.choice([0.0, 1.0, 3.0, 6.0]))     # anterior junction; 0: the lungs touch
    mediastinum_mid = rng.uniform(15.0, 24.0)
    dome = rng.uniform(25.0, 40.0)                    # height of the diaphragm domes
    right_dome_extra = rng.uniform(8.0, 18.0)         # the liver lifts the right dome
    spine_y = centre_y + body_ay - fat * 0.8 - rng.uniform(42.0, 52.0)   # vertebral body centre

    def cavity_scale(Z):
        t = np.clip((Z - z_base) / lung_height, 0.0, 1.0)
        return np.sqrt(np.clip(1.0 - t ** 2.2, 0.0, 1.0)) * (0.92 + 0.08 * (1 - t))

    def mediastinum_halfwidth(Y):
        v = (Y - cav_cy) / cav_ay                       # -1 anterior ... +1 posterior
        return np.interp(v, [-1.2, -0.75, -0.35, 0.3, 0.7, 1.2],
                         [gap / 2, gap / 2 + 4, mediastinum_mid, mediastinum_mid,
                          mediastinum_mid + 4, mediastinum_mid + 10]).astype(np.float32)

    def diaphragm(X, Y, side):
        cx = side * cav_ax * 0.5
        r2 = ((X - cx) / (cav_ax * 0.55)) ** 2 + ((Y - cav_cy) / (cav_ay * 0.9)) ** 2
        lift = right_dome_extra if side < 0 else 0.0
        return z_base + (dome + lift) * np.clip(1.0 - r2, 0.0, 1.0)

    def lung_inside(side):
        def inside(Z, Y, X):
            s = cavity_scale(Z)
            in_cavity = ((X - centre_x) / (cav_ax * s + 1e-3)) ** 2 + \
                ((Y - cav_cy) / (cav_ay * (0.55 + 0.45 * s) + 1e-3)) ** 2 <= 1.0
            lateral = (side * (X - centre_x) >= mediastinum_halfwidth(Y))
            return in_cavity & lateral & (Z >= diaphragm(X, Y, side))
        return inside

    lung_box = ((z_base - 1, z_apex + 1), (cav_cy - cav_ay - 2, cav_cy + cav_ay + 2),
                (centre_x - cav_ax - 2, centre_x + cav_ax + 2))
    _paint(labels, grid, lung_box, lung_inside(-1), LUNG)
    _paint(labels, grid, lung_box, lung_inside(+1), LUNG)

    # --- organs under the diaphragm ----------------------------------------------------------
    _paint(labels, grid, ((z0, z_base + dome + right_dome_extra), lung_box[1], (centre_x - cav_ax, centre_x + 20)),
           lambda Z, Y, X: (Z < diaphragm(X, Y, -1) - 4) & in_ellipse(X, Y, centre_x - cav_ax * 0.35, cav_cy,
                                                                        cav_ax * 0.75, cav_ay * 0.85),
           LIVER, where=[SOFT])
    gas_c = (centre_x + cav_ax * 0.45, cav_cy - cav_ay * 0.2, z_base - 12.0)
    gas_r = rng.uniform(18.0, 30.0)
    _paint(labels, grid, ((gas_c[2] - gas_r, gas_c[2] + gas_r * 0.6), (gas_c[1] - gas_r * 1.3, gas_c[1] + gas_r * 1.3),
                          (gas_c[0] - gas_r * 1.3, gas_c[0] + gas_r * 1.3)),
           lambda Z, Y, X: (((X - gas_c[0]) / (gas_r * 1.3)) ** 2 + ((Y - gas_c[1]) / (gas_r * 1.2)) ** 2
                            + ((Z - gas_c[2]) / gas_r) ** 2 <= 1.0) & (Z < diaphragm(X, Y, 1) - 6),
           GAS, where=[SOFT, FAT])

    # --- heart (indents the left lung) and aorta ---------------------------------------------
    heart_c = np.array([centre_x + rng.uniform(12.0, 28.0), cav_cy - cav_ay * 0.25,
                        z_base + dome * 0.6 + rng.uniform(30.0, 45.0)])
    heart_r = np.array([rng.uniform(45.0, 55.0), rng.uniform(38.0, 48.0), rng.uniform(42.0, 52.0)])
    _paint(labels, grid, ((heart_c[2] - heart_r[2], heart_c[2] + heart_r[2]),
                          (heart_c[1] - heart_r[1], heart_c[1] + heart_r[1]),
                          (heart_c[0] - heart_r[0], heart_c[0] + heart_r[0])),
           lambda Z, Y, X: ((X - heart_c[0]) / heart_r[0]) ** 2 + ((Y - heart_c[1]) / heart_r[1]) ** 2
           + ((Z - heart_c[2]) / heart_r[2]) ** 2 <= 1.0, HEART)
    arch_z = z_base + lung_height * 0.72
    aorta_r = rng.uniform(11.0, 15.0)
    desc = (centre_x + 22.0, spine_y - 22.0)
    asc = (centre_x + 8.0, cav_cy - cav_ay * 0.35)
    for a, b in (((asc[0], asc[1], heart_c[2]), (asc[0], asc[1], arch_z)),
                 ((asc[0], asc[1], arch_z), (desc[0], desc[1], arch_z + 8)),
                 ((desc[0], desc[1], arch_z + 8), (desc[0], desc[1], z0 - 5))):
        bounds, inside = _tube(a, b, aorta_r)
        _paint(labels, grid, bounds, inside, HEART)

    # --- airways: trachea, main bronchi, a few lobar bronchi inside the lungs ----------------
    trachea_r = rng.uniform(8.0, 10.5)
    trachea_y = spine_y - rng.uniform(38.0, 46.0)
    carina = np.array([centre_x, trachea_y, z_base + lung_height * rng.uniform(0.55, 0.62)])
    hila = {
        -1: carina + np.array([-cav_ax * 0.42, 6.0, -rng.uniform(28.0, 36.0)]),   # right: steeper
        +1: carina + np.array([cav_ax * 0.45, 8.0, -rng.uniform(18.0, 26.0)]),
    }
    airway_tubes = [((centre_x, trachea_y, z[-1] + 10.0), tuple(carina), trachea_r)]
    airway_tubes += [(tuple(carina), tuple(hila[s]), trachea_r * (0.72 if s < 0 else 0.62)) for s in (-1, 1)]
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

    # --- lung vessels: intersections of two smooth random level sets are tubes ----------------
    _add_vessels(labels, grid, lung_box, rng)

    # --- truth lungs: the lung region (vessels, small airways inside it), minus the trachea and
    #     main bronchi; split right/left at the patient midline -------------------------------
    in_lung = np.isin(labels, [LUNG, VESSEL, AIRWAY]) & ~central_airway
    labels[central_airway & (labels != BED_FOAM)] = AIRWAY

    # --- spine, ribs and sternum --------------------------------------------------------------
    _add_skeleton(labels, grid, rng, centre_x=centre_x, centre_y=centre_y, body_ax=body_ax,
                  body_ay=body_ay, fat=fat, spine_y=spine_y, zlim=zlim, z_base=z_base,
                  z_top=z_apex + above)
    in_lung &= ~np.isin(labels, [BONE, MARROW])

    # --- tumour -------------------------------------------------------------------------------
    tumour = np.zeros(grid.shape, dtype=bool)
    if rng.uniform() < tumour_probability:
        tumour = _add_tumour(in_lung, grid, rng, pixel=pixel)
        labels[tumour] = TUMOUR
        in_lung |= tumour

    lungs = np.zeros(grid.shape, dtype=np.uint8)
    x_right = (grid.x < centre_x)[None, None, :]
    lungs[in_lung & x_right] = RIGHT_LUNG
    lungs[in_lung & ~x_right] = LEFT_LUNG
    _drop_islands(lungs, labels, grid.block(*lung_box))

    # --- intensities, noise, field of view ----------------------------------------------------
    fov_outside = (grid.x[None, :] ** 2 + grid.y[:, None] ** 2) > (fov / 2.0) ** 2
    values = _intensities(labels, grid, rng, cav_cy=cav_cy, cav_ay=cav_ay)
    values[:, fov_outside] = np.nan
    lungs[:, fov_outside] = 0
    tumour[:, fov_outside] = False

    thickness = slice_spacing * float(rng.choice([1.0, 1.0, 2.0]))   # sometimes overlapping recon
    origin = (float(x[0]), float(y[0]), float(z[0]))
    return CTCase(
        hu=values, lungs=lungs, tumour=tumour.astype(np.uint8),
        spacing=(float(slice_spacing), float(pixel), float(pixel)), origin=origin, fov_mm=fov,
        slice_thickness=float(round(thickness, 3)),
        facts={"lung_gap_mm": gap, "body_cut_by_fov": bool(body_ax > fov / 2 - abs(centre_x))},
    )


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
                 cav_ay: float) -> np.ndarray:
    """HU of every voxel: tissue means, tissue-scaled noise, and lung density gradient."""
    sigma = np.float32(rng.uniform(12.0, 28.0))
    bank = rng.standard_normal((_NOISE_BANK,) + grid.shape[1:], dtype=np.float32) * sigma
    # Dependent (posterior) lung is denser; vessels blur into lung by partial volume.
    lung_gradient = ((grid.y - cav_cy) / cav_ay * 35.0 + 10.0).astype(np.float32)[:, None]
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


def _add_tumour(in_lung: np.ndarray, grid: Grid, rng: np.random.Generator, *, pixel: float) -> np.ndarray:
    """A lobulated tumour inside a lung (sometimes touching the chest wall); its mask."""
    diameter = rng.uniform(max(8.0, 3 * pixel), 50.0)
    radius = diameter / 2.0
    candidates = np.flatnonzero(in_lung)
    lobes = rng.uniform(0.0, 2 * np.pi, size=3)
    tumour = np.zeros(grid.shape, dtype=bool)
    for centre_index in rng.choice(candidates, size=min(200, len(candidates)), replace=False):
        iz, iy, ix = np.unravel_index(centre_index, grid.shape)
        c = np.array([grid.z[iz], grid.y[iy], grid.x[ix]])
        block = grid.block(*((v - radius * 1.2, v + radius * 1.2) for v in c))
        Z, Y, X = grid.coords(block)
        dz, dy, dx = Z - c[0], Y - c[1], X - c[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        theta = np.arctan2(dy, dx)
        phi = np.arccos(np.clip(dz / np.maximum(r, 1e-6), -1, 1))
        bumpy = radius * (1.0 + 0.12 * np.sin(3 * theta + lobes[0]) * np.sin(2 * phi + lobes[1])
                          + 0.06 * np.cos(5 * theta + lobes[2]))
        shape = r <= bumpy
        core = r <= radius * 0.6
        lung_block = in_lung[block]
        if core.sum() and np.all(lung_block[core]):     # core inside the lung; rim may touch the wall
            tumour[block] = shape & lung_block
            return tumour
    return tumour
