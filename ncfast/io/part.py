"""The reader interface. A :class:`Part` is one array inside one file: it knows its shape and
dtype without reading any data, and fills a caller's buffer with a row range. Every format
module (npy, npz, pt, safetensors, hdf5, arrow, bigann, text) turns a file into Parts;
:class:`ncfast.io.ArraySource` concatenates them (shards) and the stream reads them chunk by
chunk, so memory is bounded by the chunk whatever the format.
"""

from __future__ import annotations

import importlib
import os
import stat
from typing import Any, BinaryIO, Mapping, Optional, Tuple, Type

import torch
from torch import Tensor


class Part:
    """Rows of one array in one file.

    Attributes
    ----------
    path : str
        The file the rows come from (for messages and checkpoint fingerprints).
    shape : tuple of int
        (rows, *row_shape).
    dtype : torch.dtype
        The dtype :meth:`read_into` writes.
    """

    path: str
    shape: Tuple[int, ...]
    dtype: torch.dtype

    @property
    def rows(self) -> int:
        return self.shape[0]

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        """Rows [start, stop) into `out`, a contiguous tensor of (stop - start, *shape[1:])
        elements of `dtype`. Raises ValueError naming the file when the data is not there."""
        raise NotImplementedError

    def fingerprint(self) -> list:
        """What identifies the data for a checkpoint's resume: the file's path, size and
        modification time."""
        st = os.stat(self.path)
        return [(os.path.abspath(self.path), st.st_size, st.st_mtime_ns)]


def pick_entry(path: str, entries: Mapping[str, Any], key: Optional[str], what: str,
               error: Type[Exception] = ValueError) -> str:
    """The name of the entry a FILE:KEY spec asks for in a file of named arrays: `key`, or the
    only entry when it is None; `error` naming the entries otherwise."""
    if key is None:
        if len(entries) != 1:
            raise error(f"{path}: holds {sorted(entries)}; name one as {path}:NAME")
        return next(iter(entries))
    if key not in entries:
        raise error(f"{path}: has no {what} {key!r} (it holds {sorted(entries)})")
    return key


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def row_elements(shape: Tuple[int, ...]) -> int:
    n = 1
    for s in shape[1:]:
        n *= int(s)
    return n


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def not_regular(path: str, mode: int) -> ValueError:
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    return ValueError(f"{path}: is {kind}, not a regular file; ncfast reads files (save the data to a file first)")


def open_regular(path: str) -> BinaryIO:
    """Opens `path` for reading without ever blocking: a FIFO, socket or device is refused at
    once (opened non-blocking, checked with fstat) instead of waiting for a writer."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str) -> None:
    """Raises unless `path` is a regular file (for libraries that open the file themselves)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise not_regular(path, mode)


def read_exactly(f: BinaryIO, view: memoryview, path: str, what: str) -> None:
    """Fills `view` from `f`'s position; ValueError naming the file when it ends first."""
    got, want = 0, len(view)
    while got < want:
        n = f.readinto(view[got:])
        if not n:
            raise ValueError(f"{path}: truncated ({what})")
        got += n


def optional(module: str, extra: str, what: str) -> Any:
    """Imports an optional dependency, or says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs the {module.split('.')[0]} package: pip install 'ncfast[{extra}]'") from None


def reason(err: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def unreadable(path: str, what: str, err: Exception) -> ValueError:
    """A library's failure on a malformed file as one ValueError naming the file; errors that
    already name it (ncfast's own checks) pass through unchanged."""
    if isinstance(err, ValueError) and str(err).startswith(path):
        return err
    return ValueError(f"{path}: not a readable {what} ({reason(err)})")
