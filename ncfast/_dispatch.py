"""Chooses the implementation of the chunk update for a device: the C++ CPU kernels, the CUDA
kernels (when compiled in), or the pure-PyTorch reference."""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from ._core import _C
from ._dtypes import FLOAT_CODES, LABEL_CODES
from ._state import StatsState

BACKENDS = ("auto", "native", "reference")

_STATUS_OK, _STATUS_LABEL, _STATUS_NONFINITE = 0, 1, 2
NAN_POLICIES = {"raise": 0, "skip": 1}


def native_available(device: torch.device) -> bool:
    return device.type == "cpu"


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "native" if native_available(device) else "reference"
    if backend == "native" and not native_available(device):
        raise ValueError(f"backend: 'native' has no kernels for device {device} in this build")
    return backend


class UpdateError(ValueError):
    """A batch rejected by the kernel; the statistics are unchanged."""


def native_update_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str, block_rows: int = 0) -> None:
    """Runs the C++ update; raises ValueError naming the offending row on bad input."""
    diag = state.class_diag
    status, row, label, skipped = _C.update_class_stats_cpu(
        state.counts.data_ptr(),
        state.means.data_ptr(),
        state.scatter.data_ptr(),
        state.class_scatter.data_ptr(),
        diag.data_ptr() if diag is not None else 0,
        state.num_classes,
        state.dim,
        features.data_ptr(),
        FLOAT_CODES[features.dtype],
        features.shape[0],
        features.stride(0),
        labels.data_ptr(),
        LABEL_CODES[labels.dtype],
        NAN_POLICIES[nan_policy],
        block_rows,
    )
    if status == _STATUS_LABEL:
        raise UpdateError(f"labels: value {label} at row {row} is outside [0, {state.num_classes})")
    if status == _STATUS_NONFINITE:
        raise UpdateError(
            f"features: row {row} holds NaN or Inf (pass nan_policy='skip' to drop such rows)"
        )
    if status != _STATUS_OK:
        raise RuntimeError(f"ncfast core returned status {status}")
    state.skipped_rows += skipped


def reference_update_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str) -> None:
    """Validates like the kernel (all-or-nothing), then runs the pure-PyTorch update."""
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= state.num_classes:
            bad = low if low < 0 else high
            row = int((labels == bad).nonzero()[0, 0])
            raise UpdateError(f"labels: value {bad} at row {row} is outside [0, {state.num_classes})")
    finite = torch.isfinite(features).all(dim=1)
    if not bool(finite.all()):
        if nan_policy == "raise":
            row = int((~finite).nonzero()[0, 0])
            raise UpdateError(
                f"features: row {row} holds NaN or Inf (pass nan_policy='skip' to drop such rows)"
            )
        state.skipped_rows += int((~finite).sum())
        features, labels = features[finite], labels[finite]
    reference.update_(state, features, labels)
