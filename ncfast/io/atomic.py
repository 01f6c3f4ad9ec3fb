"""Atomic file replacement: an output or checkpoint is either the old file or the complete new
one, never half-written, whatever kills the process.

The new contents go to a temporary file created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``:
never an existing file, never through a link) beside the target, under an unguessable name
``<target>.tmp-<pid>-<host>-<random>``; it is synced, given the target's permission bits (or
the umask's default for a new file) and renamed over the target. A temporary left by a writer
that was killed is removed by the next write to the same target, once its process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
from typing import IO, Iterator, Tuple

_TEMPORARY = re.compile(r"\.tmp-(\d+)-([0-9a-f]{8})-[0-9a-f]{8}")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def check_writable(path: str, what: str) -> None:
    """Raises before any work if `path` cannot be created (it is a folder, or its folder is
    missing or read-only)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path} is a folder; give the name of a file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what}: folder {folder} does not exist (for {path})")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{what}: folder {folder} is not writable (for {path})")


def _host_tag() -> str:
    """Eight hex digits naming this machine: a process id means something only on its own host."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False  # alive (another user's), or not a pid this system can ask about
    return False


def remove_stale_temporaries(path: str) -> None:
    """Removes the temporaries of `path` left by writers on this host that no longer run."""
    folder, base = os.path.split(os.path.abspath(path))
    host, me = _host_tag(), os.getpid()
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(base):
            continue
        match = _TEMPORARY.match(name, len(base))
        if not match or match.group(2) != host or int(match.group(1)) == me:
            continue
        if _process_gone(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))  # unlink removes a link itself, never its target


def _keep_mode(fd: int, path: str) -> None:
    """Gives the new file the old file's permission bits (a new file keeps the mode os.open gave
    it: 0666 less the umask)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    os.fchmod(fd, mode)


def _create_temporary(path: str, suffix: str) -> Tuple[int, str]:
    path = os.fspath(path)
    check_writable(path, "output")
    remove_stale_temporaries(path)
    prefix = f"{os.path.abspath(path)}.tmp-{os.getpid()}-{_host_tag()}-"
    for _ in range(100):
        tmp = f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, _CREATE, 0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "could not create a temporary file", prefix)


def _commit(tmp: str, path: str) -> None:
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # the rename itself reaches the disk (not every filesystem can)
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _discard(tmp: str, err: BaseException, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    if isinstance(err, OSError) and not err.filename:
        err.filename = path  # "No space left on device" says for which file


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb") -> Iterator[IO]:
    """Yields a file object open on a new temporary beside `path`; on success it is synced and
    renamed over `path`, on failure removed. Prefer this to :func:`atomic_path`: the writer never
    opens a name."""
    fd, tmp = _create_temporary(path, "")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            _keep_mode(f.fileno(), path)
        _commit(tmp, path)
    except BaseException as err:
        _discard(tmp, err, os.fspath(path))
        raise


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields the name of a new temporary file beside `path`, for writers that only take a name;
    on success it is synced and renamed over `path`, on failure removed. `suffix` keeps an
    extension that a writer uses to pick its format (e.g. ".png"). The name must still be the
    file created for it when the writer is done (not a link put there meanwhile)."""
    fd, tmp = _create_temporary(path, suffix)
    created = os.fstat(fd)
    os.close(fd)
    try:
        yield tmp
        now = os.lstat(tmp)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (created.st_dev, created.st_ino):
            raise OSError(errno.EEXIST, "the temporary file was replaced while being written", tmp)
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
            _keep_mode(fd, path)
        finally:
            os.close(fd)
        _commit(tmp, path)
    except BaseException as err:
        _discard(tmp, err, os.fspath(path))
        raise
