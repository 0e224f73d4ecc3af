"""dataset/staging.py: staging folders named after their process, and which leftovers a later run removes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataset.staging import (
    STALE_UNOWNED_S,
    find_leftovers,
    host_tag,
    make_staging_dir,
    process_alive,
    remove_stale,
)


def ended_pid() -> int:
    """The id of a process that has run and ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child.pid
    child.kill()
    child.wait()


def leftover(parent: Path, name: str, age_s: float = 0.0) -> Path:
    """A staging folder `name` with a file inside, last changed `age_s` seconds ago."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "shard_0001.hdf5").write_bytes(b"partial")
    then = time.time() - age_s
    for path in (folder / "shard_0001.hdf5", folder):
        os.utime(path, (then, then))
    return folder


def test_staging_dir_is_named_after_this_process_and_gets_the_usual_permissions(tmp_path):
    target = tmp_path / "out" / "train"
    path = make_staging_dir(target)
    assert path.is_dir() and path.parent == target.parent and not any(path.iterdir())
    assert path.name.startswith(f".train.{host_tag()}-pid{os.getpid()}.") and path.name.endswith(".tmp")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask
    assert make_staging_dir(target) != path  # each call makes a fresh one
    assert find_leftovers(target) and all(item.pid == os.getpid() for item in find_leftovers(target))
    assert not target.exists()


def test_find_leftovers_matches_only_this_targets_names(tmp_path):
    names = [".train.h-pid12.ab_c9.tmp", ".train.my-host-pid7.x1.tmp", ".train.k2j4h5g6.tmp"]
    for name in names + [".trainx.k2j4h5g6.tmp", ".val.h-pid12.ab.tmp", ".train.h-pid12.ab.tmp.old", "train"]:
        (tmp_path / name).mkdir()
    found = find_leftovers(tmp_path / "train")
    assert [item.path.name for item in found] == sorted(names)
    by_name = {item.path.name: (item.host, item.pid) for item in found}
    assert by_name == {names[0]: ("h", 12), names[1]: ("my-host", 7), names[2]: (None, None)}
    assert find_leftovers(tmp_path / "missing" / "train") == []


def test_process_alive(live_pid):
    assert process_alive(os.getpid()) and process_alive(live_pid)
    assert not process_alive(ended_pid())
    assert not process_alive(0)


def test_remove_stale_removes_only_leftovers_nobody_runs(tmp_path, live_pid):
    here = host_tag()
    dead = leftover(tmp_path, f".train.{here}-pid{ended_pid()}.a1.tmp")
    running = leftover(tmp_path, f".train.{here}-pid{live_pid}.b2.tmp")
    mine = leftover(tmp_path, f".train.{here}-pid{os.getpid()}.c3.tmp")
    elsewhere = leftover(tmp_path, f".train.not-{here}-pid{ended_pid()}.d4.tmp")
    old_unowned = leftover(tmp_path, ".train.e5e5e5e5.tmp", age_s=STALE_UNOWNED_S + 60)
    new_unowned = leftover(tmp_path, ".train.f6f6f6f6.tmp", age_s=60)
    other_target = leftover(tmp_path, f".val.{here}-pid{ended_pid()}.g7.tmp")
    lines = []
    removed = remove_stale(tmp_path / "train", lines.append)
    assert sorted(removed) == sorted([dead, old_unowned])
    assert not dead.exists() and not old_unowned.exists()
    assert all(p.is_dir() for p in (running, mine, elsewhere, new_unowned, other_target))
    text = "\n".join(lines)
    assert f"removed {dead}" in text and "has ended" in text and f"removed {old_unowned}" in text
    assert f"kept {running}" in text and f"kept {mine}" in text and f"kept {elsewhere}" in text
    assert f"kept {new_unowned}" in text and str(other_target) not in text
    assert remove_stale(tmp_path / "train", lines.append) == []  # nothing left to remove


def test_unowned_leftover_counts_its_newest_file(tmp_path):
    folder = leftover(tmp_path, ".train.a1b2c3d4.tmp", age_s=STALE_UNOWNED_S + 60)
    (folder / "shard_0001.hdf5").write_bytes(b"still being written")  # its folder looks old, a file inside is new
    assert remove_stale(tmp_path / "train", lambda line: None) == [] and folder.is_dir()
    assert remove_stale(tmp_path / "train", lambda line: None, now=time.time() + STALE_UNOWNED_S + 1) == [folder]
    assert not folder.exists()
