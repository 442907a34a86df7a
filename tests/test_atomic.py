import os
import stat
import time

import pytest

from minisnn import atomic
from minisnn.atomic import remove_stale_temporaries, write_atomically


def listing(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("durable", [True, False])
def test_write_creates_parents_and_sets_the_mode(tmp_path, durable):
    path = write_atomically(tmp_path / "a" / "b.bin", lambda f: f.write(b"abc"), durable=durable)
    assert path == tmp_path / "a" / "b.bin" and path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0600
    write_atomically(path, lambda f: f.write(b"de"), mode=0o600)
    assert path.read_bytes() == b"de" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert listing(path.parent) == ["b.bin"]


@pytest.mark.parametrize("target", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch, target):
    path = write_atomically(tmp_path / "m.json", lambda f: f.write(b"old"))

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    def write(f):
        f.write(b"half")
        if target == "write":
            crash()

    if target != "write":
        monkeypatch.setattr(atomic.os, target, crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_atomically(path, write)
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and listing(tmp_path) == ["m.json"]


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path):
    stale = [tmp_path / ".checkpoint.npz.k3j_9xq2.tmp", tmp_path / ".metrics.json.abcdefgh.tmp"]
    keep = [tmp_path / "checkpoint.npz", tmp_path / "notes.tmp", tmp_path / ".hidden.tmp"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert listing(tmp_path) == sorted(p.name for p in keep)


def test_stale_temporaries_by_name_and_age(tmp_path):
    old = tmp_path / ".cache.npz.abcd1234.tmp"
    fresh = tmp_path / ".cache.npz.efgh5678.tmp"  # maybe being written right now
    other = tmp_path / ".other.npz.ijkl9012.tmp"
    for p in (old, fresh, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    for p in (old, other):
        os.utime(p, (hour_ago, hour_ago))
    assert remove_stale_temporaries(tmp_path, name="cache.npz", older_than=600) == [old]
    assert listing(tmp_path) == sorted(p.name for p in (fresh, other))


def test_the_temporary_of_a_killed_write_is_recognised(tmp_path):
    names = []
    write_atomically(tmp_path / "x.npz", lambda f: names.extend(p.name for p in tmp_path.iterdir()))
    left = tmp_path / names[0]  # what a write killed before its rename leaves
    left.write_bytes(b"partial")
    assert remove_stale_temporaries(tmp_path, name="y.npz") == []
    assert remove_stale_temporaries(tmp_path, name="x.npz") == [left]
