"""The read-ahead stream: chunks of a (features, labels) pair of sources, read by a background
thread into a fixed pool of recycled buffers, copied to the GPU asynchronously when asked."""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

from .sources import ArraySource


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
