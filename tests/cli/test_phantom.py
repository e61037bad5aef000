import csv
import json

from medtool.formats import load_volume


def test_phantom_command(cli, tmp_path):
    out = tmp_path / "data"
    result = cli("phantom", out, "--cases", "2", "--shape", "48", "--cxr", "1", "--seed", "5")
    assert result.exit_code == 0, result.stderr
    assert "wrote 2 CT cases" in result.stderr
    with open(out / "labels.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    truth = load_volume(out / "truth" / "case_001_lungs.nii.gz")
    step = truth.history[-1]
    assert step["command"].startswith("medtool phantom") and "--seed 5" in step["command"]
    assert step["version"] and step["time"]


def test_existing_output_needs_force(cli, tmp_path):
    out = tmp_path / "data"
    assert cli("phantom", out, "--cases", "1", "--shape", "32", "--cxr", "0").exit_code == 0
    again = cli("phantom", out, "--cases", "1", "--shape", "32", "--cxr", "0")
    assert again.exit_code == 1
    assert "exists already" in again.stderr and "--force" in again.stderr
    forced = cli("phantom", out, "--cases", "1", "--shape", "32", "--cxr", "0", "--force", "--seed", "9",
                 "--json")
    assert forced.exit_code == 0, forced.stderr
    summary = json.loads(forced.stdout)
    assert summary["cases"] == 1 and summary["cxr"] == 0 and summary["out"] == str(out)
    assert summary["ct_files"] == len(list((out / "ct").rglob("*.dcm")))
    assert not [p for p in out.rglob(".*")]     # no temporary or old folders left


def test_tumour_fraction_sets_the_share_of_tumour_cases(cli, tmp_path):
    def volumes(fraction):
        out = tmp_path / str(fraction)
        result = cli("phantom", out, "--cases", "4", "--shape", "32", "--cxr", "0", "--seed", "3",
                     "--tumour-fraction", str(fraction))
        assert result.exit_code == 0, result.stderr
        with open(out / "labels.csv") as handle:
            return [float(row["tumour_volume_ml"]) for row in csv.DictReader(handle)]

    assert all(v > 0 for v in volumes(1.0))
    assert all(v == 0 for v in volumes(0.0))
    assert cli("phantom", tmp_path / "bad", "--tumour-fraction", "1.5").exit_code == 2


def test_tumour_fraction_default_is_the_library_default():
    from medtool.cli import load
    from medtool.phantom.ct import TUMOUR_FRACTION

    from medtool.cli.phantom import DEFAULT_BRATS_LABELS
    from medtool.phantom.brain import DEFAULT_CONVENTION

    command = load("phantom")
    option = next(p for p in command.params if p.name == "tumour_fraction")
    assert option.default == TUMOUR_FRACTION
    assert next(p for p in command.params if p.name == "brats_labels").default == DEFAULT_CONVENTION
    assert DEFAULT_BRATS_LABELS == DEFAULT_CONVENTION


def test_brain_mri_kind(cli, tmp_path):
    out = tmp_path / "brats"
    result = cli("phantom", out, "--kind", "brain-mri", "--cases", "2", "--shape", "32", "--seed", "3",
                 "--brats-labels", "2017", "--skull-strip", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "brain-mri" and summary["cases"] == 2 and summary["shape"] == [32, 32, 32]
    assert summary["labels"] == {"1": "necrotic and non-enhancing tumour core", "2": "edema", "4": "enhancing tumour"}
    seg = load_volume(out / "brain_002" / "brain_002_seg.nii.gz")
    flair = load_volume(out / "brain_002" / "brain_002_flair.nii.gz")
    assert set(map(int, seg.array.ravel())) <= {0, 1, 2, 4} and flair.same_grid(seg)
    assert flair.array[0, 0, 0] == 0                                   # skull-stripped: background 0
    assert flair.history[-1]["command"].startswith("medtool phantom")
    text = cli("phantom", tmp_path / "b2", "--kind", "brain-mri", "--cases", "1", "--shape", "32")
    assert text.exit_code == 0 and "wrote 1 brain MRI case" in text.stderr and "BraTS 2015" in text.stderr


def test_brain_mri_refuses_ct_options_and_ct_refuses_brain_options(cli, tmp_path):
    for args, word in ((("--kind", "brain-mri", "--layout", "tcia"), "--layout"),
                       (("--kind", "brain-mri", "--range", "cap"), "--range"),
                       (("--kind", "brain-mri", "--cxr", "2"), "--cxr"),
                       (("--brats-labels", "2023",), "--brats-labels"),
                       (("--skull-strip",), "--skull-strip"),
                       (("--kind", "mri"), "--kind mri"),
                       (("--kind", "brain-mri", "--brats-labels", "2016"), "2015, 2017, 2023")):
        result = cli("phantom", tmp_path / "x", "--shape", "32", *args)
        assert result.exit_code == 2, args
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and word in errors[0], (args, result.stderr)
    assert not (tmp_path / "x").exists()
