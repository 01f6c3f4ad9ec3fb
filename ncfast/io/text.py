"""Labels as text: a ``.txt`` or ``.csv`` file of one integer per line (a first line that is a
column name, such as ``label``, is a header). Handed out as (rows,) int64.

Opening the file counts its lines (no parsing) and keeps the byte offset of every 1 MiB block,
so memory stays bounded however many labels there are; reading parses the blocks a row
range covers, the last one kept for the next read. A bad line is named by its number.
"""

from __future__ import annotations

import bisect
import io
import os
import re
import threading
import warnings
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .part import Part, open_regular

SUFFIXES = (".txt", ".csv")
BLOCK = 1 << 20
_HEADER = re.compile(rb'^\s*"?[A-Za-z_][\w .\-]*"?\s*$')


def text_part(path: str, key: Optional[str]) -> Part:
    if key is not None:
        raise ValueError(f"{path}: a labels text file holds one column; there is nothing to select with :{key}")
    return TextLabels(path)


class TextLabels(Part):
    def __init__(self, path: str) -> None:
        self.path, self.dtype = path, torch.int64
        self._lock = threading.Lock()
        self._cached: Optional[Tuple[int, np.ndarray]] = None
        self._header = 0
        self._rows: List[int] = [0]  # first row of each block
        self._offsets: List[int] = []  # byte offset of each block
        self._scan()

    def _scan(self) -> None:
        size = os.path.getsize(self.path)
        with open_regular(self.path) as f:
            first = f.read(min(size, 4096)).split(b"\n", 1)[0]
            if first and _HEADER.match(first):
                self._header = 1
            pos = len(first) + 1 if self._header else 0
            f.seek(pos)
            while pos < size:
                data = f.read(BLOCK)
                cut = data.rfind(b"\n") + 1 if len(data) == BLOCK and pos + len(data) < size else len(data)
                if cut == 0:  # a single line longer than a block: no labels file has one
                    raise ValueError(f"{self.path}: line {self._rows[-1] + self._header + 1} is over {BLOCK} bytes; "
                                     "a labels file holds one integer per line")
                block = data[:cut]
                lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                if pos + cut >= size:
                    lines -= _trailing_blank_lines(block)
                self._offsets.append(pos)
                self._rows.append(self._rows[-1] + lines)
                pos += cut
                f.seek(pos)
        self._end = size
        self.shape = (self._rows[-1],)

    def _block(self, index: int) -> np.ndarray:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        begin = self._offsets[index]
        end = self._offsets[index + 1] if index + 1 < len(self._offsets) else self._end
        with open_regular(self.path) as f:
            f.seek(begin)
            data = f.read(end - begin)
        want = self._rows[index + 1] - self._rows[index]
        values = self._parse(data, self._rows[index] + self._header + 1, want)
        self._cached = (index, values)
        return values

    def _parse(self, data: bytes, first_line: int, want: int) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data"
                values = np.loadtxt(io.BytesIO(data), dtype=np.int64, delimiter=",", comments=None, ndmin=1)
        except ValueError:
            values = None
        if values is not None and values.ndim == 1 and len(values) == want:
            return values
        for number, line in enumerate(data.split(b"\n")[:want], start=first_line):
            text = line.strip()
            if not text:
                raise ValueError(f"{self.path}: line {number} is empty (a labels file holds one integer per line)")
            if b"," in text:
                raise ValueError(f"{self.path}: line {number} has more than one column ({text[:40]!r}); a labels file "
                                 "holds one integer per line")
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"{self.path}: line {number}: {text[:40]!r} is not an integer label") from None
            if not -(1 << 63) <= value < (1 << 63):
                raise ValueError(f"{self.path}: line {number}: {value} does not fit in int64")
        raise ValueError(f"{self.path}: changed while it was read")

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        dest = out.view(-1)[: stop - start].numpy()
        with self._lock:
            index = bisect.bisect_right(self._rows, start) - 1
            row = start
            while row < stop:
                values = self._block(index)
                base = self._rows[index]
                take = min(stop, self._rows[index + 1]) - row
                dest[row - start: row - start + take] = values[row - base: row - base + take]
                row += take
                index += 1


def _trailing_blank_lines(block: bytes) -> int:
    """Blank lines at the end of the file (after its last label) are not rows."""
    stripped = block.rstrip()
    tail = block[len(stripped):]
    return tail.count(b"\n") - (1 if stripped and tail.count(b"\n") else 0)
