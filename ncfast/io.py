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
        raise ValueError(f"{path}: big-endian data is not supported; save it little-endian, "
                         "e.g. np.save(path, x.astype(x.dtype.newbyteorder('<')))")
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

    def __init__(self, segments: Sequence[_Segment] = (), array: Optional[Tensor] = None, name: str = "",
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
    segments = [_safetensors_segment(p) if ".safetensors" in p else _npy_segment(p) for p in paths]
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


class _Slot:
    """One reusable pair of host buffers (features, labels) for a chunk; `ready` is the CUDA
    event after which a device copy no longer reads them."""

    def __init__(self, features: ArraySource, labels: ArraySource, rows: int, pin: bool) -> None:
        def buffer(src: ArraySource) -> Optional[Tensor]:
            if src.in_memory:
                return None  # in-memory sources hand out views, no copy
            return torch.empty((rows,) + src.shape[1:], dtype=src.dtype, pin_memory=pin)

        self.x, self.y = buffer(features), buffer(labels)
        self.ready = None


def _copy_to_gpu(x: Tensor, y: Tensor, slot: _Slot, copy_stream, device: torch.device):
    """Host chunk -> device on `copy_stream`; the consumer's stream waits for it."""
    compute = torch.cuda.current_stream(device)
    with torch.cuda.stream(copy_stream):
        xd, yd = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        slot.ready = torch.cuda.Event()
        slot.ready.record(copy_stream)
    compute.wait_event(slot.ready)
    # Allocated on the copy stream, used on the compute stream: keep them alive for both.
    xd.record_stream(compute)
    yd.record_stream(compute)
    return xd, yd


def stream(
    features: ArraySource,
    labels: ArraySource,
    *,
    chunk_rows: int,
    start_row: int = 0,
    stop_row: Optional[int] = None,
    prefetch: int = 2,
    device: Optional[Union[str, torch.device]] = None,
) -> Iterator[Tuple[int, Tensor, Tensor]]:
    """Yields (first_row, features_chunk, labels_chunk) for rows [start_row, stop_row)
    (stop_row defaults to N).

    A background thread reads the next `prefetch` chunks (file reads release the GIL) while
    the caller works on the current one. The chunks are read into a fixed pool of
    `prefetch + 2` buffers that are recycled, so memory stays bounded by the chunk size and
    no allocation happens per chunk. A yielded chunk is valid until the next one is requested:
    clone it to keep it.

    With a CUDA `device`, the buffers are pinned and each chunk is copied asynchronously on a
    separate copy stream, so the copy of chunk i+1 overlaps the caller's kernels on chunk i;
    the current stream waits for the copy before using the chunk, and a buffer is refilled
    only after the event recorded behind its copy."""
    device = torch.device(device) if device is not None else None
    on_gpu = device is not None and device.type == "cuda"
    stop_row = features.rows if stop_row is None else min(stop_row, features.rows)
    rows = min(chunk_rows, max(1, stop_row - start_row))
    copy_stream = torch.cuda.Stream(device) if on_gpu else None
    free: "queue.Queue[_Slot]" = queue.Queue()
    for _ in range(prefetch + 2):
        free.put(_Slot(features, labels, rows, pin=on_gpu))
    done = object()
    filled: "queue.Queue[Any]" = queue.Queue()
    stop_flag = threading.Event()

    def produce() -> None:
        try:
            for start in range(start_row, stop_row, chunk_rows):
                slot = free.get()
                if stop_flag.is_set():
                    return
                if slot.ready is not None:
                    slot.ready.synchronize()  # its last device copy has finished reading it
                stop = min(stop_row, start + chunk_rows)
                x = features.read(start, stop, slot.x)
                y = labels.read(start, stop, slot.y)
                filled.put((start, x, y, slot))
            filled.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            filled.put(err)

    thread = threading.Thread(target=produce, name="ncfast-reader", daemon=True)
    thread.start()
    held = None
    try:
        while True:
            item = filled.get()
            if held is not None:
                free.put(held)
                held = None
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            start, x, y, slot = item
            if on_gpu:
                x, y = _copy_to_gpu(x, y, slot, copy_stream, device)
            elif device is not None and x.device != device:
                x, y = x.to(device), y.to(device)
            held = slot
            yield start, x, y
    finally:
        stop_flag.set()
        if held is not None:
            free.put(held)
        free.put(_Slot.__new__(_Slot))  # wakes a producer waiting for a free buffer
        thread.join()
