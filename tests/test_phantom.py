"""The phantom data set: layout, realism, exact truth, determinism, and the peers' view of it."""

import csv
import json
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtool.formats import load_volume
from medtool.metrics import longest_axial_diameter
from medtool.phantom import write_dataset
from medtool.phantom.ct import LABEL_DIAMETER_MM, make_ct
from medtool.phantom.cxr import make_cxr
from medtool.volume import Volume


def read_series(folder: Path):
    """The slices of a CT folder read with plain pydicom, sorted by z, as HU."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    return datasets, hu


def labels(folder: Path) -> list[dict]:
    with open(folder / "labels.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout(phantom_dir):
    rows = labels(phantom_dir)
    assert [r["case_id"] for r in rows] == ["case_001", "case_002", "case_003", "case_004"]
    assert list(rows[0]) == ["case_id", "patient_id", "label", "tumour_volume_ml", "tumour_diameter_mm",
                            "PatientID"]
    for row in rows:
        case = row["case_id"]
        assert (phantom_dir / "ct" / case).is_dir()
        assert (phantom_dir / "truth" / f"{case}_lungs.nii.gz").is_file()
        assert (phantom_dir / "truth" / f"{case}_tumour.nii.gz").is_file()
    assert len(list((phantom_dir / "cxr").glob("*.dcm"))) == 4
    assert not list(phantom_dir.rglob(".*"))   # no temporary files left behind


def test_one_series_per_case_in_shuffled_files(phantom_dir):
    series_of_case = {}
    for folder in sorted((phantom_dir / "ct").iterdir()):
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]
        uids = {d.SeriesInstanceUID for d in datasets}
        assert len(uids) == 1
        series_of_case[folder.name] = uids.pop()
        truth = load_volume(phantom_dir / "truth" / f"{folder.name}_lungs.nii.gz")
        assert len(datasets) == truth.shape[0]
        # file-name order is not slice order
        z_by_name = [float(d.ImagePositionPatient[2]) for d in datasets]
        assert z_by_name != sorted(z_by_name) and z_by_name != sorted(z_by_name, reverse=True)
        assert sorted(d.InstanceNumber for d in datasets) == list(range(1, len(datasets) + 1))
    assert len(set(series_of_case.values())) == 4


def test_truth_is_on_the_series_grid(phantom_dir):
    for row in labels(phantom_dir):
        datasets, hu = read_series(phantom_dir / "ct" / row["case_id"])
        lungs = load_volume(phantom_dir / "truth" / f"{row['case_id']}_lungs.nii.gz")
        first, second = datasets[0], datasets[1]
        assert lungs.shape == hu.shape
        assert np.allclose(lungs.origin, [float(v) for v in first.ImagePositionPatient])
        dz = float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
        assert np.allclose(lungs.spacing, [dz, *map(float, first.PixelSpacing)])
        assert lungs.orientation == "LPS"
        # the truth marks lung where the image is lung-dense air, and not elsewhere
        inside = hu[lungs.array > 0]
        assert np.median(inside) < -700
        assert np.mean(inside < -500) > 0.85


def test_anatomy_values(phantom_dir):
    datasets, hu = read_series(phantom_dir / "ct" / "case_002")
    stored = np.stack([d.pixel_array for d in datasets])
    d = datasets[0]
    assert d.PixelPaddingValue == -2000 and d.RescaleIntercept == -1024
    # outside the circular field of view: stored -2000
    assert stored[0, 0, 0] == -2000 and stored[0, -1, -1] == -2000
    assert np.mean(stored == -2000) > 0.1
    assert hu.max() > 500                          # bone
    assert np.any((hu > -150) & (hu < 100))        # soft tissue


def test_lungs_are_labelled_by_patient_side(phantom_dir):
    for row in labels(phantom_dir):
        lungs = load_volume(phantom_dir / "truth" / f"{row['case_id']}_lungs.nii.gz")
        x_of = {label: lungs.world(np.argwhere(lungs.array == label))[:, 0].mean() for label in (1, 2)}
        assert x_of[1] < x_of[2]            # 1 = right lung: towards LPS -x (patient's right)


def test_labels_match_the_tumour_truth(phantom_dir):
    rows = labels(phantom_dir)
    assert {r["label"] for r in rows} == {"0", "1"}
    for row in rows:
        tumour = load_volume(phantom_dir / "truth" / f"{row['case_id']}_tumour.nii.gz")
        lungs = load_volume(phantom_dir / "truth" / f"{row['case_id']}_lungs.nii.gz")
        volume_ml = tumour.array.sum() * np.prod(tumour.spacing) / 1000
        assert float(row["tumour_volume_ml"]) == pytest.approx(volume_ml, abs=1e-3)
        diameter = longest_axial_diameter(tumour.array, tumour.spacing)
        assert float(row["tumour_diameter_mm"]) == pytest.approx(diameter, abs=0.01)
        assert int(row["label"]) == int(diameter >= LABEL_DIAMETER_MM)
        assert np.all(lungs.array[tumour.array > 0] > 0)   # the tumour lies in a lung
    assert any(float(r["tumour_diameter_mm"]) > 0 and r["label"] == "0" for r in rows)


def test_some_patient_has_two_cases(phantom_dir):
    cases_of = defaultdict(list)
    for row in labels(phantom_dir):
        cases_of[row["patient_id"]].append(row["case_id"])
    twice = [cases for cases in cases_of.values() if len(cases) == 2]
    assert twice
    a, b = (pydicom.dcmread(next((phantom_dir / "ct" / c).glob("*.dcm")), stop_before_pixels=True)
            for c in twice[0])
    assert a.PatientID == b.PatientID and a.PatientName == b.PatientName
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.StudyDate < b.StudyDate


def test_dicom_carries_a_fake_identity_to_remove(phantom_dir):
    d = pydicom.dcmread(next((phantom_dir / "ct" / "case_001").glob("*.dcm")))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime",
                    "InstitutionName", "ReferringPhysicianName", "AccessionNumber", "StudyDate",
                    "OtherPatientIDs", "PatientAddress"):
        assert str(d.data_element(keyword).value), keyword
    assert "^" in str(d.PatientName)
    assert any(element.tag.is_private for element in d)
    assert d.RequestAttributesSequence[0].StudyInstanceUID == d.StudyInstanceUID


def test_boxes_and_xrays(phantom_dir):
    with open(phantom_dir / "cxr_boxes.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["patientId", "x", "y", "width", "height", "Target"]
    assert {p.stem for p in (phantom_dir / "cxr").glob("*.dcm")} == {r["patientId"] for r in rows}
    for row in rows:
        d = pydicom.dcmread(phantom_dir / "cxr" / f"{row['patientId']}.dcm")
        assert d.Modality in ("CR", "DX") and d.pixel_array.ndim == 2
        if row["Target"] == "1":
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
            assert x >= 0 and y >= 0 and x + w <= d.Columns and y + h <= d.Rows and w > 0 and h > 0
        else:
            assert row["x"] == "" and row["Target"] == "0"


@pytest.mark.parametrize("seed", range(8))
def test_xray_boxes_hold_the_opacities(seed):
    """Each box encloses its opacity: most of what the opacities add lies inside the boxes."""
    xray = make_cxr(np.random.default_rng(seed), size=256)
    inside = np.zeros(xray.image.shape, bool)
    for x, y, w, h in xray.boxes:
        inside[int(y):int(y + h), int(x):int(x + w)] = True
    if xray.boxes:
        assert xray.opacity[inside].sum() > 0.8 * xray.opacity.sum() > 0
        assert xray.opacity[~inside].max() < 0.5 * xray.opacity.max()
    else:
        assert xray.opacity.max() == 0


def test_same_seed_same_data(tmp_path):
    a = write_dataset(tmp_path / "a", cases=2, seed=3, shape=48, cxr=1, step={"command": "x"})
    b = write_dataset(tmp_path / "b", cases=2, seed=3, shape=48, cxr=1, workers=2, step={"command": "x"})
    assert a == b
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.suffix == ".dcm" or rel.suffix == ".csv":
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    write_dataset(tmp_path / "c", cases=2, seed=4, shape=48, cxr=0, step={"command": "x"})
    first = sorted((tmp_path / "a" / "ct" / "case_001").glob("*.dcm"))[0].name
    assert (tmp_path / "c" / "ct" / "case_001" / first).read_bytes() != \
        (tmp_path / "a" / "ct" / "case_001" / first).read_bytes()


def test_realistic_default_case():
    """The default size is a realistic chest CT: 512 x 512, 100+ slices, clinical spacings."""
    case = make_ct(np.random.default_rng(11))
    assert case.hu.shape[1:] == (512, 512) and case.hu.shape[0] >= 100
    assert 0.6 <= case.spacing[1] <= 0.9 and 1.0 <= case.spacing[0] <= 5.0
    lungs = case.lungs > 0
    assert -900 < np.nanmean(case.hu[lungs]) < -750
    # each lung is one connected piece and holds hundreds of millilitres
    from scipy import ndimage

    for label in (1, 2):
        _, pieces = ndimage.label(case.lungs == label)
        assert pieces == 1
        volume_ml = (case.lungs == label).sum() * np.prod(case.spacing) / 1000
        assert 500 < volume_ml < 5000


def test_dcm2niix_reads_one_volume_per_case_on_the_truth_grid(phantom_dir, dcm2niix, tmp_path):
    """dcm2niix (the peer) sees one series per case; our truth sits on its world grid."""
    for row in labels(phantom_dir)[:2]:
        case = row["case_id"]
        out = tmp_path / case
        out.mkdir()
        subprocess.run([dcm2niix, "-z", "n", "-b", "n", "-o", str(out), "-f", case,
                        str(phantom_dir / "ct" / case)], check=True, capture_output=True)
        written = list(out.glob("*.nii"))
        assert [p.name for p in written] == [f"{case}.nii"]
        theirs = load_volume(written[0])
        truth = load_volume(phantom_dir / "truth" / f"{case}_lungs.nii.gz")
        assert sorted(theirs.shape) == sorted(truth.shape)
        # map every truth voxel centre into dcm2niix's voxel index space: whole numbers, in range
        index_theirs = np.linalg.inv(theirs.affine) @ truth.affine
        assert np.allclose(index_theirs, np.round(index_theirs), atol=1e-3)
        k, j, i = np.indices(truth.shape).reshape(3, -1)
        mapped = np.rint(index_theirs @ np.vstack([k, j, i, np.ones_like(k)]))[:3].astype(int)
        assert mapped.min() >= 0 and np.all(mapped.max(axis=1) < np.array(theirs.shape))
        # the same world point holds the same HU in their image as in the DICOM pixels
        _, hu = read_series(phantom_dir / "ct" / case)
        their_hu = theirs.array[tuple(mapped)].reshape(truth.shape)
        assert np.array_equal(their_hu, hu)
        # so our NIfTI writer puts the image where dcm2niix does
        ours = Volume(hu.astype(np.int16), truth.spacing, truth.origin, truth.direction)
        assert np.allclose(np.linalg.inv(theirs.affine) @ ours.affine, index_theirs)


# -- the anatomy real scans have: ranges, bowel, effusion, emphysema, one lung, tumours ---------
def _make(seed=2, shape=64, **anatomy):
    from medtool.phantom.ct import Anatomy

    return make_ct(np.random.default_rng(seed), shape=shape, anatomy=Anatomy(**anatomy))


def _z_mm(case):
    return case.origin[2] + case.spacing[0] * np.arange(case.hu.shape[0])


def test_default_anatomy_is_the_chest_as_before():
    """Anatomy() is the default chest: the same draws, no anatomy truth, the same facts."""
    plain = make_ct(np.random.default_rng(4), shape=48)
    default = _make(4, 48)
    assert np.array_equal(np.nan_to_num(plain.hu), np.nan_to_num(default.hu))
    assert np.array_equal(plain.lungs, default.lungs) and np.array_equal(plain.tumour, default.tumour)
    assert plain.anatomy is None and default.anatomy is None and set(plain.facts) == {"lung_gap_mm", "body_cut_by_fov"}


def test_options_leave_the_rest_of_the_patient():
    """The bowel is drawn from a side stream: same seed, the same lungs, tumour and grid."""
    plain, bowel = make_ct(np.random.default_rng(5), shape=64), _make(5, bowel=True)
    assert bowel.hu.shape == plain.hu.shape and bowel.spacing == plain.spacing
    assert np.array_equal(bowel.lungs, plain.lungs) and np.array_equal(bowel.tumour, plain.tumour)


def test_bowel_gas_lies_under_the_diaphragm():
    from medtool.phantom.ct import BOWEL_CONTENT_TRUTH, BOWEL_GAS_TRUTH, DIAPHRAGM_GAP_MM

    case = _make(3, 96, scan_range="cap")
    gas, content = case.anatomy == BOWEL_GAS_TRUTH, case.anatomy == BOWEL_CONTENT_TRUTH
    voxel_ml = np.prod(case.spacing) / 1000
    assert gas.sum() * voxel_ml > 200 and content.sum() * voxel_ml > 200
    assert np.all(case.hu[gas] < -850) and np.median(case.hu[content]) > -150
    assert not np.any(gas & (case.lungs > 0))
    # in every column that holds both, the gas ends at least the diaphragm gap under the lung
    z = _z_mm(case)[:, None, None]
    lowest_lung = np.where(case.lungs > 0, z, np.inf).min(axis=0)
    highest_gas = np.where(gas, z, -np.inf).max(axis=0)
    both = np.isfinite(lowest_lung) & np.isfinite(highest_gas)
    assert both.any() and np.all(lowest_lung[both] - highest_gas[both] >= DIAPHRAGM_GAP_MM - 1e-6)


def test_scan_ranges():
    chest, cap = _make(1), _make(1, scan_range="cap")
    abdomen, bases, apices = (_make(1, scan_range=r) for r in ("abdomen", "bases", "apices"))
    extent = {name: _z_mm(c)[-1] - _z_mm(c)[0] for name, c in
              (("chest", chest), ("cap", cap), ("abdomen", abdomen), ("bases", bases), ("apices", apices))}
    assert extent["cap"] > extent["chest"] + 250 and extent["apices"] < 130
    assert not abdomen.lungs.any() and abdomen.facts["scan_range"] == "abdomen"
    for case in (cap, bases, apices):
        assert set(np.unique(case.lungs)) == {0, 1, 2}
    # bases: lung only in the top slices, bowel below them; apices: lung up to near the top
    lung_z = _z_mm(bases)[bases.lungs.any(axis=(1, 2))]
    assert lung_z.min() >= -1.0 and lung_z.max() <= 90.0 and (bases.anatomy == 2).any()
    assert _z_mm(apices)[apices.lungs.any(axis=(1, 2))].min() == _z_mm(apices)[0]   # cut at the bottom
    assert (apices.anatomy == 1).any()                                             # the trachea


def test_one_lung_effusion_and_emphysema_truth():
    from medtool.phantom.ct import EFFUSION_TRUTH, EMPHYSEMA_TRUTH, SPACE_TRUTH

    plain = make_ct(np.random.default_rng(6), shape=64)
    one = _make(6, one_lung="left")
    assert set(np.unique(one.lungs)) == {0, 2} and (one.anatomy == SPACE_TRUTH).sum() > 1000
    assert np.median(one.hu[one.anatomy == SPACE_TRUTH]) > 0            # fluid, not air
    effusion = _make(6, effusion=True)
    fluid = effusion.anatomy == EFFUSION_TRUTH
    assert fluid.any() and not np.any(fluid & (effusion.lungs > 0))
    assert np.mean((effusion.lungs > 0) <= (plain.lungs > 0)) == 1.0    # the lungs only shrink
    assert np.mean(fluid[plain.lungs > 0] | (effusion.lungs[plain.lungs > 0] > 0)) > 0.999
    emphysema = _make(6, emphysema=True)
    bullae = emphysema.anatomy == EMPHYSEMA_TRUTH
    assert bullae.sum() > 0.05 * (emphysema.lungs > 0).sum() and np.all(emphysema.lungs[bullae] > 0)
    assert np.median(emphysema.hu[bullae]) < -950
    assert np.mean(emphysema.hu[emphysema.lungs > 0] < np.median(plain.hu[plain.lungs > 0])) > 0.6


def test_juxtapleural_tumour_touches_the_chest_wall_inside_the_lung_truth():
    from medtool.phantom.ct import Anatomy

    case = make_ct(np.random.default_rng(3), shape=96, tumour_probability=1.0,
                   anatomy=Anatomy(juxtapleural=True))
    tumour = case.tumour > 0
    assert np.all(case.lungs[tumour] > 0)
    assert longest_axial_diameter(case.tumour, case.spacing) >= 25.0
    # it reaches the lung's outer surface: tumour voxels with non-lung, non-air tissue beside them
    outside = (case.lungs == 0) & (np.nan_to_num(case.hu, nan=-1000) > -300)
    beside = np.zeros_like(tumour)
    beside[:, :, 1:] |= outside[:, :, :-1]
    beside[:, :, :-1] |= outside[:, :, 1:]
    beside[:, 1:] |= outside[:, :-1]
    beside[:, :-1] |= outside[:, 1:]
    assert np.sum(tumour & beside) > 20


def test_anatomy_options_are_checked():
    from medtool.errors import UsageError
    from medtool.phantom.ct import Anatomy

    with pytest.raises(UsageError, match="scan range"):
        Anatomy(scan_range="pelvis")
    with pytest.raises(UsageError, match="one lung"):
        Anatomy(one_lung="both")


def test_grown_follow_ups_share_the_patient(tmp_path):
    """--follow-up grown: the follow-up has the baseline's body and lungs, a larger tumour and
    its own noise; the anatomy truth is written for a non-default anatomy."""
    out = tmp_path / "d"
    write_dataset(out, cases=6, seed=5, shape=48, cxr=0, tumour_fraction=1.0, follow_up="grown",
                  step={"command": "x"})
    rows = labels(out)
    cases_of = defaultdict(list)
    for row in rows:
        cases_of[row["patient_id"]].append(row["case_id"])
    pairs = [c for c in cases_of.values() if len(c) == 2]
    assert pairs
    for first, second in pairs:
        a, b = (load_volume(out / "truth" / f"{c}_lungs.nii.gz") for c in (first, second))
        assert a.same_grid(b) and np.array_equal(a.array, b.array)
        ta, tb = (load_volume(out / "truth" / f"{c}_tumour.nii.gz").array for c in (first, second))
        assert tb.sum() > ta.sum() > 0 and np.all(tb[ta > 0] > 0)
        _, hu_a = read_series(out / "ct" / first)
        _, hu_b = read_series(out / "ct" / second)
        assert not np.array_equal(hu_a, hu_b)
    assert not list((out / "truth").glob("*_anatomy.nii.gz"))          # default anatomy: none


def test_phantom_command_anatomy_options(cli, tmp_path):
    out = tmp_path / "bases"
    result = cli("phantom", out, "--cases", "2", "--shape", "48", "--cxr", "1", "--cxr-size", "80",
                 "--range", "bases", "--effusion", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["anatomy"] == "bases+bowel+effusion"
    truth = load_volume(out / "truth" / "case_001_anatomy.nii.gz")
    assert truth.meta["labels"]["2"].startswith("gas") and (truth.array == 2).any()
    assert truth.same_grid(load_volume(out / "truth" / "case_001_lungs.nii.gz"))
    d = pydicom.dcmread(next((out / "cxr").glob("*.dcm")))
    assert (d.Rows, d.Columns) == (80, 80)
    assert "ABDOMEN" in pydicom.dcmread(next((out / "ct").rglob("*.dcm")), stop_before_pixels=True).StudyDescription
    for bad in (["--range", "pelvis"], ["--one-lung", "both"], ["--follow-up", "later"]):
        assert cli("phantom", tmp_path / "bad", "--cases", "1", "--shape", "32", *bad).exit_code == 2
    help_text = cli("phantom", "--help").stdout
    for option in ("--range", "--bowel", "--effusion", "--emphysema", "--one-lung", "--juxtapleural",
                   "--follow-up", "--cxr-size"):
        assert option in help_text
