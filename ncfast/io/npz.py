"""``.npz`` archives (``np.savez`` / ``np.savez_compressed``): a zip of ``.npy`` members,
selected by name (``file.npz:features``, the member ``features.npy``).

A stored member (``np.savez``) is a Segment: its rows are read by byte range like a .npy
file. A compressed member (``np.savez_compressed``) is decompressed as a stream, chunk after
chunk; asking for earlier rows restarts the stream, so a pass reads it once.
"""

from __future__ import annotations

import threading
import zipfile
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .npy import nbytes, read_header
from .pt import data_offset
from .part import Part, element_size, open_regular, pick_entry, read_exactly, row_elements, unreadable
from .segment import Segment



def members(archive: zipfile.ZipFile) -> Dict[str, zipfile.ZipInfo]:
    """The .npy members by key (the name without .npy)."""
    return {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}


def npz_part(path: str, key: Optional[str]) -> Part:
    with open_regular(path) as f:
        try:
            archive = zipfile.ZipFile(f)
            found = members(archive)
            key = pick_entry(path, found, key, "member", LookupError)
            info = found[key]
            if info.flag_bits & 0x1:
                raise LookupError(f"{path}: member {key!r} is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                return _stored(path, f, key, info)
            with archive.open(info) as member:
                shape, dtype = read_header(member, f"{path}:{key}")
            return DeflatedMember(path, key, shape, dtype)
        except LookupError as err:
            raise ValueError(str(err)) from None
        except Exception as err:  # zipfile raises BadZipFile, NotImplementedError, struct.error, ...
            raise unreadable(path, ".npz archive", err) from None


def _stored(path: str, f, key: str, info: zipfile.ZipInfo) -> Segment:
    """A stored member's .npy header is read where its bytes lie in the archive."""
    start = data_offset(path, f, info)
    f.seek(start)
    shape, dtype = read_header(f, f"{path}:{key}")
    offset = f.tell()
    if offset + nbytes(shape, dtype) > start + info.compress_size:
        raise ValueError(f"{path}: member {key!r} is truncated (its header promises more data than it holds)")
    return Segment(path, offset, shape, dtype)


class DeflatedMember(Part):
    """A compressed member, decompressed as a stream; the open stream is kept between reads so
    consecutive row ranges decompress each byte once."""

    def __init__(self, path: str, key: str, shape: Tuple[int, ...], dtype: torch.dtype) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype
        self.row_bytes = row_elements(shape) * element_size(dtype)
        self._lock = threading.Lock()
        self._open: Optional[tuple] = None  # (file, archive, member, next row)

    def _close(self) -> None:
        if self._open is not None:
            for handle in reversed(self._open[:3]):
                handle.close()
            self._open = None

    def _rewind(self) -> None:
        self._close()
        f = open_regular(self.path)
        try:
            archive = zipfile.ZipFile(f)
            member = archive.open(members(archive)[self.key])
            read_header(member, f"{self.path}:{self.key}")
        except BaseException:
            f.close()
            raise
        self._open = (f, archive, member, 0)

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        with self._lock:
            try:
                self._read(out, start, stop)
            except Exception as err:
                self._close()
                raise unreadable(self.path, ".npz archive", err) from None

    def _read(self, out: Tensor, start: int, stop: int) -> None:
        if self._open is None or self._open[3] > start:
            self._rewind()
        f, archive, member, row = self._open
        skip = (start - row) * self.row_bytes
        while skip:  # rows before `start`: decompressed and dropped, in bounded pieces
            piece = member.read(min(skip, 1 << 22))
            if not piece:
                raise ValueError(f"{self.path}: member {self.key!r} is truncated")
            skip -= len(piece)
        want = (stop - start) * self.row_bytes
        view = memoryview(out.view(torch.uint8).reshape(-1).numpy())[:want]
        read_exactly(member, view, self.path, f"member {self.key!r}")
        self._open = (f, archive, member, stop)
        if stop == self.rows:
            self._close()  # a pass over many shards does not keep every archive open
