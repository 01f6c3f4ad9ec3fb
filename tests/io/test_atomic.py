"""Atomic writes: never through a planted link, the target's permission bits kept, nothing left
behind by a failed write, and the temporaries of a killed writer removed by the next write."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ncfast
from ncfast.io import atomic
from ncfast.io.atomic import atomic_file, atomic_path
from disk_faults import fill_disk


def small_stats():
    rng = np.random.default_rng(0)
    return ncfast.ClassStats(3, 4).update(rng.standard_normal((30, 4)), rng.integers(0, 3, 30))


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(folder, name):
    return sorted(p for p in os.listdir(folder) if p.startswith(name) and p != name)


def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out.safetensors"
    (tmp_path / f"out.safetensors.tmp-{os.getpid()}").symlink_to(victim)  # the name writers used to pick
    small_stats().save(out)
    assert victim.read_text() == "precious\n"
    assert ncfast.load_stats(out)[0].num_samples == 30


def test_a_link_at_the_chosen_temporary_name_is_never_written_through(tmp_path, monkeypatch):
    """Even a link at the exact name drawn is not opened: the file is created exclusively, and a
    name that exists already makes the writer draw another."""
    tokens = iter(["deadbeef", "cafef00d"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(tokens))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "scores.json"
    planted = tmp_path / f"scores.json.tmp-{os.getpid()}-{atomic._host_tag()}-deadbeef"
    planted.symlink_to(victim)
    with atomic_file(str(out), "w") as f:
        f.write("{}\n")
    assert victim.read_text() == "precious\n"
    assert out.read_text() == "{}\n"
    assert os.path.islink(planted)  # not ours: left alone


def test_a_temporary_swapped_for_a_link_while_written_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "plot.png"
    with pytest.raises(OSError, match="replaced while being written"):
        with atomic_path(str(out), suffix=".png") as tmp:
            os.remove(tmp)
            os.symlink(victim, tmp)
    assert not out.exists()
    assert leftovers(tmp_path, "plot.png") == []


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_the_target_keeps_its_permission_bits(tmp_path, suffix):
    out = tmp_path / f"secret{suffix}"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    small_stats().save(out)
    assert mode_of(out) == 0o600
    os.chmod(out, 0o640)
    small_stats().save(out)
    assert mode_of(out) == 0o640


def test_a_new_file_gets_the_umask_default(tmp_path):
    old = os.umask(0o027)
    try:
        small_stats().save(tmp_path / "new.safetensors")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "new.safetensors") == 0o640


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("previous\n")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(str(out), "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert out.read_text() == "previous\n"
    assert leftovers(tmp_path, "out.json") == []


def test_a_full_disk_names_the_target_and_leaves_nothing(tmp_path, monkeypatch):
    """torch.save turns a failed write into an unrelated RuntimeError; the caller gets the
    OSError (ENOSPC) with the file's name instead."""
    fill_disk(monkeypatch, room=256)
    for name in ("full.pt", "full.safetensors"):
        with pytest.raises(OSError) as caught:
            small_stats().save(tmp_path / name)
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.filename == str(tmp_path / name)
        assert os.listdir(tmp_path) == []


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import ncfast
    from ncfast.io import atomic
    out = sys.argv[1]
    with atomic.atomic_file(out) as f:
        f.write(b"half of a file")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "stats.safetensors"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    left = leftovers(tmp_path, "stats.safetensors")
    assert len(left) == 1 and ".tmp-" in left[0]
    # a writer that still runs keeps its temporary
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f"stats.safetensors.tmp-{alive.pid}-{atomic._host_tag()}-0123abcd"
        theirs.write_bytes(b"in progress")
        small_stats().save(out)
        assert leftovers(tmp_path, "stats.safetensors") == [theirs.name]
    finally:
        alive.kill()
        alive.wait()
    assert ncfast.load_stats(out)[0].num_samples == 30


def test_an_output_that_is_a_folder_is_refused_before_writing(tmp_path):
    (tmp_path / "out.pt").mkdir()
    with pytest.raises(IsADirectoryError, match="out.pt is a folder"):
        atomic.check_writable(str(tmp_path / "out.pt"), "-o")
    with pytest.raises(IsADirectoryError):
        small_stats().save(tmp_path / "out.pt")
    assert (tmp_path / "out.pt").is_dir()
