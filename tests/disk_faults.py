"""A full disk for tests: ncfast.io.atomic's file writes fail with ENOSPC after `room` bytes."""

from __future__ import annotations

import errno
import os

from ncfast.io import atomic


class FullDisk:
    """A writable file that takes `room` bytes, then raises OSError(ENOSPC)."""

    def __init__(self, f, room: int = 0) -> None:
        self._f, self._room = f, room

    def write(self, data):
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fill_disk(monkeypatch, room: int = 0) -> None:
    """Makes every file atomic writes open for writing a FullDisk (reads are untouched)."""
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):  # os.fdopen is every module's: only writes fail
        f = real_fdopen(fd, mode, *args, **kwargs)
        return FullDisk(f, room) if "w" in mode else f

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
