"""A synthetic brain MRI with a glioma: four co-registered modalities and exact truth.

The head is described in LPS millimetres centred on the grid (x to the patient's left, y
posterior, z superior), so a case looks the same at any ``shape``; ``shape`` only sets the
sampling of the :data:`FOV_MM` cube (192 gives 1 mm voxels, BraTS's spacing). Every random
structure is a sum of plane waves in millimetres (:func:`smooth_field`), evaluated as one matrix
product; nothing loops over voxels, and a 128^3 case takes well under a second.

What is in it: scalp (fat), skull, the cerebrospinal fluid (CSF) around the brain, the brain
with a folded cortex (grey matter over white matter, CSF-filled sulci along the zero set of a
random field), deep grey matter, the interhemispheric fissure, the lateral and third ventricles,
and a glioma in one hemisphere: a lobulated core with central necrosis, an enhancing rim that is
incomplete in places (non-enhancing core), an outer non-enhancing shell, and vasogenic edema
that spreads from it through the connected white matter and spares the cortex; some cases have
a small satellite lesion (a second lesion for lesion-wise scores).

Contrasts (:data:`CONTRAST`, arbitrary positive units, white matter on T1 = 1000) follow real
MRI: CSF dark on FLAIR and T1, bright on T2; grey matter darker than white matter on T1 and
brighter on T2 and FLAIR; edema bright on FLAIR and T2; the enhancing rim bright on T1c only;
necrosis dark on T1 and T1c, bright on T2. The modalities carry different information:

* FLAIR shows the whole tumour, every class at one level (it separates tumour from CSF and
  brain, not the classes within it);
* T2 shows edema and necrosis at the level of CSF (it cannot tell edema from CSF);
* T1c alone shows the enhancing rim; on T1, T2 and FLAIR the rim looks like the
  non-enhancing core (or, on FLAIR, like all tumour);
* on T1 and T1c edema is at the grey-matter level, and necrosis at the CSF level.

So edema needs FLAIR with T1c or T2, necrosis FLAIR with T1c, enhancing tumour T1c.

Each modality gets its own smooth multiplicative bias field (a coil's sensitivity, about
+-15 %), a slight blur (partial volume) and Rician noise (the magnitude of the signal plus
complex Gaussian noise, so the background is Rayleigh-distributed and never negative).

Random draws come from three streams of the case's generator, in this order: anatomy, tumour,
image (bias, texture and noise); options that change only the image (``skull_strip``) leave
the anatomy and the truth as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError, check_choice

# Tissue labels of the internal tissue map (painted in this order, later wins).
BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, NECROSIS, EDEMA, NON_ENHANCING, ENHANCING = range(10)
TISSUE_NAMES = ("background", "scalp", "skull", "csf", "grey matter", "white matter",
                "necrosis", "edema", "non-enhancing core", "enhancing tumour")
#: The modalities, in the order of :data:`CONTRAST`'s columns and of the BraTS file names.
MODALITIES = ("flair", "t1", "t1ce", "t2")
#: Signal of each tissue (rows, in label order) in each modality (columns, :data:`MODALITIES`)
#: before bias, blur and noise, in units of white matter on T1.
CONTRAST = np.array([
    # flair   t1    t1ce   t2
    [0.00, 0.00, 0.00, 0.00],   # background (air)
    [0.90, 1.30, 1.30, 0.90],   # scalp (fat)
    [0.08, 0.10, 0.10, 0.08],   # skull (cortical bone)
    [0.12, 0.25, 0.25, 1.60],   # CSF
    [0.80, 0.65, 0.65, 0.85],   # grey matter
    [0.60, 1.00, 1.00, 0.55],   # white matter
    [1.35, 0.25, 0.25, 1.60],   # necrosis: fluid-like on T1 and T2, not suppressed on FLAIR
    [1.35, 0.65, 0.65, 1.55],   # edema
    [1.35, 0.45, 0.45, 1.05],   # non-enhancing core
    [1.35, 0.45, 1.50, 1.05],   # enhancing tumour: like the core but on T1c
], dtype=np.float32)
#: Stored value of signal 1 (white matter on T1); the images are int16.
UNIT = 1000.0
#: Segmentation label of each tumour tissue in the BraTS conventions: 2015 (the seed's:
#: necrosis 1, edema 2, non-enhancing 3, enhancing 4), 2017 to 2021 (necrotic and non-enhancing
#: core 1, edema 2, enhancing 4) and 2023 (necrosis/non-enhancing 1, edema 2, enhancing 3).
LABEL_CONVENTIONS = {
    "2015": {NECROSIS: 1, EDEMA: 2, NON_ENHANCING: 3, ENHANCING: 4},
    "2017": {NECROSIS: 1, EDEMA: 2, NON_ENHANCING: 1, ENHANCING: 4},
    "2023": {NECROSIS: 1, EDEMA: 2, NON_ENHANCING: 1, ENHANCING: 3},
}
#: Names of the segmentation labels of each convention (the ``labels`` of the seg's metadata).
LABEL_NAMES = {
    "2015": {"1": "necrosis", "2": "edema", "3": "non-enhancing tumour", "4": "enhancing tumour"},
    "2017": {"1": "necrotic and non-enhancing tumour core", "2": "edema", "4": "enhancing tumour"},
    "2023": {"1": "necrotic tumour core", "2": "edema", "3": "enhancing tumour"},
}
DEFAULT_CONVENTION = "2015"

#: Side of the cubic field of view (mm); ``shape`` voxels along each axis sample it.
FOV_MM = 192.0
DEFAULT_SHAPE = 192
MIN_SHAPE = 32
#: Semi-axes (mm) of the head's outer surface: left-right, anterior-posterior, superior-inferior.
HEAD_SEMI_AXES_MM = ((68.0, 76.0), (84.0, 93.0), (78.0, 88.0))
#: The head's centre lies this far above the grid's centre (mm): the neck leaves at the bottom.
HEAD_LIFT_MM = (6.0, 14.0)
#: Layers of the head from the outside in: tissue -> thickness range (mm) of the scalp, the skull
#: and the CSF between skull and brain.
LAYERS_MM = {SCALP: (4.0, 7.0), SKULL: (5.0, 8.0), CSF: (1.5, 3.0)}
#: Cortex: grey matter from this depth range (mm) plus the folding field's swing.
CORTEX_MM = (2.5, 3.5)
FOLD_MM = 5.0
#: Sulci: CSF where the folding field crosses zero, down to this depth (mm), this thin (field units).
SULCUS_DEPTH_MM = 12.0
SULCUS_WIDTH = 0.10
#: Wavelength range (mm) of each smooth field: the cortical folding, the brain's outline, the
#: tumour's lobulation (and the gaps in its rim), its edema's lobulation, the tissue texture
#: and the bias field.
FIELD_WAVELENGTH_MM = {"fold": (18.0, 40.0), "brain_shape": (60.0, 120.0), "lobe": (12.0, 30.0),
                       "edema": (20.0, 45.0), "texture": (4.0, 12.0), "bias": (250.0, 500.0)}
#: Plane waves per smooth field.
WAVES = 16
#: The brain's outline departs from an ellipsoid by this share of its radius (1 sd).
BRAIN_SHAPE_AMPLITUDE = 0.02
#: Half-width of the interhemispheric fissure (mm).
FISSURE_HALF_WIDTH_MM = 1.0
#: Tumour core radius (mm), edema radius as a multiple of it, share of the radius inside the
#: enhancing rim (necrosis, or non-enhancing tumour in a case without necrosis), rim
#: thickness (mm), lobulation depth, and the level of the gap field above which the rim
#: enhances (-0.6: about 70 % of it, 0: half).
CORE_RADIUS_MM = (10.0, 22.0)
EDEMA_SCALE = (1.4, 2.1)
NECROSIS_SHARE = (0.4, 0.7)
NO_NECROSIS_PROBABILITY = 0.2
RIM_MM = (3.0, 6.0)
LOBULATION = 0.15
NON_ENHANCING_RIM = (-0.8, -0.2)
#: Random points tried for a lesion's centre, which keeps this far (mm) off the midline.
CENTRE_TRIES = 256
HEMISPHERE_MARGIN_MM = 12.0
#: A lesion's centre lies this much deeper than its radius (mm; a satellite's the second); its semi-axes are the radius
#: times a stretch in this range; its edema is lobulated this much.
LESION_CLEARANCE_MM = 6.0
SATELLITE_CLEARANCE_MM = 4.0
LESION_STRETCH = (0.8, 1.2)
EDEMA_LOBULATION = 0.25
#: Chance of a small satellite lesion, and its radius (mm).
SATELLITE_PROBABILITY = 0.3
SATELLITE_RADIUS_MM = (4.0, 8.0)
#: Image formation: bias amplitude (log scale), texture amplitude, noise sigma as a share of
#: white matter on T1, and the blur (voxels, standard deviation).
BIAS_AMPLITUDE = (0.08, 0.15)
TEXTURE_AMPLITUDE = 0.03
NOISE_SHARE = (0.025, 0.045)
BLUR_VOXELS = 0.5
#: The blur's kernel reaches this many standard deviations (one voxel each side).
BLUR_TRUNCATE = 2.0


@dataclass
class BrainCase:
    """One synthetic brain MRI: the four images, the tissue map and the grid.

    ``images`` maps each of :data:`MODALITIES` to an int16 ``(z, y, x)`` array; ``tissues``
    holds the tissue labels (:data:`TISSUE_NAMES`); ``spacing`` and ``origin`` are the grid
    (mm, LPS, axial direction), the same for every image.
    """

    images: dict[str, np.ndarray]
    tissues: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def seg(self, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
        """The tumour labels in a BraTS ``convention`` (:data:`LABEL_CONVENTIONS`), uint8."""
        return tumour_labels(self.tissues, convention)


def tumour_labels(tissues: np.ndarray, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """The segmentation of a tissue map in a BraTS label ``convention`` (a lookup table)."""
    check_convention(convention)
    table = np.zeros(len(TISSUE_NAMES), np.uint8)
    for tissue, label in LABEL_CONVENTIONS[convention].items():
        table[tissue] = label
    return table[tissues]


def check_convention(convention: str) -> None:
    """Raise a usage error unless ``convention`` is one of :data:`LABEL_CONVENTIONS`."""
    check_choice("--brats-labels", convention, LABEL_CONVENTIONS)


# -- smooth random fields ------------------------------------------------------------------
def smooth_field(rng: np.random.Generator, axes: tuple[np.ndarray, ...], *,
                 wavelength_mm: tuple[float, float], waves: int = WAVES) -> np.ndarray:
    """A smooth random field on the grid spanned by the 1-D coordinates ``axes`` (mm).

    A sum of ``waves`` plane waves of random direction, phase and wavelength (uniform in
    ``wavelength_mm``), scaled to unit standard deviation; evaluated separably as
    ``Re sum_k c_k e^{i k_z z} e^{i k_y y} e^{i k_x x}``, one matrix product. The field is a
    function of position in mm, so it is the same at any sampling.
    """
    direction = rng.normal(size=(waves, len(axes)))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wavenumber = 2.0 * np.pi / rng.uniform(*wavelength_mm, size=waves)
    phase = np.exp(1j * rng.uniform(0.0, 2.0 * np.pi, size=waves)) / np.sqrt(waves / 2.0)
    factors = [np.exp(1j * (wavenumber * direction[:, a])[:, None] * axis[None, :]).astype(np.complex64)
               for a, axis in enumerate(axes)]
    product = (phase[:, None] * factors[0]).astype(np.complex64)       # (waves, n0)
    for factor in factors[1:-1]:
        product = (product[:, :, None] * factor[:, None, :]).reshape(waves, -1)
    # Re(P^T F) = Re(P)^T Re(F) - Im(P)^T Im(F): one real matrix product
    left = np.concatenate([product.real, -product.imag]).T
    right = np.concatenate([factors[-1].real, factors[-1].imag])
    field = left @ right
    return field.reshape([len(a) for a in axes]).astype(np.float32, copy=False)


def _ellipsoid_radius(axes: tuple[np.ndarray, ...], centre, semi_axes) -> np.ndarray:
    """Normalised radius ``sqrt(sum ((p - c) / a)^2)`` over the grid (1 on the surface)."""
    z, y, x = axes
    (cx, cy, cz), (ax, ay, az) = centre, semi_axes
    terms = [(((a - c) / s) ** 2).astype(np.float32) for a, c, s in ((z, cz, az), (y, cy, ay), (x, cx, ax))]
    squared = terms[0][:, None, None] + terms[1][None, :, None]
    squared = squared + terms[2][None, None, :]
    return np.sqrt(squared, out=squared)


# -- the case --------------------------------------------------------------------------------
def make_brain(rng: np.random.Generator, *, shape: int = DEFAULT_SHAPE, skull_strip: bool = False) -> BrainCase:
    """Draw one brain MRI case.

    Parameters
    ----------
    rng
        The case's generator; the anatomy, tumour and image draw from three streams of it.
    shape
        Voxels along each axis of the :data:`FOV_MM` cube (192: 1 mm).
    skull_strip
        Set every image to 0 outside the intracranial space, as BraTS ships its images.
    """
    if shape < MIN_SHAPE:
        raise UsageError(f"--shape {shape}: a brain MRI needs at least {MIN_SHAPE} voxels a side")
    anatomy_rng, tumour_rng, image_rng = (np.random.default_rng(s) for s in
                                          rng.integers(0, 2**63 - 1, size=3))
    spacing = FOV_MM / shape
    coordinates = (np.arange(shape) - (shape - 1) / 2.0) * spacing       # mm, centred
    axes = (coordinates, coordinates, coordinates)                        # (z, y, x)
    tissues, brain_depth, intracranial = _anatomy(anatomy_rng, axes)
    _tumour(tumour_rng, axes, tissues, brain_depth)
    images = _images(image_rng, axes, tissues)
    if skull_strip:
        for image in images.values():
            image[~intracranial] = 0
    origin = float(coordinates[0])
    return BrainCase(images, tissues, (spacing, spacing, spacing), (origin, origin, origin))


def _anatomy(rng: np.random.Generator, axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the head; return the tissue map, the depth below the brain surface (mm) and the
    intracranial mask."""
    semi = np.array([rng.uniform(*r) for r in HEAD_SEMI_AXES_MM])
    centre = (0.0, rng.uniform(-3.0, 3.0), rng.uniform(*HEAD_LIFT_MM))  # on the midline
    thicknesses = [rng.uniform(*r) for r in LAYERS_MM.values()]
    cortex = rng.uniform(*CORTEX_MM)
    fold = smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["fold"])
    shape_field = smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["brain_shape"])
    tissues = np.zeros([len(a) for a in axes], np.uint8)
    outer = semi
    for tissue, thickness in zip(LAYERS_MM, thicknesses):              # outside in, each fills its ellipsoid
        inside = _ellipsoid_radius(axes, centre, outer) < 1
        tissues[inside] = tissue
        outer = outer - thickness
    intracranial = inside                                                 # the CSF layer's ellipsoid: inside the skull
    brain_semi = outer
    radius = _ellipsoid_radius(axes, centre, brain_semi) * (1.0 + BRAIN_SHAPE_AMPLITUDE * shape_field)
    depth = (1.0 - radius) * float(brain_semi.mean())                    # mm below the brain surface
    depth[~intracranial] = -1.0                                           # the brain stays inside the skull
    tissues[depth > 0] = GREY
    tissues[depth > cortex + FOLD_MM * (0.5 + 0.5 * np.tanh(fold))] = WHITE
    z, y, x = axes
    for side in (-1.0, 1.0):                                              # thalamus, basal ganglia
        deep = _ellipsoid_radius(axes, (side * rng.uniform(13.0, 17.0), centre[1] + rng.uniform(-2.0, 4.0),
                                        centre[2] - rng.uniform(8.0, 14.0)),
                                 (rng.uniform(8.0, 11.0), rng.uniform(12.0, 16.0), rng.uniform(8.0, 10.0)))
        tissues[deep < 1] = GREY
    tissues[(depth > 0) & (depth < SULCUS_DEPTH_MM) & (np.abs(fold) < SULCUS_WIDTH)] = CSF
    # the interhemispheric fissure, from the vertex down to about the corpus callosum
    fissure = (np.abs(x - centre[0])[None, None, :] < FISSURE_HALF_WIDTH_MM) & \
        (z > centre[2] - 5.0)[:, None, None] & (depth > 0) & (depth < 0.5 * float(brain_semi[0]))
    tissues[fissure] = CSF
    for side in (-1.0, 1.0):                                              # lateral ventricles
        ventricle = _ellipsoid_radius(
            axes, (side * rng.uniform(6.0, 9.0), centre[1] + rng.uniform(-4.0, 4.0),
                   centre[2] + rng.uniform(2.0, 8.0)),
            (rng.uniform(4.0, 7.0), rng.uniform(22.0, 30.0), rng.uniform(6.0, 9.0)))
        tissues[ventricle < 1] = CSF
    third = _ellipsoid_radius(axes, (centre[0], centre[1], centre[2] - 8.0), (1.5, 10.0, 7.0))
    tissues[third < 1] = CSF                                              # third ventricle
    return tissues, depth, intracranial


def _tumour(rng: np.random.Generator, axes, tissues: np.ndarray, depth: np.ndarray) -> None:
    """Paint the glioma (and, in some cases, a satellite lesion) into ``tissues``."""
    side = rng.choice([-1.0, 1.0])
    radius = rng.uniform(*CORE_RADIUS_MM)
    centre = _inside_brain(rng, axes, depth, side=side, clearance=radius + LESION_CLEARANCE_MM)
    inner = rng.uniform(*NECROSIS_SHARE)
    necrotic = rng.uniform() >= NO_NECROSIS_PROBABILITY
    _lesion(rng, axes, tissues, depth, centre=centre, radius=radius, inner=inner, necrotic=necrotic,
            rim_mm=rng.uniform(*RIM_MM), edema_scale=rng.uniform(*EDEMA_SCALE))
    if rng.uniform() < SATELLITE_PROBABILITY:
        small = rng.uniform(*SATELLITE_RADIUS_MM)
        far = _inside_brain(rng, axes, depth, side=-side, clearance=small + SATELLITE_CLEARANCE_MM)
        _lesion(rng, axes, tissues, depth, centre=far, radius=small, inner=0.0, necrotic=False,
                rim_mm=small, edema_scale=rng.uniform(*EDEMA_SCALE))


def _inside_brain(rng: np.random.Generator, axes, depth: np.ndarray, *, side: float,
                  clearance: float) -> tuple[float, float, float]:
    """A random point (x, y, z mm) of one hemisphere's upper two thirds at least ``clearance``
    mm deep (or the deepest of the points tried).

    The points are drawn in mm, independent of the grid, and only looked up on it, so the same
    seed puts the lesion at the same place at any ``shape``."""
    z, y, x = axes
    points = np.column_stack([side * rng.uniform(HEMISPHERE_MARGIN_MM, x[-1], size=CENTRE_TRIES),
                              rng.uniform(y[0], y[-1], size=CENTRE_TRIES),
                              rng.uniform(z[0] + (z[-1] - z[0]) / 3.0, z[-1], size=CENTRE_TRIES)])
    low = np.array([x[0], y[0], z[0]])
    step = float(x[1] - x[0])
    i, j, k = (np.clip(np.rint((points - low) / step), 0, len(x) - 1).astype(int).T)
    deep = depth[k, j, i]
    ok = np.flatnonzero(deep > clearance)
    best = ok[0] if len(ok) else int(np.argmax(deep))
    return tuple(float(v) for v in points[best])


def _lesion(rng: np.random.Generator, axes, tissues: np.ndarray, depth: np.ndarray, *, centre,
            radius: float, inner: float, necrotic: bool, rim_mm: float, edema_scale: float) -> None:
    """One lesion: a lobulated core and edema in the surrounding white matter. The core holds,
    from the centre out (in shares of its radius): necrosis (or, when not ``necrotic``,
    non-enhancing tumour) up to ``inner``, the enhancing rim ``rim_mm`` thick with
    non-enhancing gaps, and a non-enhancing shell up to the core's border."""
    stretch = rng.uniform(*LESION_STRETCH, size=3)
    lobes = smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["lobe"])
    gaps = smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["lobe"])
    edema_lobes = smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["edema"])
    # lobes bounded by tanh: the outline swings by at most the lobulation, no islands far out
    r = _ellipsoid_radius(axes, centre, radius * stretch) * (1.0 + LOBULATION * np.tanh(lobes))
    r_edema = _ellipsoid_radius(axes, centre, radius * edema_scale * stretch)
    r_edema *= 1.0 + EDEMA_LOBULATION * np.tanh(edema_lobes)
    parenchyma = (depth > 0) & (tissues != CSF) | (tissues >= NECROSIS)
    gap_level = rng.uniform(*NON_ENHANCING_RIM)
    rim_outer = inner + rim_mm / radius
    core = (r < 1) & parenchyma
    tissues[_touching(core, (r_edema < 1) & (tissues == WHITE))] = EDEMA
    tissues[core] = NON_ENHANCING
    tissues[core & (r >= inner) & (r < rim_outer) & (gaps > gap_level)] = ENHANCING
    if necrotic:
        tissues[core & (r < inner)] = NECROSIS


def _touching(core: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The parts of ``region`` connected (26 neighbours, through the core) to the core: edema
    spreads from the tumour; white matter cut off from it by cortex or CSF stays normal."""
    from scipy import ndimage

    labels, _ = ndimage.label(region | core, structure=np.ones((3, 3, 3), bool))
    keep = np.zeros(int(labels.max()) + 1, bool)
    keep[np.unique(labels[core])] = True
    keep[0] = False
    return keep[labels] & region


def _images(rng: np.random.Generator, axes, tissues: np.ndarray) -> dict[str, np.ndarray]:
    """The four modalities: tissue contrast x texture x bias, blurred, with Rician noise."""
    from scipy.ndimage import gaussian_filter

    texture = 1.0 + TEXTURE_AMPLITUDE * smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["texture"])
    sigma = rng.uniform(*NOISE_SHARE)
    images = {}
    for m, name in enumerate(MODALITIES):
        bias = np.exp(rng.uniform(*BIAS_AMPLITUDE) * smooth_field(rng, axes, wavelength_mm=FIELD_WAVELENGTH_MM["bias"],
                                                                   waves=4))
        signal = CONTRAST[tissues, m] * texture * bias
        signal = gaussian_filter(signal, BLUR_VOXELS, truncate=BLUR_TRUNCATE)
        real = rng.standard_normal(signal.shape, dtype=np.float32)
        real *= sigma
        real += signal
        imaginary = rng.standard_normal(signal.shape, dtype=np.float32)
        imaginary *= sigma
        magnitude = np.hypot(real, imaginary, out=real)                  # Rician
        magnitude *= UNIT
        np.rint(magnitude, out=magnitude)
        images[name] = np.minimum(magnitude, np.iinfo(np.int16).max, out=magnitude).astype(np.int16)
    return images
