"""Turns user inputs (torch tensors, NumPy arrays and memmaps, pyarrow columns, sequences) into tensors the
kernels accept, with one clear error per bad argument. Never copies unless it must."""

from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple, Type

import numpy as np
import torch
from torch import Tensor

from ._dtypes import FLOAT_CODES, LABEL_CODES


def to_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if type(value).__module__.split(".")[0] in ("pyarrow", "datasets"):
        value = _columnar(value, name)
    if isinstance(value, np.ndarray):
        if any(s < 0 for s in value.strides):
            value = np.ascontiguousarray(value)
        with warnings.catch_warnings():
            # Read-only arrays (memmaps opened with mode='r') are only ever read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            try:
                return torch.from_numpy(value)
            except TypeError as err:
                raise TypeError(f"{name}: NumPy dtype {value.dtype} is not supported") from err
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected a tensor or array, got {type(value).__name__}") from err


def _columnar(value: Any, name: str) -> np.ndarray:
    """A pyarrow (Chunked)Array or a ``datasets`` column as one array (lists of floats become
    (rows, D) features; see ncfast.io.arrow_arrays)."""
    from .io.arrow_arrays import to_numpy

    if type(value).__module__.split(".")[0] == "datasets":
        from .io.hfdatasets import column_arrow

        value = column_arrow(value, name)
    return to_numpy(value, name)


IGNORE_INDEX = -100  # PyTorch's and Hugging Face's label for rows that carry no label


def as_rows(features: Any, labels: Any, dim: int, channels_first: Optional[bool] = None) -> Tuple[Any, Any]:
    """(B, D) rows and (B,) labels from a batch of rows, of tokens (B, T, D) with labels (B, T),
    or of channels-first maps (B, D, *spatial) with labels (B, *spatial) (any number of leading
    dims with the tokens' layout). Other shapes pass through, for as_features/as_labels to name.
    `channels_first`: None infers the layout from the shapes (ValueError when both fit)."""
    if not (hasattr(features, "ndim") and hasattr(labels, "ndim")):
        return features, labels
    if features.ndim < 3 or features.ndim != labels.ndim + 1:
        return features, labels
    x, y = to_tensor(features, "features"), to_tensor(labels, "labels")
    lead = tuple(y.shape)
    tokens = tuple(x.shape[:-1]) == lead and x.shape[-1] == dim
    maps = x.shape[0] == lead[0] and x.shape[1] == dim and tuple(x.shape[2:]) == lead[1:]
    inferred = channels_first is None
    if inferred:
        if tokens and maps:
            raise ValueError(f"features: shape {tuple(x.shape)} with labels {lead} reads both as tokens (..., D) and as "
                             f"channels-first maps (B, D, ...); pass channels_first=True or False")
        channels_first = maps
    if not (maps if channels_first else tokens):
        expected = (f"(*labels.shape, {dim}) for tokens or (B, {dim}, *labels.shape[1:]) for channels-first maps"
                    if inferred else f"(B, {dim}, *labels.shape[1:])" if channels_first else f"(*labels.shape, {dim})")
        raise ValueError(f"features: shape {tuple(x.shape)} does not fit labels of shape {lead}: expected {expected}")
    if channels_first:
        x = x.movedim(1, -1)  # one copy of the batch below: the kernels read rows of contiguous values
    return x.reshape(-1, dim), y.reshape(-1)


def drop_ignored(x: Tensor, y: Tensor, ignore_index: Optional[int],
                 num_classes: Optional[int] = None) -> Tuple[Tensor, Tensor, int]:
    """The rows whose label is not `ignore_index`, and how many were dropped (on a CUDA device
    the count is one wait for the device; ignore_index=None skips it). When rows are dropped,
    a label outside [0, num_classes) (or negative, for None) is refused here, naming its row
    in the batch as given rather than among the kept rows."""
    if ignore_index is None or y.numel() == 0:
        return x, y, 0
    ignored = y == ignore_index
    dropped = int(ignored.sum())
    if dropped == 0:
        return x, y, 0
    keep = ~ignored
    bad = keep & ((y < 0) | (y >= num_classes) if num_classes is not None else y < 0)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        if num_classes is None:
            raise ValueError(f"labels: value {int(y[row])} at row {row} is negative")
        raise ValueError(label_outside_message("labels", int(y[row]), row, num_classes))
    return x[keep], y[keep], dropped


def check_ignore_index(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"ignore_index: expected an int or None, got {value!r}")
    return int(value)


def as_features(value: Any, dim: int) -> Tensor:
    x = to_tensor(value, "features")
    if x.dtype not in FLOAT_CODES:
        raise TypeError(
            f"features: dtype {x.dtype} is not supported (use float32, float64, float16 or bfloat16)"
        )
    if x.ndim != 2:
        raise ValueError(f"features: expected (rows, dim), (..., dim) with labels (...) or (B, dim, *spatial) with "
                         f"labels (B, *spatial); got shape {tuple(x.shape)}")
    if x.shape[1] != dim:
        raise ValueError(f"features: expected {dim} columns, got {x.shape[1]}")
    if x.shape[0] > 0 and x.stride(1) != 1:
        x = x.contiguous()
    return x


def as_labels(value: Any, rows: int) -> Tensor:
    y = to_tensor(value, "labels")
    if y.dtype not in LABEL_CODES:
        raise TypeError(f"labels: dtype {y.dtype} is not supported (use int32 or int64 class indices)")
    if y.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {tuple(y.shape)}")
    if y.shape[0] != rows:
        raise ValueError(f"labels: expected {rows} labels (one per feature row), got {y.shape[0]}")
    return y.contiguous()


def label_outside_message(name: str, label: int, row: int, high: int) -> str:
    return f"{name}: value {label} at row {row} is outside [0, {high})"


def check_label_range(labels: Tensor, high: int, name: str = "labels", error: Type[Exception] = ValueError) -> None:
    """Raises `error` naming the first label outside [0, high) and its row."""
    if labels.numel():
        low, top = torch.aminmax(labels)
        if int(low) >= 0 and int(top) < high:  # one pass in the common case
            return
        bad = ((labels < 0) | (labels >= high)).nonzero()
        if bad.numel():
            row = int(bad[0, 0])
            raise error(label_outside_message(name, int(labels[row]), row, high))
