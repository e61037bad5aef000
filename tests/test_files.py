from pathlib import Path

import pytest

from medtool.errors import OutputExistsError, UsageError
from medtool.files import atomic_directory, find_files, mirror_path, parse_shard, strip_suffix, \
    take_shard, volume_suffix


def test_suffixes():
    assert volume_suffix("a/b.NII.GZ") == ".nii.gz" and volume_suffix("x.npy") == ".npy"
    assert volume_suffix("x.gz") is None
    assert strip_suffix("case_001.nii.gz") == "case_001"


def test_shards_partition_the_items():
    items = list(range(10))
    shards = [take_shard(items, parse_shard(f"{i}/3")) for i in (1, 2, 3)]
    assert sorted(sum(shards, [])) == items and shards[0] == [0, 3, 6, 9]
    assert take_shard(items, None) == items


@pytest.mark.parametrize("spec", ["0/3", "4/3", "a/b", "3"])
def test_bad_shard(spec):
    with pytest.raises(UsageError):
        parse_shard(spec)


def test_find_files_walks_folders_and_keeps_named_files(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.nii.gz", "d/sub/a.npy", "d/notes.txt", "d/.hidden.npy"):
        (tmp_path / name).write_text("x")
    found = find_files([tmp_path / "d", tmp_path / "d" / "notes.txt", tmp_path / "missing.nii"])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["d/b.nii.gz", "d/sub/a.npy", "d/notes.txt", "missing.nii"]


def test_mirror_path(tmp_path):
    root = tmp_path / "in"
    (root / "x").mkdir(parents=True)
    out = Path("/out")
    assert mirror_path(root / "x" / "c.nii.gz", [root], out, ".npy") == out / "x" / "c.npy"
    assert mirror_path(tmp_path / "d.npz", [root], out, ".nii.gz") == out / "d.nii.gz"


def test_atomic_directory(tmp_path):
    target = tmp_path / "series"
    with atomic_directory(target) as temp:
        (temp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(OutputExistsError):
        with atomic_directory(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_directory(target, force=True) as temp:
            (temp / "b").write_text("2")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["series"]
    assert [p.name for p in target.iterdir()] == ["a"]     # the old content survived
    with atomic_directory(target, force=True) as temp:
        (temp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]


def test_stale_temporary_files_of_an_output_are_removed_on_the_next_run(tmp_path):
    """A run killed with SIGKILL leaves its temporary file; the next write of that output
    removes it, but never the temporary file of a process that is still running."""
    import os
    import subprocess
    import sys

    from medtool.files import _temp_prefix, atomic_output

    out = tmp_path / "case.npy"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / _temp_prefix(out).replace(f"~{os.getpid()}~", f"~{pid}~")
    stale = stale.with_name(stale.name + "abcdefgh.tmp.npy")
    live = tmp_path / (_temp_prefix(out) + "zzzzzzzz.tmp.npy")          # this process: running
    other = tmp_path / (_temp_prefix(tmp_path / "other.npy").replace(f"~{os.getpid()}~", f"~{pid}~")
                        + "abcdefgh.tmp.npy")                           # another output's
    for path in (stale, live, other):
        path.write_bytes(b"half")
    with atomic_output(out) as temp:
        temp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists()


def test_sigterm_during_a_write_leaves_nothing_behind(tmp_path):
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from medtool.cli.common import _terminate_cleanly\n"
        "from medtool.files import atomic_output\n"
        "with _terminate_cleanly():\n"
        "    with atomic_output(Path(sys.argv[1])) as temp:\n"
        "        temp.write_bytes(b'x' * 1000)\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.npy")],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 1                # the temporary file
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_usual_permissions_without_a_chmod(tmp_path):
    """Temporary outputs are created as ``open(path, "w")`` would create the file (0o666 less
    the umask), so the published file has those permissions; their names are unique and
    recognised as this process's temporary files."""
    import os
    import stat

    from medtool.files import _TEMP_NAME, atomic_output, open_temporary

    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.nii.gz") as temp:
            assert temp.name.endswith(".tmp.nii.gz") and _TEMP_NAME.match(temp.name)
            temp.write_bytes(b"x")
        first, handle = open_temporary(tmp_path / "b.dcm")
        os.close(handle)
        second, handle = open_temporary(tmp_path / "b.dcm")
        os.close(handle)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.nii.gz").stat().st_mode) == 0o640
    assert first != second and stat.S_IMODE(first.stat().st_mode) == 0o640
    match = _TEMP_NAME.match(first.name)
    assert match["name"] == "b.dcm" and int(match["pid"]) == os.getpid()


def test_a_temporary_name_left_by_a_dead_process_of_the_same_pid_is_skipped(tmp_path):
    import os

    from medtool import files

    serial = next(files._TEMP_SERIAL) + 1               # the serial the next call takes
    taken = tmp_path / f"{files._temp_prefix(tmp_path / 'c.dcm')}{serial:x}.tmp.dcm"
    taken.write_bytes(b"old")
    temp, handle = files.open_temporary(tmp_path / "c.dcm")
    os.close(handle)
    assert temp != taken and taken.read_bytes() == b"old" and temp.stat().st_size == 0


def test_a_folder_written_atomically_gets_the_usual_permissions(tmp_path):
    """Not mkdtemp's 0700: a phantom case folder or an exported data set is readable as any
    folder mkdir makes (0o777 less the umask)."""
    import os
    import stat

    from medtool.files import atomic_directory

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "case_001") as temp:
            (temp / "a.dcm").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "case_001").stat().st_mode) == 0o755
