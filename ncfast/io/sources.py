"""Sources: a 2-D (features) or 1-D (labels) array that hands out row ranges.

- ``.npy`` files, read by byte range with plain file reads (no memory map, so resident memory
  stays bounded by the chunk size however large the file);
- a folder or glob of ``.npy`` shards, concatenated along rows in sorted name order;
- ``.safetensors`` files (``file.safetensors`` with one tensor, or ``file.safetensors:name``);
- in-memory NumPy arrays and torch tensors.
bfloat16 dumps come as safetensors (NumPy has no bfloat16 dtype).
"""

from __future__ import annotations

import glob
import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .._inputs import to_tensor
from .npy import npy_segment
from .safetensors import safetensors_segment
from .segment import Segment

PathLike = Union[str, os.PathLike]


class ArraySource:
    """Rows of a file, a set of shards, or an in-memory array, read chunk by chunk."""

    def __init__(self, segments: Sequence[Segment] = (), array: Optional[Tensor] = None, name: str = "",
                 origin: str = "") -> None:
        self.name = name
        self.origin = origin  # the path or pattern it was opened from ("" for an array)
        self._array = array
        self._segments = list(segments)
        if array is not None:
            self.shape, self.dtype = tuple(array.shape), array.dtype
        else:
            tails = {s.shape[1:] for s in self._segments}
            dtypes = {s.dtype for s in self._segments}
            if len(tails) != 1 or len(dtypes) != 1:
                raise ValueError(f"{name}: shards disagree in shape or dtype ({sorted(map(str, tails))}, {sorted(map(str, dtypes))})")
            self.shape = (sum(s.rows for s in self._segments),) + tails.pop()
            self.dtype = dtypes.pop()
        self._starts = np.cumsum([0] + [s.rows for s in self._segments])

    @property
    def in_memory(self) -> bool:
        return self._array is not None

    @property
    def rows(self) -> int:
        return self.shape[0]

    def fingerprint(self) -> list:
        """Identifies the data for checkpoint resume: paths, sizes, modification times."""
        if self._array is not None:
            return [("array", list(self.shape), str(self.dtype))]
        out = []
        for s in self._segments:
            st = os.stat(s.path)
            out.append((os.path.abspath(s.path), st.st_size, st.st_mtime_ns))
        return out

    def read(self, start: int, stop: int, out: Optional[Tensor] = None) -> Tensor:
        """Rows [start, stop) as a tensor (into `out` when given, which must be large enough)."""
        if self._array is not None:
            return self._array[start:stop]
        shape = (stop - start,) + self.shape[1:]
        out = torch.empty(shape, dtype=self.dtype) if out is None else out.view(-1)[: int(np.prod(shape))].view(shape)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        row = start
        while row < stop:
            seg = self._segments[first]
            seg_start = int(self._starts[first])
            take = min(stop, seg_start + seg.rows) - row
            seg.read_into(out[row - start : row - start + take], row - seg_start, row - seg_start + take)
            row += take
            first += 1
        return out


def open_array(spec: Any, name: str = "features") -> ArraySource:
    """An ArraySource for a path (.npy, .safetensors[:name], folder, glob) or an array."""
    if isinstance(spec, (np.ndarray, Tensor)) or not isinstance(spec, (str, os.PathLike)):
        return ArraySource(array=to_tensor(spec, name), name=name)
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*.npy")))
        if not paths:
            raise FileNotFoundError(f"{name}: folder {spec} holds no .npy files")
    elif any(ch in spec for ch in "*?["):
        paths = sorted(glob.glob(spec))
        if not paths:
            raise FileNotFoundError(f"{name}: no file matches {spec}")
    else:
        base = spec.split(":")[0] if ".safetensors:" in spec else spec
        if not os.path.exists(base):
            raise FileNotFoundError(f"{name}: no such file: {base}")
        paths = [spec]
    segments = [safetensors_segment(p) if ".safetensors" in p else npy_segment(p) for p in paths]
    return ArraySource(segments, name=name, origin=spec)


def check_pair(features: ArraySource, labels: ArraySource) -> None:
    if len(features.shape) != 2:
        raise ValueError(f"features: expected a 2-D (rows, dim) array, got shape {features.shape}")
    if len(labels.shape) != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    if labels.rows != features.rows:
        raise ValueError(f"labels: {labels.rows} labels for {features.rows} feature rows")
    if labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"labels: dtype {_dtype_name(labels.dtype)}{_where(labels)} is not int32/int64 "
                         "(convert it first, e.g. y.astype(np.int64))")
    if features.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"features: dtype {_dtype_name(features.dtype)}{_where(features)} is not "
                         "float32/float64/float16/bfloat16 (convert it first, e.g. x.astype(np.float32))")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _where(source: ArraySource) -> str:
    return f" in {source.origin}" if source.origin else ""


def default_chunk_rows(dim: int, dtype: torch.dtype, budget_bytes: int = 64 << 20) -> int:
    return max(1, budget_bytes // (dim * torch.empty((), dtype=dtype).element_size()))
