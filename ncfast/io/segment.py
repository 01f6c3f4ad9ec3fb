"""A run of rows stored contiguously in a file, read by byte range into a caller's buffer.

Most formats (.npy, safetensors, .pt, stored .npz members, contiguous HDF5 datasets, .fbin)
describe their data as a segment; plain positioned reads (no memory map) keep resident
memory bounded by the chunk, however large the file.
"""

from __future__ import annotations

import threading
from typing import Optional, Tuple

import torch
from torch import Tensor

from .part import Part, element_size, open_regular, read_exactly, row_elements


class Segment(Part):
    """One contiguous C-order array inside a file.

    Parameters
    ----------
    path, offset
        The file and the byte offset of row 0.
    shape : tuple of int
        (rows, *row_shape).
    dtype : torch.dtype
        The dtype handed out.
    stored : torch.dtype, optional
        The dtype on disk when it differs (uint8/int8 vectors handed out as float32, exactly).
    """

    def __init__(self, path: str, offset: int, shape: Tuple[int, ...], dtype: torch.dtype,
                 stored: Optional[torch.dtype] = None) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, tuple(shape), dtype
        self.stored = stored if stored is not None else dtype
        self.row_bytes = row_elements(self.shape) * element_size(self.stored)
        self.nbytes = self.rows * self.row_bytes
        self._scratch: Optional[Tensor] = None
        self._lock = threading.Lock()

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        if self.stored == self.dtype:
            self._read_raw(out, start, stop)
            return
        with self._lock:  # one scratch buffer for the stored bytes, reused chunk after chunk
            n = (stop - start) * row_elements(self.shape)
            if self._scratch is None or self._scratch.numel() < n:
                self._scratch = torch.empty(n, dtype=self.stored)
            raw = self._scratch[:n]
            self._read_raw(raw, start, stop)
            out.view(-1)[:n].copy_(raw)

    def _read_raw(self, out: Tensor, start: int, stop: int) -> None:
        want = (stop - start) * self.row_bytes
        if not want:
            return
        view = memoryview(out.view(torch.uint8).reshape(-1).numpy())[:want]
        with open_regular(self.path) as f:
            f.seek(self.offset + start * self.row_bytes)
            read_exactly(f, view, self.path, f"expected {self.rows} rows")
