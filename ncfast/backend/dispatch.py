"""Chooses the implementation of the chunk update for a device: the C++ CPU kernels, the CUDA
kernels (when compiled in), or the pure-PyTorch reference."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _moments
from .._dtypes import FLOAT_CODES
from .._inputs import check_label_range, label_outside_message
from .._state import StatsState
from . import cuda, kernel_args
from . import reference
from .core import _C

BACKENDS = ("auto", "native", "reference")

_STATUS_OK, _STATUS_LABEL, _STATUS_NONFINITE = 0, 1, 2
NAN_POLICIES = {"raise": 0, "skip": 1}
# CPU Gram: "fast" is the bfloat16 Gram for 16-bit inputs where the build and CPU have it;
# "auto" keeps the float32 Gram on the CPU (README "Precision").
CPU_PRECISIONS = {"auto": 0, "exact": 0, "fast": 1}


def native_available(device: torch.device) -> bool:
    """C++ kernels on the CPU always; CUDA kernels when this build compiled them (nvcc found)."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and cuda.available()


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


def _label_message(label: int, row: int, num_classes: int) -> str:
    return label_outside_message("labels", label, row, num_classes)


def _nonfinite_message(row: int) -> str:
    return f"features: row {row} holds NaN or Inf (pass nan_policy='skip' to drop such rows)"


def row_moments(x: Tensor, centre: Tensor) -> tuple:
    """(sum ||x_i - c||^4, sum ||x_i - c||^2 (x_i - c)) of finite rows in float64: one threaded
    C++ pass over the rows on the CPU (the same sum for any thread count), torch elsewhere."""
    if x.device.type != "cpu" or x.shape[0] == 0:
        return _moments._chunk_moments(x, centre)
    centre = centre.to(torch.float64).contiguous()
    third = torch.empty(x.shape[1], dtype=torch.float64)
    fourth = _C.central_moments_cpu(x.data_ptr(), x.shape[0], x.shape[1], x.stride(0), FLOAT_CODES[x.dtype],
                                    centre.data_ptr(), third.data_ptr())
    return torch.tensor(fourth, dtype=torch.float64), third


def _check_float64_range(state: StatsState, features: Tensor) -> None:
    """float64 rows whose centred squares a float64 scatter cannot hold (|x| beyond about 1e145,
    or nonzero below about 1e-144) are refused before the kernels change anything, as by the
    reference backend. float32 and 16-bit rows always fit: the kernels scale them."""
    peak = float(features.abs().max())
    if peak == peak and peak != float("inf"):  # NaN/Inf rows are the kernels' to report (or skip)
        terms = max(features.shape[0], features.shape[1])
        reference.gram_dtype(torch.float64, reference.magnitude_bound(state, peak), terms)


def native_update_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str, block_rows: int = 0,
                   *, precision: str = "auto", path: int = 0) -> None:
    """Runs the native update of ``state`` by one batch.

    CPU: the C++ kernels; raises UpdateError naming the offending row on bad input.
    CUDA: enqueues the kernels on the current stream and returns without a host sync; bad input
    is recorded on the device and raised by :func:`check_device_status_` (the statistics are
    left unchanged, and so are they by later updates until then). ``block_rows`` is the CPU
    block / CUDA chunk size (0: default); ``precision`` ("auto", "exact", "fast") picks the
    Gram (CUDA: tensor cores; CPU: "fast" is the bfloat16 Gram for 16-bit inputs, "auto" is
    "exact"). ``path`` forces a CPU block path (0 auto, 1 one-pass, 2 class-grouped per block,
    3 class-grouped over windows; tests and benchmarks only).
    """
    if features.device.type == "cuda":
        cuda.update_(state, features, labels, nan_policy, precision, block_rows)
        return
    if features.dtype == torch.float64 and features.numel():
        _check_float64_range(state, features)
    status, row, label, skipped = _C.update_class_stats_cpu(
        *kernel_args.state_and_batch(state, features, labels),
        NAN_POLICIES[nan_policy],
        block_rows,
        CPU_PRECISIONS[precision],
        path,
    )
    if status == _STATUS_LABEL:
        raise UpdateError(_label_message(label, row, state.num_classes))
    if status == _STATUS_NONFINITE:
        raise UpdateError(_nonfinite_message(row))
    if status != _STATUS_OK:
        raise RuntimeError(f"ncfast core returned status {status}")
    state.skipped_rows += skipped


def check_device_status_(state: StatsState) -> None:
    """Reports CUDA updates of ``state`` enqueued since the last check (waits for them).

    Raises UpdateError when one of them was rejected: that batch and every later one were not
    applied, so the statistics hold exactly the rows before it. The status is cleared either
    way, so the statistics take updates again. No-op on the CPU, with nothing pending, and while
    a CUDA graph is being captured.
    """
    report = cuda.read_status_(state)
    if report is None:
        return
    if report["code"] == _STATUS_LABEL:
        what = _label_message(report["label"], report["row"], state.num_classes)
    elif report["code"] == _STATUS_NONFINITE:
        what = _nonfinite_message(report["row"])
    else:
        raise RuntimeError(f"ncfast CUDA kernels returned status {report['code']}")
    raise UpdateError(
        f"{what} [CUDA update call {report['call'] + 1} since the last check was rejected; it and "
        "every later call were not applied: the statistics hold exactly the rows before it]"
    )


def checked_rows(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str):
    """(rows, labels) the update will fold in, checked on the host as the kernels check them:
    UpdateError for a label outside [0, K) or, under nan_policy="raise", a NaN/Inf row;
    under "skip" such rows are left out (the kernels count them)."""
    check_label_range(labels, state.num_classes, error=UpdateError)
    finite = torch.isfinite(features).all(dim=1)
    if bool(finite.all()):
        return features, labels
    if nan_policy == "raise":
        raise UpdateError(_nonfinite_message(int((~finite).nonzero()[0, 0])))
    return features[finite], labels[finite]


def reference_update_(state: StatsState, features: Tensor, labels: Tensor, nan_policy: str) -> None:
    """Validates like the kernel (all-or-nothing), then runs the pure-PyTorch update."""
    check_label_range(labels, state.num_classes, error=UpdateError)
    if features.shape[0]:  # max |x| per row, NaN and Inf kept (amax/amin: no (B, D) temporary)
        peaks = torch.maximum(features.amax(dim=1).abs(), features.amin(dim=1).abs())
    else:
        peaks = features.new_zeros(0)
    finite = torch.isfinite(peaks)
    skipped = 0
    if not bool(finite.all()):
        if nan_policy == "raise":
            row = int((~finite).nonzero()[0, 0])
            raise UpdateError(_nonfinite_message(row))
        skipped = int((~finite).sum())
        features, labels, peaks = features[finite], labels[finite], peaks[finite]
    peak = float(peaks.max()) if peaks.numel() else 0.0
    try:
        reference.update_(state, features, labels, peak=peak)  # raises before any change, or not at all
    except ValueError as err:
        raise UpdateError(str(err)) from None
    state.skipped_rows += skipped
