"""Pure-PyTorch implementation of the streaming class statistics.

The plain version a strong PyTorch engineer would write (DESIGN.md section 8): per chunk,
``bincount`` + ``index_add_`` for class counts and sums (float32 accumulation for
float32/float16/bfloat16 input), the centred chunk ``X - S[y]`` materialised, one matmul
for its Gram, and the float64 fold. It runs on any device torch supports. Tests use it as a
second opinion on the native kernels; benchmarks use it as the baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._state import StatsState

DEFAULT_CHUNK_ROWS = 65536


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def update_(state: StatsState, features: Tensor, labels: Tensor, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
    """Folds (features, labels) into ``state`` chunk by chunk. No validation: labels must be
    in [0, K) and rows finite (ClassStats checks both before calling)."""
    for start in range(0, features.shape[0], chunk_rows):
        update_chunk_(state, features[start : start + chunk_rows], labels[start : start + chunk_rows])


def update_chunk_(state: StatsState, x: Tensor, y: Tensor) -> None:
    """One chunk update (DESIGN.md section 3) in the general form that holds for any shift s_c:

    W += Z^T Z - sum_c m_c d_c d_c^T + sum_c (n_c m_c / n'_c) e_c e_c^T,
    with Z = X - s[y], d_c = xbar_c - s_c, e_c = xbar_c - mu_c.
    """
    if x.shape[0] == 0:
        return
    acc = accumulation_dtype(x.dtype)
    num_classes, dim = state.means.shape
    xa = x.to(acc)
    m = torch.bincount(y, minlength=num_classes)
    sums = torch.zeros(num_classes, dim, dtype=acc, device=x.device).index_add_(0, y, xa)
    present = m > 0
    m64 = m.to(torch.float64)
    n_old = state.counts.to(torch.float64)
    n_new = n_old + m64
    chunk_mean = sums.to(torch.float64) / m64.clamp(min=1)[:, None]
    seen = state.counts > 0
    shift = torch.where(seen[:, None], state.means, chunk_mean).to(acc)
    z = xa - shift[y]
    gram = z.T @ z

    d = torch.where(present[:, None], chunk_mean - shift.to(torch.float64), 0.0)
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
