"""HDF5 files (h5py, the ``ncfast[hdf5]`` extra): a dataset selected by its path
(``file.h5:train``, ``file.h5:group/features``; the only dataset when none is named).

A contiguous, uncompressed dataset is a Segment (its byte offset comes from the file, and
rows are read by plain positioned reads). A chunked or compressed one is read through h5py
with a chunk cache that holds one full row of HDF5 chunks, so that a read boundary falling
inside a chunk does not decompress it twice: each chunk is read once per pass.
"""

from __future__ import annotations

import threading
from typing import Any, List, Optional

import numpy as np
import torch
from torch import Tensor

from .part import Part, element_size, optional, reason, row_elements, unreadable
from .segment import Segment

MAGIC = b"\x89HDF\r\n\x1a\n"
CACHE_CAP = 256 << 20


def has_magic(head_at) -> bool:
    """HDF5's signature sits at byte 0 or, after a user block, at 512, 1024, 2048, ..."""
    return any(head_at(offset) == MAGIC for offset in [0] + [512 << k for k in range(8)])


def _h5py():
    return optional("h5py", "hdf5", "reading HDF5 files")


def _datasets(f) -> List[str]:
    h5py = _h5py()
    names: List[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _torch_dtype(path: str, key: str, dtype: np.dtype) -> torch.dtype:
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype
    except (TypeError, ValueError):
        raise ValueError(f"{path}: dataset {key!r} has dtype {dtype}, which ncfast cannot read; store float or "
                         "integer data") from None


def hdf5_part(path: str, key: Optional[str]) -> Part:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if key is None:
                names = _datasets(f)
                if len(names) != 1:
                    raise ValueError(f"{path}: holds the datasets {names[:20]}; name one as {path}:NAME")
                key = names[0]
            obj = f.get(key)
            if not isinstance(obj, h5py.Dataset):
                what = "a group" if obj is not None else "nothing"
                raise ValueError(f"{path}: {key!r} is {what}, not a dataset (it holds {_datasets(f)[:20]})")
            shape, np_dtype = tuple(int(s) for s in obj.shape), obj.dtype
            if not shape:
                raise ValueError(f"{path}: dataset {key!r} is a scalar, not rows")
            dtype = _torch_dtype(path, key, np_dtype)
            offset = obj.id.get_offset() if obj.chunks is None and not obj.compression else None
            native = np_dtype.byteorder in ("=", "|", "<")
            if offset is not None and native and not obj.external and shape[0] * row_elements(shape):
                return Segment(path, int(offset), shape, dtype)
            chunk_rows = obj.chunks[0] if obj.chunks else 1
    except Exception as err:  # h5py raises OSError, KeyError, RuntimeError, ... on a damaged file
        raise unreadable(path, "HDF5 file", err) from None
    return H5Dataset(path, key, shape, dtype, chunk_rows)


class H5Dataset(Part):
    """A chunked or compressed dataset, read with ``read_direct`` into the caller's buffer."""

    def __init__(self, path: str, key: str, shape, dtype: torch.dtype, chunk_rows: int) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype
        row_bytes = row_elements(shape) * element_size(dtype)
        self._cache = int(min(CACHE_CAP, max(1 << 20, 2 * chunk_rows * row_bytes)))
        self._file: Any = None
        self._lock = threading.Lock()

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        h5py = _h5py()
        n = stop - start
        dest = out.view(-1)[: n * row_elements(self.shape)].numpy().reshape((n,) + self.shape[1:])
        with self._lock:
            try:
                if self._file is None:
                    self._file = h5py.File(self.path, "r", rdcc_nbytes=self._cache, rdcc_nslots=100_003)
                self._file[self.key].read_direct(dest, np.s_[start:stop], np.s_[0:n])
            except Exception as err:
                raise ValueError(f"{self.path}: dataset {self.key!r} cannot be read at rows [{start}, {stop}) "
                                 f"({reason(err)})") from None
            if stop == self.rows:
                self._file.close()  # a pass over many shards does not keep every file open
                self._file = None
