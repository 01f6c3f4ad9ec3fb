"""A run of rows stored contiguously in a file, read by byte range into a caller's buffer.

Every file reader describes its data as one or more segments; plain positioned reads (no
memory map) keep resident memory bounded by the chunk, however large the file.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor


class Segment:
    """One contiguous C-order row-major array inside a file."""

    def __init__(self, path: str, offset: int, shape: Tuple[int, ...], dtype: torch.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype
        self.rows = shape[0]
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        """Rows [start, stop) into `out` (a contiguous tensor of that many rows)."""
        want = (stop - start) * self.row_bytes
        view = memoryview(out.view(torch.uint8).reshape(-1).numpy())[:want]
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset + start * self.row_bytes)
            got = 0
            while got < want:
                n = f.readinto(view[got:])
                if not n:
                    raise ValueError(f"{self.path}: truncated (expected {self.rows} rows)")
                got += n
