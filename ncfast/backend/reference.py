"""Pure-PyTorch implementation of the streaming class statistics.

The plain version a strong PyTorch engineer would write (DESIGN.md section 8): per chunk,
``bincount`` + ``index_add_`` for class counts and sums, the centred chunk ``X - s[y]``
materialised, one matmul for its Gram, and the float64 fold. It runs on any device torch
supports. Tests use it as a second opinion on the native kernels; benchmarks use it as the
baseline.

Precision: rows are centred on a shift per class (the running class mean rounded to the
accumulation type, or for a class new to the chunk one of its rows) before anything is summed,
so the class sums, the Gram and the correction all work on centred values: float32 rows with an
offset of 1e6 keep the precision of float32 rows near zero. Range: a batch whose centred
values could overflow a float32 Gram, or underflow it, is accumulated in float64 instead; one
that even float64 cannot hold is refused (see :func:`gram_dtype`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._state import StatsState

DEFAULT_CHUNK_ROWS = 65536

# |x - s| bounds within which a Gram in the type keeps its relative precision (squares stay
# normal numbers, with room for the 24 / 53 bits of a nonzero difference) and sums of
# `rows` squares stay finite with a margin of 2^8 for the corrections.
_RANGE = {
    torch.float32: (2.0**-39, 2.0**120),
    torch.float64: (2.0**-480, 2.0**1000),
}


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def gram_dtype(dtype: torch.dtype, bound: float, terms: int) -> torch.dtype:
    """The type the chunk Gram of a batch of `dtype` rows is accumulated in, when every centred
    value |x - s| is at most `bound` and a sum adds at most `terms` squares: the input's
    accumulation type when that holds the batch, else float64; ValueError when float64 cannot
    either (|x - s| beyond about 1e145, or nonzero but below about 1e-144)."""
    for acc in (accumulation_dtype(dtype), torch.float64):
        low, high = _RANGE[acc]
        if bound == 0.0 or (bound >= low and bound * bound * max(terms, 1) <= high):
            return acc
    raise ValueError(
        f"features: centred values up to {bound:.3g} in magnitude are outside the range whose scatter "
        "float64 can hold (about 1e-144 to 1e145); rescale the features"
    )


def magnitude_bound(state: StatsState, peak: float) -> float:
    """An upper bound on |x - s| for rows with max |x| = `peak`: a shift is a class mean (a
    convex combination of rows seen, so no larger than their peak) or one of the rows."""
    old = float(state.means.abs().max()) if state.means.numel() else 0.0  # empty classes hold zeros
    return peak + max(peak, old)


def update_(state: StatsState, features: Tensor, labels: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
            peak: Optional[float] = None) -> None:
    """Folds (features, labels) into ``state`` chunk by chunk. No validation: labels must be
    in [0, K) and rows finite (ClassStats checks both before calling). `peak` is max |x| over
    the batch when the caller knows it already; the accumulation type for the whole batch is
    chosen (or the batch refused) from it before any chunk changes the state."""
    if features.shape[0] == 0:
        return
    if peak is None:
        peak = float(features.abs().max())
    terms = max(min(chunk_rows, features.shape[0]), features.shape[1])  # most squares one sum adds up
    acc = gram_dtype(features.dtype, magnitude_bound(state, peak), terms)
    for start in range(0, features.shape[0], chunk_rows):
        update_chunk_(state, features[start : start + chunk_rows], labels[start : start + chunk_rows], acc=acc)


def update_chunk_(state: StatsState, x: Tensor, y: Tensor, *, acc: Optional[torch.dtype] = None) -> None:
    """One chunk update (DESIGN.md section 3) in the general form that holds for any shift s_c:

    W += Z^T Z - sum_c m_c d_c d_c^T + sum_c (n_c m_c / n'_c) e_c e_c^T,
    with Z = X - s[y], d_c = xbar_c - s_c = (sum of the class's rows of Z) / m_c and
    e_c = xbar_c - mu_c. Every sum is over centred values, so an offset common to a class costs
    no precision; xbar_c = s_c + d_c in float64.
    """
    rows = x.shape[0]
    if rows == 0:
        return
    acc = acc or accumulation_dtype(x.dtype)
    num_classes, dim = state.means.shape
    xa = x.to(acc)
    m = torch.bincount(y, minlength=num_classes)
    present = m > 0
    seen = state.counts > 0
    # A class new to the statistics is shifted by its first row in the chunk.
    first = torch.full((num_classes,), rows - 1, dtype=torch.int64, device=x.device)
    first.scatter_reduce_(0, y.to(torch.int64), torch.arange(rows, device=x.device), "amin")
    shift = torch.where(seen[:, None], state.means.to(acc), xa[first])
    z = xa - shift[y]
    sums = torch.zeros(num_classes, dim, dtype=acc, device=x.device).index_add_(0, y, z)
    gram = z.T @ z

    m64 = m.to(torch.float64)
    n_old = state.counts.to(torch.float64)
    n_new = n_old + m64
    d = torch.where(present[:, None], sums.to(torch.float64) / m64.clamp(min=1)[:, None], 0.0)
    chunk_mean = shift.to(torch.float64) + d
    e = torch.where((present & seen)[:, None], chunk_mean - state.means, 0.0)
    w_between = torch.where(present, n_old * m64 / n_new.clamp(min=1), 0.0)
    correction = (e * w_between[:, None]).T @ e - (d * m64[:, None]).T @ d
    state.scatter += gram.to(torch.float64) + 0.5 * (correction + correction.T)

    z2 = z * z  # row sums in the accumulation type, like the Gram; no float64 (B, D) copy
    state.class_scatter.index_add_(0, y, z2.sum(dim=1).to(torch.float64))
    state.class_scatter += w_between * (e * e).sum(dim=1) - m64 * (d * d).sum(dim=1)
    if state.class_diag is not None:
        state.class_diag.index_add_(0, y, z2.to(torch.float64))
        state.class_diag += w_between[:, None] * e * e - m64[:, None] * d * d

    step = torch.where(present, m64 / n_new.clamp(min=1), 0.0)
    state.means += step[:, None] * torch.where(seen[:, None], e, chunk_mean - state.means)
    state.counts += m
