"""ncfast's kernels and scores as PyTorch operators (``torch.ops.ncfast.*``).

Registered with :mod:`torch.library` and given fake (meta) implementations, so a training step
that updates statistics or computes a score compiles with ``torch.compile(fullgraph=True)``:
the compiler sees one opaque operator with known output shapes instead of tracing the Python
around the kernels. :meth:`ncfast.ClassStats.update` calls the update operator by itself while
being compiled; the functions below are the tensor-level form for code that keeps the
statistics in its own buffers.

Operators
---------
``ncfast::class_stats_update_(counts, means, scatter, class_scatter, class_diag, skipped,
features, labels, nan_policy)``
    The chunk update of DESIGN.md section 3, in place on the state tensors (``class_diag``
    may be an empty tensor when the per-class diagonal is not tracked; ``skipped`` is a
    one-element int64 counter of rows dropped under ``nan_policy="skip"``).
``ncfast::nc1(counts, means, scatter)``, ``ncfast::nc1_trace(...)``, ``ncfast::cdnv(counts,
means, scatter, class_scatter)``, ``ncfast::logme(...)``, ``ncfast::h_score(...)``
    float64 0-d tensors, on the device of the statistics.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import torch
from torch import Tensor

from . import _dispatch
from ._state import StatsState

NAMESPACE = "ncfast"


# The StatsState of a ClassStats whose tensors reach the operator, so that CUDA updates find
# its scratch buffers and device status (which are not tensors in the schema).
_OWNERS: "weakref.WeakValueDictionary[int, StatsState]" = weakref.WeakValueDictionary()


def register_owner(state: StatsState) -> None:
    _OWNERS[state.scatter.data_ptr()] = state


def _owner_of(counts, means, scatter, class_scatter) -> Optional[StatsState]:
    owner = _OWNERS.get(scatter.data_ptr())
    same = owner is not None and all(
        a.data_ptr() == b.data_ptr() and a.shape == b.shape
        for a, b in ((owner.counts, counts), (owner.means, means), (owner.scatter, scatter),
                     (owner.class_scatter, class_scatter))
    )
    return owner if same else None


def _state_view(counts, means, scatter, class_scatter, class_diag) -> StatsState:
    """A StatsState over the caller's tensors (no copy): updates land in them."""
    state = StatsState(counts, means, scatter, class_scatter, class_diag if class_diag.numel() else None)
    state._buffers = {"counts": counts, "means": means, "class_scatter": class_scatter}
    return state


@torch.library.custom_op(
    f"{NAMESPACE}::class_stats_update_",
    mutates_args=("counts", "means", "scatter", "class_scatter", "class_diag", "skipped"),
)
def class_stats_update_(
    counts: Tensor,
    means: Tensor,
    scatter: Tensor,
    class_scatter: Tensor,
    class_diag: Tensor,
    skipped: Tensor,
    features: Tensor,
    labels: Tensor,
    nan_policy: str = "raise",
) -> None:
    if features.shape[0] == 0:
        return
    owner = _owner_of(counts, means, scatter, class_scatter)
    state = owner if owner is not None else _state_view(counts, means, scatter, class_scatter, class_diag)
    before = state.skipped_rows
    if _dispatch.native_available(features.device):
        _dispatch.native_update_(state, features, labels, nan_policy)
        if owner is None and features.is_cuda:
            _dispatch.check_device_status_(state)  # no ClassStats to report the error later
    else:
        _dispatch.reference_update_(state, features, labels, nan_policy)
    if state.skipped_rows != before:
        skipped += state.skipped_rows - before
        state.skipped_rows = before  # counted once, in `skipped`


@class_stats_update_.register_fake
def _(counts, means, scatter, class_scatter, class_diag, skipped, features, labels, nan_policy="raise"):
    torch._check(features.dim() == 2 and features.shape[1] == scatter.shape[0], lambda: "features: (B, D) expected")
    torch._check(labels.dim() == 1 and labels.shape[0] == features.shape[0], lambda: "labels: (B,) expected")
    return None


def _stats_view(counts, means, scatter, class_scatter=None):
    """A read-only ClassStats over the given tensors, for the score functions."""
    from .stats import ClassStats

    stats = ClassStats(counts.shape[0], scatter.shape[0], device=scatter.device)
    empty = torch.zeros(0, scatter.shape[0], dtype=torch.float64, device=scatter.device)
    if class_scatter is None:
        class_scatter = torch.zeros(counts.shape[0], dtype=torch.float64, device=scatter.device)
    stats._state = _state_view(counts, means, scatter, class_scatter, empty)
    return stats


def _score_op(name: str, fn: Callable, with_class_scatter: bool = False):
    """Registers ncfast::<name> computing fn(stats) as a float64 0-d tensor."""
    if with_class_scatter:

        def impl(counts: Tensor, means: Tensor, scatter: Tensor, class_scatter: Tensor) -> Tensor:
            value = fn(_stats_view(counts, means, scatter, class_scatter))
            return torch.tensor(value, dtype=torch.float64, device=scatter.device)

    else:

        def impl(counts: Tensor, means: Tensor, scatter: Tensor) -> Tensor:
            value = fn(_stats_view(counts, means, scatter))
            return torch.tensor(value, dtype=torch.float64, device=scatter.device)

    op = torch.library.custom_op(f"{NAMESPACE}::{name}", impl, mutates_args=())

    @op.register_fake
    def _(counts, means, scatter, *rest):
        return scatter.new_empty((), dtype=torch.float64)

    return op


def _register_scores():
    from . import metrics

    return {
        "nc1": _score_op("nc1", metrics.nc1),
        "nc1_trace": _score_op("nc1_trace", metrics.nc1_trace),
        "cdnv": _score_op("cdnv", metrics.cdnv, with_class_scatter=True),
        "logme": _score_op("logme", metrics.logme),
        "h_score": _score_op("h_score", metrics.h_score),
    }


SCORE_OPS = _register_scores()
nc1 = SCORE_OPS["nc1"]
nc1_trace = SCORE_OPS["nc1_trace"]
cdnv = SCORE_OPS["cdnv"]
logme = SCORE_OPS["logme"]
h_score = SCORE_OPS["h_score"]

__all__ = ["class_stats_update_", "nc1", "nc1_trace", "cdnv", "logme", "h_score", "SCORE_OPS"]
