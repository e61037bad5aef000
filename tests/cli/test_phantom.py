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
    import typer

    from medtool.cli import app
    from medtool.phantom.ct import TUMOUR_FRACTION

    command = typer.main.get_command(app).commands["phantom"]
    option = next(p for p in command.params if p.name == "tumour_fraction")
    assert option.default == TUMOUR_FRACTION
