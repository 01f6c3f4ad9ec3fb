"""The tensors behind ClassStats, and the two operations every backend shares on them:
growing the class dimension, and Chan's exact merge (DESIGN.md section 3, "Merge").

Per-class tensors are views of the first K rows of larger buffers, so a stream whose number
of classes is discovered on the fly grows in amortised O(K D) time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _moments

_PER_CLASS = ("counts", "means", "class_scatter", "class_diag", "class_gram")
_EXTRA_VECTORS = ("moment_centre", "fourth_moment", "third_moment")
INT64_MAX = 2**63 - 1


@dataclass
class StatsState:
    counts: Tensor  # (K,) int64, n_c
    means: Tensor  # (K, D) float64, mu_c
    scatter: Tensor  # (D, D) float64, W (pooled within-class scatter)
    class_scatter: Tensor  # (K,) float64, tr_c = sum_{i in c} ||x_i - mu_c||^2
    class_diag: Optional[Tensor]  # (K, D) float64, q_cj, or None when not tracked
    skipped_rows: int = 0
    # CUDA only: the kernels' int64 status words (ncfast/_cuda.py), created by the first update.
    device_status: Optional[Tensor] = None
    _buffers: dict = field(default_factory=dict, repr=False)
    # CUDA only: scratch buffer, scratch sizes by shape, the stream and calls since the last check.
    _device_cache: dict = field(default_factory=dict, repr=False)
    # Optional extra statistics (ncfast/_moments.py), None unless their option is on:
    class_gram: Optional[Tensor] = None  # (K, D, D) float64, W_c (per_class_gram=True)
    moment_centre: Optional[Tensor] = None  # (D,) c, follows the global mean (fourth_moments=True)
    fourth_moment: Optional[Tensor] = None  # () sum_i ||x_i - c||^4
    third_moment: Optional[Tensor] = None  # (D,) sum_i ||x_i - c||^2 (x_i - c)

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0]

    @property
    def dim(self) -> int:
        return self.scatter.shape[0]

    @property
    def device(self) -> torch.device:
        return self.scatter.device


def format_bytes(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""  # unreachable


def device_memory(device: torch.device) -> Optional[int]:
    """The memory of `device` in bytes (CPU: the machine's RAM), or None when unknown."""
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def check_fits(nbytes: int, device: torch.device, what: str) -> None:
    """MemoryError naming `what` and its size when it exceeds the device's whole memory, before
    anything is allocated (an allocator asked for terabytes fails with a message about itself)."""
    total = device_memory(device)
    if total is not None and nbytes > total:
        raise MemoryError(f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(total)} "
                          f"of memory of {'this machine' if device.type == 'cpu' else device}")


def zeros(shape: Sequence[int], dtype: torch.dtype, device: torch.device, what: str) -> Tensor:
    """torch.zeros, with a MemoryError naming `what` and its size when it cannot be allocated."""
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    check_fits(nbytes, device, what)
    try:
        return torch.zeros(tuple(shape), dtype=dtype, device=device)
    except RuntimeError as err:  # torch.OutOfMemoryError is one
        if isinstance(err, torch.OutOfMemoryError) or "alloc" in str(err).lower():
            raise MemoryError(f"{what} needs {format_bytes(nbytes)}, which could not be allocated") from None
        raise


def empty_state(num_classes: int, dim: int, device: torch.device, per_class_diag: bool, *,
                fourth_moments: bool = False, per_class_gram: bool = False) -> StatsState:
    if per_class_gram:  # the largest table by far: its own message, with the advice that fits it
        _moments.check_class_gram_memory(num_classes, dim, device)
    per_class = (2 + dim * (2 if per_class_diag else 1) + (dim * dim if per_class_gram else 0)) * 8
    check_fits(dim * dim * 8 + num_classes * per_class, device,
               f"statistics of {num_classes:,} classes x {dim:,} dims (a {dim:,} x {dim:,} float64 scatter"
               + (f" and {num_classes:,} x {dim:,} float64 class tables)" if num_classes else ")"))
    f64 = dict(dtype=torch.float64, device=device)
    state = StatsState(
        counts=torch.zeros(0, dtype=torch.int64, device=device),
        means=torch.zeros(0, dim, **f64),
        scatter=zeros((dim, dim), torch.float64, device, f"the {dim:,} x {dim:,} float64 scatter"),
        class_scatter=torch.zeros(0, **f64),
        class_diag=torch.zeros(0, dim, **f64) if per_class_diag else None,
        class_gram=torch.zeros(0, dim, dim, **f64) if per_class_gram else None,
    )
    if fourth_moments:
        state.moment_centre, state.fourth_moment, state.third_moment = (
            torch.zeros(dim, **f64), torch.zeros((), **f64), torch.zeros(dim, **f64))
    state._buffers = {name: getattr(state, name) for name in _PER_CLASS if getattr(state, name) is not None}
    grow_classes(state, num_classes, exact=True)
    return state


def state_over(counts: Tensor, means: Tensor, scatter: Tensor, class_scatter: Tensor,
               class_diag: Optional[Tensor] = None) -> StatsState:
    """A StatsState over the caller's tensors (no copy, no spare capacity): updates land in
    them. An empty or absent ``class_diag`` means the per-class diagonal is not tracked."""
    diag = class_diag if class_diag is not None and class_diag.numel() else None
    state = StatsState(counts, means, scatter, class_scatter, diag)
    state._buffers = {name: getattr(state, name) for name in _PER_CLASS if getattr(state, name) is not None}
    return state


def grow_classes(state: StatsState, num_classes: int, *, exact: bool = False) -> None:
    """Makes room for classes [0, num_classes); new classes start empty."""
    if num_classes <= state.num_classes:
        return
    capacity = state._buffers["counts"].shape[0]
    if num_classes > capacity:
        new_capacity = num_classes if exact else max(num_classes, 2 * capacity)
        per_class = sum(math.prod(b.shape[1:]) * b.element_size() for b in state._buffers.values())
        total = device_memory(state.device)
        if total is not None and new_capacity * per_class > total:
            new_capacity = num_classes  # no spare capacity when the doubling alone would not fit
        if "class_gram" in state._buffers:
            _moments.check_class_gram_memory(new_capacity, state.dim, state.device)
        what = f"{num_classes:,} classes (per-class tables for {new_capacity:,} classes x {state.dim:,} dims)"
        check_fits(new_capacity * per_class, state.device, what)
        grown = {}
        for name, old in state._buffers.items():
            new = zeros((new_capacity,) + tuple(old.shape[1:]), old.dtype, old.device, what)
            new[: old.shape[0]] = old
            grown[name] = new
        state._buffers.update(grown)  # all or nothing: a failed allocation leaves the state as it was
    _view_classes(state, num_classes)


def truncate_classes(state: StatsState, num_classes: int) -> None:
    """Undoes a grow_classes whose new classes are still empty (a rejected batch)."""
    _view_classes(state, num_classes)


def _view_classes(state: StatsState, num_classes: int) -> None:
    """Points the per-class fields at the first `num_classes` rows of their capacity buffers."""
    for name, buffer in state._buffers.items():
        setattr(state, name, buffer[:num_classes])


def extra_options(state: StatsState) -> dict:
    """The optional statistics a state tracks, as empty_state's keyword arguments."""
    return {"fourth_moments": state.fourth_moment is not None, "per_class_gram": state.class_gram is not None}


def clone_state(state: StatsState) -> StatsState:
    copy = empty_state(state.num_classes, state.dim, state.device, state.class_diag is not None,
                       **extra_options(state))
    copy_into(copy, state)
    return copy


def copy_into(dst: StatsState, src: StatsState) -> None:
    """dst <- src, for states of the same shape."""
    for name in ("counts", "means", "scatter", "class_scatter", "class_diag", "class_gram") + _EXTRA_VECTORS:
        target = getattr(dst, name)
        if target is not None:
            target.copy_(getattr(src, name))
    dst.skipped_rows = src.skipped_rows


def drop_optional(state: StatsState, names) -> None:
    """Stops tracking the optional statistics named (class_diag, class_gram, fourth_moment)."""
    for name in names:
        if name == "fourth_moment":
            state.moment_centre = state.fourth_moment = state.third_moment = None
        else:
            setattr(state, name, None)
            state._buffers.pop(name, None)


def merge_into(dst: StatsState, src: StatsState) -> None:
    """dst <- dst (+) src by Chan et al.'s pairwise update, exact up to rounding:

    n_c = n_Ac + n_Bc,  delta_c = mu_Bc - mu_Ac,  mu_c = mu_Ac + (n_Bc / n_c) delta_c,
    W = W_A + W_B + sum_c (n_Ac n_Bc / n_c) delta_c delta_c^T,
    and the same correction on the diagonal for tr_c and q_cj (and per class for W_c); the
    fourth moments are moved to a common centre first (ncfast/_moments.py).
    The one merge used by ClassStats.merge, all-reduce and checkpoint resume.

    The result tracks an optional statistic (class_diag, class_gram, the fourth moments) only
    when both sides do: one that src lacks is dropped from dst. The result is computed aside and
    checked before anything changes: a result that overflows float64 raises ValueError and
    leaves dst as it was.
    """
    drop = [name for name, mine, theirs in (("class_diag", dst.class_diag, src.class_diag),
                                            ("class_gram", dst.class_gram, src.class_gram),
                                            ("fourth_moment", dst.fourth_moment, src.fourth_moment))
            if mine is not None and theirs is None]
    moved = _moments.merge_moments_before(dst, src) if "fourth_moment" not in drop else None
    classes_before = dst.num_classes
    grow_classes(dst, src.num_classes)
    k = src.num_classes
    n_a = dst.counts[:k].to(torch.float64)
    n_b = src.counts.to(torch.float64)
    n = n_a + n_b
    safe_n = torch.where(n > 0, n, torch.ones_like(n))
    delta = src.means - dst.means[:k]
    weight = torch.where(n > 0, n_a * n_b / safe_n, torch.zeros_like(n))
    between = (delta * weight[:, None]).T @ delta
    scatter = dst.scatter + src.scatter + 0.5 * (between + between.T)
    class_scatter = dst.class_scatter[:k] + src.class_scatter + weight * (delta * delta).sum(dim=1)
    both_diag = dst.class_diag is not None and "class_diag" not in drop
    diag = dst.class_diag[:k] + src.class_diag + weight[:, None] * delta * delta if both_diag else None
    means = dst.means[:k] + (n_b / safe_n)[:, None] * delta
    finite = torch.isfinite(scatter).all() & torch.isfinite(class_scatter).all() & torch.isfinite(means).all()
    if diag is not None:
        finite &= torch.isfinite(diag).all()
    if not bool(finite):
        truncate_classes(dst, classes_before)
        raise ValueError("other: the merged scatter overflows float64 (class means too far apart for the "
                         "float64 range); the statistics are unchanged")
    drop_optional(dst, drop)
    dst.scatter.copy_(scatter)
    dst.class_scatter[:k] = class_scatter
    if diag is not None:
        dst.class_diag[:k] = diag
    _moments.merge_class_gram_(dst, src, weight, delta)
    dst.means[:k] = means
    dst.counts[:k] += src.counts
    dst.skipped_rows += src.skipped_rows
    _moments.merge_moments_after(dst, moved)
