"""The brain MRI phantom: contrasts measured on generated cases, what each modality can tell
apart, noise and bias, labels, determinism and resolution independence."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtool.errors import UsageError
from medtool.phantom import brain
from medtool.phantom.brain import (CSF, EDEMA, ENHANCING, GREY, MODALITIES, NECROSIS, NON_ENHANCING,
                                   WHITE, make_brain, tumour_labels)

SHAPE = 96


@pytest.fixture(scope="module")
def cases():
    return [make_brain(np.random.default_rng(seed), shape=SHAPE) for seed in range(3)]


def _interior(tissues):
    """Voxels whose six face neighbours have their tissue: no partial volume with another."""
    same = np.zeros(tissues.shape, bool)
    same[1:-1, 1:-1, 1:-1] = True
    core = tissues[1:-1, 1:-1, 1:-1]
    for axis in range(3):
        for shift in (-1, 1):
            same[1:-1, 1:-1, 1:-1] &= np.roll(tissues, shift, axis=axis)[1:-1, 1:-1, 1:-1] == core
    return same


def _values(cases, modality, *tissues, interior=False):
    return np.concatenate([c.images[modality][np.isin(c.tissues, tissues) & (_interior(c.tissues) if interior else True)]
                           .astype(float) for c in cases])


def _mean(cases, modality, tissue):
    return _values(cases, modality, tissue).mean()


def _auc(cases, modality, positive, negatives):
    """How well one modality's intensity alone tells ``positive`` from ``negatives`` within a
    case (0.5: not at all; 1: perfectly, either direction), averaged over the cases that have
    both, on voxels away from other tissues (partial volume at borders says where a voxel is,
    not what the modality shows)."""
    aucs = []
    for case in cases:
        pos = _values([case], modality, positive, interior=True)
        neg = _values([case], modality, *negatives, interior=True)
        if len(pos) and len(neg):
            auc = roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])
            aucs.append(max(auc, 1.0 - auc))
    assert aucs, "no case has both"
    return float(np.mean(aucs))


def test_every_case_has_each_tissue_and_tumour_class(cases):
    for case in cases:
        present = set(np.unique(case.tissues))
        assert {CSF, GREY, WHITE, EDEMA, NON_ENHANCING, ENHANCING} <= present
        assert all(image.shape == (SHAPE,) * 3 and image.dtype == np.int16 for image in case.images.values())
    assert any(NECROSIS in np.unique(c.tissues) for c in cases)


def test_contrasts_relate_as_in_real_mri(cases):
    m = lambda modality, tissue: _mean(cases, modality, tissue)  # noqa: E731
    # FLAIR: edema bright, grey above white matter, CSF dark (suppressed)
    assert m("flair", EDEMA) > 1.5 * m("flair", GREY) and m("flair", GREY) > m("flair", WHITE) > 2 * m("flair", CSF)
    # T1: white above grey matter above CSF; T2 the other way round
    assert m("t1", WHITE) > 1.3 * m("t1", GREY) and m("t1", GREY) > 1.5 * m("t1", CSF)
    assert m("t2", CSF) > 1.3 * m("t2", GREY) and m("t2", GREY) > 1.3 * m("t2", WHITE)
    assert m("t2", EDEMA) > 1.3 * m("t2", GREY)
    # T1c: the enhancing rim is the brightest brain tissue; necrosis darker than the core
    assert m("t1ce", ENHANCING) > 1.2 * max(m("t1ce", t) for t in (GREY, WHITE, CSF, EDEMA, NON_ENHANCING, NECROSIS))
    assert m("t1ce", NECROSIS) < 0.8 * m("t1ce", NON_ENHANCING)
    assert m("t1ce", ENHANCING) > 2 * m("t1", ENHANCING)          # the contrast agent, T1c only


def test_enhancing_tumour_is_visible_on_t1c_only(cases):
    assert _auc(cases, "t1ce", ENHANCING, (NECROSIS, NON_ENHANCING)) > 0.97
    for modality in ("flair", "t1", "t2"):                        # the rim looks like the core
        assert _auc(cases, modality, ENHANCING, (NON_ENHANCING,)) < 0.65, modality


def test_each_modality_alone_confuses_edema_with_something(cases):
    # FLAIR tells edema from CSF and brain, not from the tumour core
    assert _auc(cases, "flair", EDEMA, (CSF,)) > 0.97 and _auc(cases, "flair", EDEMA, (GREY, WHITE)) > 0.97
    assert _auc(cases, "flair", EDEMA, (NON_ENHANCING, ENHANCING)) < 0.65
    # T2 tells edema from the core, not from CSF; T1c tells it from the core, not from grey matter
    assert _auc(cases, "t2", EDEMA, (NON_ENHANCING,)) > 0.95 and _auc(cases, "t2", EDEMA, (CSF,)) < 0.75
    assert _auc(cases, "t1ce", EDEMA, (NON_ENHANCING,)) > 0.9 and _auc(cases, "t1ce", EDEMA, (GREY,)) < 0.75
    # necrosis: at the CSF level on T1c, told apart by FLAIR
    assert _auc(cases, "t1ce", NECROSIS, (CSF,)) < 0.7 and _auc(cases, "flair", NECROSIS, (CSF,)) > 0.97


def test_rician_background_and_positive_values(cases):
    for case in cases:
        for name, image in case.images.items():
            assert image.min() >= 0
            corner = image[:10, :10, :10].astype(float)            # air outside the head
            assert (case.tissues[:10, :10, :10] == brain.BACKGROUND).all()
            # Rayleigh: mean / std = sqrt(pi/2) / sqrt(2 - pi/2) = 1.91 (a clipped Gaussian gives ~1.3)
            assert corner.mean() / corner.std() == pytest.approx(1.913, rel=0.08), name


def test_each_modality_has_its_own_smooth_bias_field(cases):
    """White matter's mean in the eight octants of the grid, relative to its overall mean:
    the field moves it by several percent, and differently in each modality."""
    case = cases[0]
    half = SHAPE // 2
    white = case.tissues == WHITE
    profiles = {}
    for name in MODALITIES:
        image = case.images[name].astype(float)
        octants = [image[z:z + half, y:y + half, x:x + half][white[z:z + half, y:y + half, x:x + half]].mean()
                   for z in (0, half) for y in (0, half) for x in (0, half)]
        profiles[name] = np.array(octants) / image[white].mean()
    assert all(p.max() - p.min() > 0.04 for p in profiles.values())
    differences = [np.abs(profiles[a] - profiles[b]).max() for a in MODALITIES for b in MODALITIES if a < b]
    assert min(differences) > 0.02


def test_label_conventions():
    tissues = np.arange(len(brain.TISSUE_NAMES), dtype=np.uint8)
    assert tumour_labels(tissues, "2015")[[NECROSIS, EDEMA, NON_ENHANCING, ENHANCING]].tolist() == [1, 2, 3, 4]
    assert tumour_labels(tissues, "2017")[[NECROSIS, EDEMA, NON_ENHANCING, ENHANCING]].tolist() == [1, 2, 1, 4]
    assert tumour_labels(tissues, "2023")[[NECROSIS, EDEMA, NON_ENHANCING, ENHANCING]].tolist() == [1, 2, 1, 3]
    assert not tumour_labels(tissues, "2015")[[brain.BACKGROUND, brain.SCALP, brain.SKULL, CSF, GREY, WHITE]].any()
    with pytest.raises(UsageError):
        tumour_labels(tissues, "2019")


def test_tumour_lies_inside_the_brain(cases):
    for case in cases:
        seg = case.seg()
        assert set(np.unique(seg)) <= {0, 1, 2, 3, 4}
        tumour = seg > 0
        assert tumour.sum() > 1000
        # every tumour voxel has brain tissue within 2 voxels in-plane: not in scalp, skull or air
        outside = np.isin(case.tissues, (brain.BACKGROUND, brain.SCALP, brain.SKULL))
        assert not (tumour & outside).any()
        # the core (1, 3, 4) is a lesion 10-22 mm in radius, give or take its stretch and lobes;
        # edema surrounds it: the whole tumour is larger
        core = np.isin(seg, (1, 3, 4)).sum() * np.prod(case.spacing)
        radius = (3 * core / (4 * np.pi)) ** (1 / 3)
        low, high = brain.CORE_RADIUS_MM
        assert 0.7 * low < radius < 1.3 * high
        assert tumour.sum() > 1.5 * np.isin(seg, (1, 3, 4)).sum()


def test_same_seed_same_case_and_skull_strip_changes_only_the_images():
    one = make_brain(np.random.default_rng(5), shape=48)
    two = make_brain(np.random.default_rng(5), shape=48)
    other = make_brain(np.random.default_rng(6), shape=48)
    stripped = make_brain(np.random.default_rng(5), shape=48, skull_strip=True)
    assert np.array_equal(one.tissues, two.tissues)
    assert all(np.array_equal(one.images[m], two.images[m]) for m in MODALITIES)
    assert not np.array_equal(one.tissues, other.tissues)
    assert np.array_equal(one.tissues, stripped.tissues)
    extra = np.isin(one.tissues, (brain.BACKGROUND, brain.SCALP, brain.SKULL))
    for m in MODALITIES:
        assert (stripped.images[m][extra] == 0).all() and stripped.images[m][one.tissues == WHITE].min() > 0
        brain_part = one.tissues >= CSF
        assert np.array_equal(stripped.images[m][brain_part], one.images[m][brain_part])


def test_same_case_at_any_resolution():
    """The anatomy is in mm: the tumour's volume hardly changes with the sampling."""
    coarse = make_brain(np.random.default_rng(11), shape=64)
    fine = make_brain(np.random.default_rng(11), shape=128)
    for labels in ((1, 2, 3, 4), (1, 3, 4), (2,)):
        volumes = [np.isin(c.seg(), labels).sum() * np.prod(c.spacing) for c in (coarse, fine)]
        assert volumes[0] == pytest.approx(volumes[1], rel=0.12), labels
    assert coarse.spacing == (3.0, 3.0, 3.0) and fine.spacing == (1.5, 1.5, 1.5)


def test_smooth_field_equals_the_sum_of_plane_waves():
    axes = (np.arange(5.0) * 3, np.arange(6.0) * 2, np.arange(7.0))
    field = brain.smooth_field(np.random.default_rng(3), axes, wavelength_mm=(10.0, 30.0), waves=3)
    rng = np.random.default_rng(3)                               # the same draws, written out
    direction = rng.normal(size=(3, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(10.0, 30.0, size=3)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    z, y, x = np.meshgrid(*axes, indexing="ij")
    expected = sum(np.cos(k[w] * (direction[w, 0] * z + direction[w, 1] * y + direction[w, 2] * x) + phase[w])
                   for w in range(3)) / np.sqrt(1.5)
    assert np.allclose(field, expected, atol=1e-5)


def test_too_small_a_grid_is_refused():
    with pytest.raises(UsageError, match="at least 32"):
        make_brain(np.random.default_rng(0), shape=16)
