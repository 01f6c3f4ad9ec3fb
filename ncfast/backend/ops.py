"""The chunk update as a PyTorch operator, ``torch.ops.ncfast.class_stats_update_``.

Registered with :mod:`torch.library` and given a fake (meta) implementation, so a training step
that updates statistics compiles with ``torch.compile(fullgraph=True)``: the compiler sees one
opaque operator instead of tracing the Python around the kernels.
:meth:`ncfast.ClassStats.update` calls it by itself while being compiled; the function is also
the tensor-level form for code that keeps the statistics in its own buffers.

``ncfast::class_stats_update_(counts, means, scatter, class_scatter, class_diag, skipped,
features, labels, nan_policy, ignore_index=None)``
    The chunk update of DESIGN.md section 3, in place on the state tensors (``class_diag``
    may be an empty tensor when the per-class diagonal is not tracked; ``skipped`` is a
    one-element int64 counter of rows dropped under ``nan_policy="skip"`` or for a label
    equal to ``ignore_index``).

The score operators (``ncfast::nc1`` ...) are in :mod:`ncfast.metrics.ops`.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import Tensor

from .._inputs import drop_ignored
from .._state import StatsState, state_over
from . import dispatch

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
    ignore_index: Optional[int] = None,
) -> None:
    features, labels, ignored = drop_ignored(features, labels, ignore_index)
    if features.shape[0] == 0:
        skipped += ignored
        return
    owner = _owner_of(counts, means, scatter, class_scatter)
    state = owner if owner is not None else state_over(counts, means, scatter, class_scatter, class_diag)
    before = state.skipped_rows
    if dispatch.native_available(features.device):
        dispatch.native_update_(state, features, labels, nan_policy)
        if owner is None and features.is_cuda:
            dispatch.check_device_status_(state)  # no ClassStats to report the error later
    else:
        dispatch.reference_update_(state, features, labels, nan_policy)
    if state.skipped_rows != before or ignored:
        skipped += state.skipped_rows - before + ignored
        state.skipped_rows = before  # counted once, in `skipped`


@class_stats_update_.register_fake
def _(counts, means, scatter, class_scatter, class_diag, skipped, features, labels, nan_policy="raise",
      ignore_index=None):
    torch._check(features.dim() == 2 and features.shape[1] == scatter.shape[0], lambda: "features: (B, D) expected")
    torch._check(labels.dim() == 1 and labels.shape[0] == features.shape[0], lambda: "labels: (B,) expected")
    return None


__all__ = ["NAMESPACE", "class_stats_update_", "register_owner"]
