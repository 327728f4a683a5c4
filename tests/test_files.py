"""The shared primitives: atomic writes, result-folder publishing, stale temporaries, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from seggpt_model.errors import one_line
from seggpt_model.files import atomic_write, make_temp_dir, publish_dir, remove_stale_temps


def test_atomic_write_bytes_text_and_callable(tmp_path):
    atomic_write(tmp_path / "a.bin", b"\x00\x01")
    atomic_write(tmp_path / "b.txt", "é\n")
    atomic_write(tmp_path / "c.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "é\n"
    assert (tmp_path / "c.bin").read_bytes() == b"xyz"
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.bin"]


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_publish_replaces_older_result(tmp_path):
    (tmp_path / "seq").mkdir()
    (tmp_path / "seq" / "old.png").write_text("o")
    tmp = make_temp_dir(tmp_path, "seq")
    (tmp / "new.png").write_text("n")
    publish_dir(tmp, tmp_path / "seq")
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]
    assert [p.name for p in (tmp_path / "seq").iterdir()] == ["new.png"]


def test_remove_stale_temps_only_removes_dead_owners(tmp_path):
    mine = make_temp_dir(tmp_path, "car-shadow")              # this (live) process
    code = "import sys; from seggpt_model.files import make_temp_dir; print(make_temp_dir(sys.argv[1], 'car-shadow'))"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    dead = tmp_path / os.path.basename(out.stdout.strip())
    foreign = tmp_path / ".car-shadow.tmp-otherhost-1-abcd"   # another node's: may be alive
    foreign.mkdir()
    other_name = make_temp_dir(tmp_path, "car")
    assert dead.is_dir()
    assert remove_stale_temps(tmp_path, "car-shadow") == [dead]
    assert mine.is_dir() and foreign.is_dir() and other_name.is_dir()
    assert sorted(remove_stale_temps(tmp_path, "car-shadow", any_owner=True)) == sorted([mine, foreign])
    assert other_name.is_dir()


def test_one_line():
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(RuntimeError("")) == "RuntimeError"
    assert one_line(FileNotFoundError(2, "No such file or directory")) == "No such file or directory"
    assert one_line(RuntimeError("Traceback\n  line 1\nKeyError: 'x'"), last=True) == "KeyError: 'x'"
    assert one_line(KeyError("x"), with_type=True) == "KeyError: 'x'"
    long = one_line(ValueError("y" * 500))
    assert len(long) == 300 and long.endswith("...")
