"""Scores as PyTorch operators: ``torch.ops.ncfast.nc1``, ``nc1_trace``, ``cdnv``, ``logme``,
``h_score``.

Each takes the state tensors (``counts, means, scatter`` and, for CDNV, ``class_scatter``) and
returns a float64 0-d tensor on their device; a fake implementation gives the output's shape,
so a compiled step can compute a score without a graph break.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .._state import state_over
from ..backend.ops import NAMESPACE
from ..stats import ClassStats
from .nc import cdnv, nc1, nc1_trace
from .transfer_scores import h_score, logme


def stats_over(counts: Tensor, means: Tensor, scatter: Tensor, class_scatter: Optional[Tensor] = None) -> ClassStats:
    """A ClassStats reading the given tensors (no copy), for the score functions."""
    stats = ClassStats(counts.shape[0], scatter.shape[0], device=scatter.device)
    if class_scatter is None:
        class_scatter = torch.zeros(counts.shape[0], dtype=torch.float64, device=scatter.device)
    stats._state = state_over(counts, means, scatter, class_scatter)
    return stats


def _score_op(name: str, fn: Callable, with_class_scatter: bool = False):
    """Registers ncfast::<name> computing fn(stats) as a float64 0-d tensor."""
    if with_class_scatter:

        def impl(counts: Tensor, means: Tensor, scatter: Tensor, class_scatter: Tensor) -> Tensor:
            value = fn(stats_over(counts, means, scatter, class_scatter))
            return torch.tensor(value, dtype=torch.float64, device=scatter.device)

    else:

        def impl(counts: Tensor, means: Tensor, scatter: Tensor) -> Tensor:
            value = fn(stats_over(counts, means, scatter))
            return torch.tensor(value, dtype=torch.float64, device=scatter.device)

    op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=())

    @op.register_fake
    def _(counts, means, scatter, *rest):
        return scatter.new_empty((), dtype=torch.float64)

    return op


SCORE_OPS = {
    "nc1": _score_op("nc1", nc1),
    "nc1_trace": _score_op("nc1_trace", nc1_trace),
    "cdnv": _score_op("cdnv", cdnv, with_class_scatter=True),
    "logme": _score_op("logme", logme),
    "h_score": _score_op("h_score", h_score),
}

__all__ = ["SCORE_OPS", "stats_over"]
