"""The CUDA slab path (docs/CUDA.md, "The slab path"): the moments pass writes the centred rows
into a scratch slab, cuBLAS GEMMs (through torch) multiply it into a float32 (float64) partial
Gram, and kernels fold the partial into the float64 W when it is due and at every read.

Chosen by ``NCFAST_CUDA_GRAM=cublas`` (default ``kernels``: the hand-written Gram of
csrc/cuda/sym_gram_cuda.cu) until it has been validated on a GPU.

Buffers, all torch tensors on the statistics' device, cached in ``state._device_cache``:
``scratch`` (uint8, the kernels' bookkeeping; shared with the kernel path), ``slab_x``,
``slab_y`` (small steps), ``slab_corr_x``, ``slab_corr_y`` (correction rows of other chunks):
scratch, rewritten by every chunk;
``gram``: the partial, the columns' scale exponents and the gram words, which hold rows not yet
folded into W, so they belong to the statistics (reset with them, never poisoned by tests).
Nothing here synchronises the host or allocates once a call of the same shape has run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .._dtypes import FLOAT_CODES
from .._state import StatsState
from . import gram_gemm, gram_plan, kernel_args
from .core import _C

ENV = "NCFAST_CUDA_GRAM"
PATHS = ("kernels", "cublas")
NAN_POLICY_CODES = {"raise": 0, "skip": 1}
GRAM_WORDS = 8
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}
_MAX_CACHED_PLANS = 64


def available() -> bool:
    """True when this build of the core has the slab path's kernels."""
    return hasattr(_C, "update_slab_chunk_cuda")


def requested_path() -> str:
    """The CUDA Gram path ``NCFAST_CUDA_GRAM`` asks for: "kernels" (default) or "cublas"."""
    value = os.environ.get(ENV, "").strip().lower() or "kernels"
    if value not in PATHS:
        raise ValueError(f"{ENV}: expected one of {PATHS}, got {value!r}")
    return value


def fast_float64(device: torch.device) -> bool:
    """Whether the device runs DGEMM at its float32 FMA rate (then precision="exact" uses a float64
    slab); see gram_plan.fast_float64."""
    return gram_plan.fast_float64(torch.cuda.get_device_capability(device))


@dataclass
class GramState:
    """The partial Gram of one statistics object and what describes it to the kernels."""

    layout: gram_plan.Layout
    partial: Tensor  # 1-D, layout.partial_elems, float32 (float64 for mode "f64")
    exps: Tensor  # int32 [2, padded_dim]: the columns' scale exponents (two rows, see slab_common.cuh)
    words: Tensor  # int64 [GRAM_WORDS]
    fold_call: object  # a SlabCall describing the partial to fold_slab_partial_cuda
    dirty: bool = False  # rows may be in the partial


def _new_gram(layout: gram_plan.Layout, device: torch.device) -> GramState:
    partial = torch.zeros(layout.partial_elems, dtype=gram_gemm.PARTIAL_DTYPES[layout.mode], device=device)
    exps = torch.zeros(2, layout.padded_dim, dtype=torch.int32, device=device)
    words = torch.zeros(GRAM_WORDS, dtype=torch.int64, device=device)
    call = _C.SlabCall()
    call.slab_dtype = gram_plan.SLAB_DTYPE_CODES[layout.mode]
    call.padded_dim = layout.padded_dim
    call.partial = partial.data_ptr()
    call.slots = layout.slots
    call.slot_stride = layout.slot_stride
    call.partial_elems = partial.numel()
    call.exps = exps.data_ptr()
    call.exps_elems = exps.numel()
    call.words = words.data_ptr()
    return GramState(layout, partial, exps, words, call)


def _gram(state: StatsState, mode: str, device: torch.device) -> GramState:
    """The state's partial for batches of ``mode``; a partial of another layout is folded first."""
    gram: Optional[GramState] = state._device_cache.get("gram")
    if gram is not None and gram.layout.mode == mode:
        return gram
    layout = gram_plan.make_layout(state.dim, mode)
    if gram is not None:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError("features: a captured update must use the dtype and precision of the updates before "
                               f"it (the partial Gram is laid out for mode {gram.layout.mode!r}, this batch needs "
                               f"{mode!r})")
        fold_(state)
    gram = _new_gram(layout, device)
    state._device_cache["gram"] = gram
    return gram


def _buffer(state: StatsState, key: str, elems: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached 1-D buffer of at least ``elems`` elements (grown, never shrunk)."""
    buf = state._device_cache.get(key)
    if buf is None or buf.dtype != dtype or buf.numel() < elems:
        buf = torch.empty(max(elems, 1), dtype=dtype, device=device)
        state._device_cache[key] = buf
    return buf


def _plan(state: StatsState, rows: int, dtype: torch.dtype, nan_policy: str, chunk_rows: int,
          layout: gram_plan.Layout, device: torch.device) -> tuple:
    """(plan, scratch bytes) for this call shape, cached on the state."""
    cache = state._device_cache.setdefault("slab_plans", {})
    key = (rows, dtype, state.num_classes, nan_policy, chunk_rows, layout)
    hit = cache.get(key)
    if hit is not None:
        return hit
    if len(cache) >= _MAX_CACHED_PLANS:
        cache.clear()
    props = torch.cuda.get_device_properties(device)
    budget = min(gram_plan.SLAB_BUDGET, props.total_memory // 16)
    plan = gram_plan.plan_update(rows, state.num_classes, layout, nan_policy=nan_policy, chunk_rows=chunk_rows,
                                 sm_count=props.multi_processor_count, slab_budget=budget)
    scratch = _C.slab_scratch_bytes(rows, state.dim, state.num_classes, FLOAT_CODES[dtype],
                                    NAN_POLICY_CODES[nan_policy], plan.chunk_rows, plan.small, layout.padded_dim)
    hit = (plan, scratch)
    cache[key] = hit
    return hit


def _chunk_call(state: StatsState, plan: gram_plan.SlabPlan, gram: GramState, scratch: Tensor, slab_x: Tensor,
                slab_y: Optional[Tensor], corr_x: Tensor, corr_y: Tensor) -> object:
    """The SlabCall of the plan's chunks over these buffers (cached; per chunk only the rows change)."""
    key = (plan, scratch.data_ptr(), scratch.numel(), slab_x.data_ptr(), slab_x.numel(),
           slab_y.data_ptr() if slab_y is not None else 0, corr_x.data_ptr(), corr_x.numel(), corr_y.data_ptr(),
           gram.partial.data_ptr())
    cached = state._device_cache.get("slab_call")
    if cached is not None and cached[0] == key:
        return cached[1]
    layout = plan.layout
    call = _C.SlabCall()
    call.chunk_rows = plan.chunk_rows
    call.small = plan.small
    call.prevalidated = plan.prevalidated
    call.slab_dtype = gram_plan.SLAB_DTYPE_CODES[plan.mode]
    call.tf32 = plan.mode == "tf32"
    call.slab_x = slab_x.data_ptr()
    call.slab_y = slab_y.data_ptr() if slab_y is not None else 0
    call.padded_dim = layout.padded_dim
    call.ld = plan.ld
    call.splits = plan.splits
    call.slab_elems = slab_x.numel()
    elem = slab_x.element_size()
    if plan.small:  # the correction rows follow the Z rows in both slabs; Y holds them negated
        offset = plan.split_rows(plan.rows) * plan.ld
        call.corr_x = slab_x.data_ptr() + offset * elem
        call.corr_y = slab_y.data_ptr() + offset * elem
        call.corr_elems = slab_x.numel() - offset
        call.corr_sign = -1
    else:  # their own buffers, GEMM'd with alpha -1
        call.corr_x = corr_x.data_ptr()
        call.corr_y = corr_y.data_ptr() if corr_y is not corr_x else 0
        call.corr_elems = corr_x.numel()
        call.corr_sign = 1
    call.corr_ld = layout.padded_dim
    call.corr_split = plan.corr_split
    call.max_slots = plan.max_slots
    call.partial = gram.partial.data_ptr()
    call.slots = layout.slots
    call.slot_stride = layout.slot_stride
    call.partial_elems = gram.partial.numel()
    call.exps = gram.exps.data_ptr()
    call.exps_elems = gram.exps.numel()
    call.words = gram.words.data_ptr()
    call.fold_rows = gram_plan.FOLD_ROWS[plan.mode]
    call.scratch = scratch.data_ptr()
    call.scratch_size = scratch.numel()
    state._device_cache["slab_call"] = (key, call)
    return call


def update_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str, precision: str,
            chunk_rows: int = 0) -> None:
    """Enqueues the update of ``state`` by one batch on the current stream (``precision`` resolved:
    "exact" or "fast"); never synchronises the host. Errors go to ``state.device_status``."""
    device = features.device
    rows = features.shape[0]
    if rows == 0:
        return
    mode = gram_plan.slab_mode(_DTYPE_NAMES[features.dtype], precision, fast_float64(device))
    gram = _gram(state, mode, device)
    plan, scratch_bytes = _plan(state, rows, features.dtype, nan_policy, chunk_rows, gram.layout, device)
    slab_dtype = gram_gemm.SLAB_DTYPES[mode]
    scratch = _buffer(state, "scratch", scratch_bytes, torch.uint8, device)
    slab_x = _buffer(state, "slab_x", plan.slab_elems, slab_dtype, device)
    slab_y = _buffer(state, "slab_y", plan.slab_elems, slab_dtype, device) if plan.small else None
    corr_x = _buffer(state, "slab_corr_x", plan.corr_elems, slab_dtype, device)
    corr_y = _buffer(state, "slab_corr_y", plan.corr_elems, slab_dtype, device) if plan.corr_split > 1 else corr_x
    call = _chunk_call(state, plan, gram, scratch, slab_x, slab_y, corr_x, corr_y)
    stream = torch.cuda.current_stream(device)
    args = kernel_args.state_and_batch(state, features, labels)
    dp = gram.layout.padded_dim
    for index, (row0, chunk) in enumerate(plan.chunks()):
        call.row0 = row0
        call.rows = chunk
        call.first_chunk = index == 0
        call.split_rows = plan.split_rows(chunk)
        call.add_rows = plan.add_rows(chunk)
        _C.update_slab_chunk_cuda(*args, NAN_POLICY_CODES[nan_policy], call, state.device_status.data_ptr(),
                                  stream.cuda_stream)
        with gram_gemm.gemm_precision(mode, device):
            if plan.small:
                gram_gemm.accumulate_(gram.partial, slab_x, slab_y, plan.gemms, plan.gemm_rows(chunk), plan.ld, dp)
            else:
                gram_gemm.accumulate_(gram.partial, slab_x, slab_x, plan.gemms, plan.split_rows(chunk), plan.ld, dp)
                gram_gemm.accumulate_(gram.partial, corr_x, corr_y, plan.corr_gemms, plan.corr_rows, dp, dp,
                                      alpha=-1.0)
    gram.dirty = True


def pending(state: StatsState) -> bool:
    gram = state._device_cache.get("gram")
    return gram is not None and (gram.dirty or state._device_cache.get("captured", False))


def fold_(state: StatsState) -> None:
    """Folds the partial into W and mirrors W (enqueued on the current stream, which must already
    follow the updates). A no-op without a partial, or while a CUDA graph is being captured."""
    gram: Optional[GramState] = state._device_cache.get("gram")
    if gram is None or torch.cuda.is_current_stream_capturing():
        return
    with torch.cuda.device(gram.partial.device):
        stream = torch.cuda.current_stream(gram.partial.device)
        _C.fold_slab_partial_cuda(state.scatter.data_ptr(), state.dim, gram.fold_call, stream.cuda_stream)
    gram.dirty = False


def plan_of(state: StatsState, features: Tensor, nan_policy: str, precision: str, chunk_rows: int = 0):
    """The plan an update with this batch would use (for tests and the GPU probe)."""
    mode = gram_plan.slab_mode(_DTYPE_NAMES[features.dtype], precision, fast_float64(features.device))
    layout = gram_plan.make_layout(state.dim, mode)
    return _plan(state, features.shape[0], features.dtype, nan_policy, chunk_rows, layout, features.device)[0]
