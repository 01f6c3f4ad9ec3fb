"""The big-ann-benchmarks binaries (Deep1B, BIGANN, SPACEV, ...), which carry no magic bytes
and are recognised by their extension, then checked against their own structure:

- ``.fbin`` / ``.u8bin`` / ``.i8bin`` / ``.ibin``: an 8-byte header (rows n, dimension d, both
  uint32 little-endian), then n x d float32 / uint8 / int8 / int32 values; the file is exactly
  8 + n d itemsize bytes.
- ``.fvecs`` / ``.bvecs`` / ``.ivecs`` (TEXMEX): every row is an int32 d, then d float32 /
  uint8 / int32 values.

uint8 and int8 vectors are handed out as float32 (every value exactly). An ``.ibin`` or
``.ivecs`` with d = 1 is a labels file: (n,) int32.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .part import Part, open_regular, read_exactly
from .segment import Segment

BIN = {".fbin": torch.float32, ".u8bin": torch.uint8, ".i8bin": torch.int8, ".ibin": torch.int32}
VECS = {".fvecs": torch.float32, ".bvecs": torch.uint8, ".ivecs": torch.int32}
_NUMPY = {torch.float32: np.float32, torch.uint8: np.uint8, torch.int8: np.int8, torch.int32: np.int32}


def _handed_out(stored: torch.dtype) -> torch.dtype:
    return torch.float32 if stored in (torch.uint8, torch.int8) else stored


def _shape(n: int, d: int, stored: torch.dtype) -> tuple:
    return (n,) if d == 1 and stored == torch.int32 else (n, d)


def bin_part(path: str, suffix: str, key: Optional[str]) -> Part:
    _no_key(path, key)
    stored = BIN[suffix]
    size = os.path.getsize(path)
    with open_regular(path) as f:
        head = bytearray(8)
        if size < 8:
            raise ValueError(f"{path}: not a {suffix} file (shorter than its 8-byte header)")
        read_exactly(f, memoryview(head), path, "header")
    n, d = struct.unpack("<II", head)
    expected = 8 + n * d * torch.empty((), dtype=stored).element_size()
    if size != expected:
        state = "truncated" if size < expected else f"{size - expected} bytes longer than"
        raise ValueError(f"{path}: {state} its header says ({n} rows x {d} = {expected} bytes, the file has {size}); "
                         f"a {suffix} file is n, d as uint32 then the rows")
    if d == 0 and n:
        raise ValueError(f"{path}: its header says {n} rows of dimension 0")
    return Segment(path, 8, _shape(n, d, stored), _handed_out(stored), stored=stored)


def vecs_part(path: str, suffix: str, key: Optional[str]) -> Part:
    _no_key(path, key)
    stored = VECS[suffix]
    size = os.path.getsize(path)
    if size == 0:
        return Vecs(path, 0, 1, stored)
    with open_regular(path) as f:
        head = bytearray(4)
        read_exactly(f, memoryview(head), path, "first row")
    (d,) = struct.unpack("<i", head)
    pitch = 4 + d * torch.empty((), dtype=stored).element_size()
    if d <= 0 or size % pitch:
        raise ValueError(f"{path}: not a {suffix} file (its first row says dimension {d}, which does not divide "
                         f"its {size} bytes into rows of 4 + d values)")
    part = Vecs(path, size // pitch, d, stored)
    part.check_row(part.rows - 1)
    return part


def _no_key(path: str, key: Optional[str]) -> None:
    if key is not None:
        raise ValueError(f"{path}: holds one array; there is nothing to select with :{key}")


class Vecs(Part):
    """Rows with a 4-byte dimension before each: read whole into a scratch buffer (kept and
    reused), every row's dimension checked, the values copied out."""

    def __init__(self, path: str, rows: int, d: int, stored: torch.dtype) -> None:
        self.path, self.d, self.stored = path, d, stored
        self.shape, self.dtype = _shape(rows, d, stored), _handed_out(stored)
        self._row = np.dtype([("d", "<i4"), ("v", _NUMPY[stored], (d,))])
        self._scratch: Optional[np.ndarray] = None
        self._lock = threading.Lock()

    def check_row(self, row: int) -> None:
        with open_regular(self.path) as f:
            f.seek(row * self._row.itemsize)
            head = bytearray(4)
            read_exactly(f, memoryview(head), self.path, f"row {row}")
        if struct.unpack("<i", head)[0] != self.d:
            raise ValueError(f"{self.path}: row {row} says dimension {struct.unpack('<i', head)[0]}, the first "
                             f"row {self.d}")

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        n = stop - start
        if not n:
            return
        with self._lock:
            if self._scratch is None or len(self._scratch) < n:
                self._scratch = np.empty(n, self._row)
            raw = self._scratch[:n]
            with open_regular(self.path) as f:
                f.seek(start * self._row.itemsize)
                read_exactly(f, memoryview(raw.view(np.uint8)), self.path, f"expected {self.rows} rows")
            bad = np.flatnonzero(raw["d"] != self.d)
            if bad.size:
                row = start + int(bad[0])
                raise ValueError(f"{self.path}: row {row} says dimension {int(raw['d'][bad[0]])}, the first row "
                                 f"{self.d}")
            dest = out.view(-1)[: n * self.d].numpy().reshape(n, self.d)
            np.copyto(dest, raw["v"], casting="safe")
