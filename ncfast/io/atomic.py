"""Atomic file replacement: an output or checkpoint is either the old file or the complete new
one, never half-written, whatever kills the process."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


def check_writable(path: str, what: str) -> None:
    """Raises before any work if `path` cannot be created (its folder is missing or read-only)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: folder {folder} does not exist (for {path})")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{what}: folder {folder} is not writable (for {path})")


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary name next to `path` to write to; on success the file is synced to
    disk and renamed over `path`, on failure it is removed. `suffix` keeps an extension that a
    writer uses to pick its format (e.g. ".png")."""
    path = os.fspath(path)
    check_writable(path, "output")
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
