"""The CUDA kernels of ``ncfast._C`` driven from Python.

Python owns every device buffer: scratch comes from torch's caching allocator (cached on the
state, grown when a larger batch needs more, so a warmed-up update allocates nothing and can be
captured in a CUDA graph), work goes on ``torch.cuda.current_stream()``, and bad input is
reported through a 16-word int64 status buffer on the device instead of a host sync.

Two implementations of the Gram: the hand-written kernels of csrc/cuda/sym_gram_cuda.cu (default)
and the slab path of :mod:`ncfast.backend.cuda_slab` (cuBLAS through torch), chosen per call by
``NCFAST_CUDA_GRAM`` ("kernels" or "cublas"); both keep the same statistics and status words.

Status words (csrc/cuda/common.cuh, ``StatusWord``; keep both in step):
0 code (sticky: 0 ok, 1 label out of range, 2 non-finite row), 1 row, 2 label, 3 index of the
rejected call, 4 calls seen, 5 rows skipped under nan_policy="skip" by accepted calls.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._dtypes import FLOAT_CODES
from .._state import StatsState
from . import cuda_slab, kernel_args
from .core import _C

STATUS_WORDS = 16
CODE, ERR_ROW, ERR_LABEL, ERR_CALL, CALLS, SKIPPED = range(6)
PRECISION_CODES = {"exact": 0, "fast": 1}
NAN_POLICY_CODES = {"raise": 0, "skip": 1}
_MAX_CACHED_PLANS = 64


def available() -> bool:
    """True when this build of the core has the CUDA kernels (built with nvcc)."""
    return hasattr(_C, "update_class_stats_cuda")


def resolve_precision(precision: str, dtype: torch.dtype) -> str:
    """'auto' is 'fast' (tensor cores) for 16-bit inputs and 'exact' for float32/float64."""
    if precision == "auto":
        return "fast" if dtype in (torch.float16, torch.bfloat16) else "exact"
    return precision


def scratch_bytes(state: StatsState, features: Tensor, nan_policy: str, precision: str, chunk_rows: int) -> int:
    cache = state._device_cache.setdefault("plans", {})
    key = (features.shape[0], state.dim, state.num_classes, features.dtype, nan_policy, precision, chunk_rows)
    nbytes = cache.get(key)
    if nbytes is None:
        if len(cache) >= _MAX_CACHED_PLANS:
            cache.clear()
        nbytes = _C.cuda_scratch_bytes(
            features.shape[0], state.dim, state.num_classes, FLOAT_CODES[features.dtype],
            NAN_POLICY_CODES[nan_policy], PRECISION_CODES[precision], chunk_rows,
        )
        cache[key] = nbytes
    return nbytes


def _scratch(state: StatsState, nbytes: int, device: torch.device) -> Tensor:
    scratch = state._device_cache.get("scratch")
    if scratch is None or scratch.numel() < nbytes:
        scratch = torch.empty(nbytes, dtype=torch.uint8, device=device)
        state._device_cache["scratch"] = scratch
    return scratch


def update_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str, precision: str = "auto",
            chunk_rows: int = 0) -> None:
    """Enqueues the chunk update on the current stream; never synchronises the host.

    A rejected batch (label out of range, or a NaN/Inf row under nan_policy="raise") changes
    nothing, and neither does any later call until :func:`read_status_` has reported it.
    """
    device = features.device
    precision = resolve_precision(precision, features.dtype)
    with torch.cuda.device(device):
        if state.device_status is None:
            state.device_status = torch.zeros(STATUS_WORDS, dtype=torch.int64, device=device)
        stream = torch.cuda.current_stream(device)
        if cuda_slab.requested_path() == "cublas":
            cuda_slab.update_(state, features, labels, nan_policy, precision, chunk_rows)
        else:
            _update_kernels_(state, features, labels, nan_policy, precision, chunk_rows, stream)
    state._device_cache["stream"] = stream
    state._device_cache["calls"] = state._device_cache.get("calls", 0) + 1
    if torch.cuda.is_current_stream_capturing():
        # Replays of the graph update the statistics without passing through here: from now on
        # every read checks the status.
        state._device_cache["captured"] = True


def _update_kernels_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str, precision: str,
                     chunk_rows: int, stream) -> None:
    """The kernel path: one call of ncfast._C.update_class_stats_cuda (Gram in sym_gram_cuda.cu)."""
    nbytes = scratch_bytes(state, features, nan_policy, precision, chunk_rows)
    scratch = _scratch(state, nbytes, features.device)
    _C.update_class_stats_cuda(
        *kernel_args.state_and_batch(state, features, labels),
        NAN_POLICY_CODES[nan_policy],
        PRECISION_CODES[precision],
        chunk_rows,
        scratch.data_ptr(),
        scratch.numel(),
        state.device_status.data_ptr(),
        stream.cuda_stream,
    )


def pending(state: StatsState) -> bool:
    """Whether CUDA updates were enqueued since the status was last read."""
    cache = state._device_cache
    return state.device_status is not None and (cache.get("calls", 0) > 0 or cache.get("captured", False)
                                                 or cuda_slab.pending(state))


def read_status_(state: StatsState) -> Optional[dict]:
    """Waits for the enqueued updates, folds the skipped-row count into ``state``, clears the
    status and returns ``None``, or, when a batch was rejected, a dict describing it
    (code, row, label, call: its index among the calls since the last read). Does nothing
    while a CUDA graph is being captured."""
    if not pending(state) or torch.cuda.is_current_stream_capturing():
        return None
    status = state.device_status
    with torch.cuda.device(status.device):
        stream = state._device_cache.get("stream")
        current = torch.cuda.current_stream(status.device)
        if stream is not None and stream != current:
            current.wait_stream(stream)
        cuda_slab.fold_(state)  # the slab path's partial Gram into W, after the updates
        words = status.tolist()  # waits for the queued updates
        status.zero_()
    state._device_cache["calls"] = 0
    state.skipped_rows += int(words[SKIPPED])
    if words[CODE] == 0:
        return None
    return {"code": int(words[CODE]), "row": int(words[ERR_ROW]), "label": int(words[ERR_LABEL]),
            "call": int(words[ERR_CALL])}
