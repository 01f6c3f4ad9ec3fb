"""Readers for feature dumps and their labels, streamed in row chunks with bounded memory.

A *source* is a 2-D (features) or 1-D (labels) array that can hand out row ranges:
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
import queue
import threading
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from . import _safetensors
from ._inputs import to_tensor

PathLike = Union[str, os.PathLike]


class _Segment:
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


def _npy_segment(path: str) -> _Segment:
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in reader:
                raise ValueError(f"{path}: unsupported .npy version {version}")
            shape, fortran, dtype = reader[version](f)
            offset = f.tell()
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from err
    if fortran and len(shape) > 1:
        raise ValueError(f"{path}: column-major (Fortran-order) .npy is not supported; save it in C order")
    if dtype.byteorder == ">":
        raise ValueError(f"{path}: big-endian data is not supported")
    try:
        torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except TypeError as err:
        raise ValueError(f"{path}: dtype {dtype} cannot be read") from err
    segment = _Segment(path, offset, tuple(shape), torch_dtype)
    expected = offset + segment.rows * segment.row_bytes
    if os.path.getsize(path) < expected:
        raise ValueError(f"{path}: truncated ({os.path.getsize(path)} bytes, the header promises {expected})")
    return segment


def _safetensors_segment(spec: str) -> _Segment:
    if os.path.exists(spec):
        path, name = spec, ""
    else:  # file.safetensors:NAME
        path, _, name = spec.rpartition(":")
    entries, _ = _safetensors.read_header(path)
    if not name:
        if len(entries) != 1:
            raise ValueError(f"{path}: holds {sorted(entries)}; name one as {path}:NAME")
        name = next(iter(entries))
    if name not in entries:
        raise ValueError(f"{path}: has no tensor {name!r} (it holds {sorted(entries)})")
    e = entries[name]
    return _Segment(path, e.offset, e.shape, e.dtype)


class ArraySource:
    """Rows of a file, a set of shards, or an in-memory array, read chunk by chunk."""

    def __init__(self, segments: Sequence[_Segment] = (), array: Optional[Tensor] = None, name: str = "") -> None:
        self.name = name
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
    segments = [_safetensors_segment(p) if ".safetensors" in p else _npy_segment(p) for p in paths]
    return ArraySource(segments, name=name)


def check_pair(features: ArraySource, labels: ArraySource) -> None:
    if len(features.shape) != 2:
        raise ValueError(f"features: expected a 2-D (rows, dim) array, got shape {features.shape}")
    if len(labels.shape) != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    if labels.rows != features.rows:
        raise ValueError(f"labels: {labels.rows} labels for {features.rows} feature rows")
    if labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"labels: dtype {labels.dtype} is not int32/int64")
    if features.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"features: dtype {features.dtype} is not float32/float64/float16/bfloat16")


def default_chunk_rows(dim: int, dtype: torch.dtype, budget_bytes: int = 64 << 20) -> int:
    return max(1, budget_bytes // (dim * torch.empty((), dtype=dtype).element_size()))


def stream(
    features: ArraySource,
    labels: ArraySource,
    *,
    chunk_rows: int,
    start_row: int = 0,
    prefetch: int = 2,
    pin_memory: bool = False,
) -> Iterator[Tuple[int, Tensor, Tensor]]:
    """Yields (first_row, features_chunk, labels_chunk) for rows [start_row, N).

    A background thread reads the next chunks (file reads release the GIL) while the caller
    works on the current one; at most `prefetch` + 1 chunks are alive, so memory is bounded by
    the chunk size. Each yielded chunk owns its buffer (pinned when `pin_memory`, for
    asynchronous host-to-device copies)."""
    done = object()
    q: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, prefetch))
    stop_flag = threading.Event()

    def produce() -> None:
        try:
            for start in range(start_row, features.rows, chunk_rows):
                if stop_flag.is_set():
                    return
                stop = min(features.rows, start + chunk_rows)
                buf = None
                if pin_memory and features._array is None:
                    buf = torch.empty((stop - start,) + features.shape[1:], dtype=features.dtype, pin_memory=True)
                x = features.read(start, stop, buf)
                y = labels.read(start, stop)
                q.put((start, x, y))
            q.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            q.put(err)

    thread = threading.Thread(target=produce, name="ncfast-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop_flag.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
