"""Turns user inputs (torch tensors, NumPy arrays and memmaps, pyarrow columns, sequences) into tensors the
kernels accept, with one clear error per bad argument. Never copies unless it must."""

from __future__ import annotations

import warnings
from typing import Any, Type

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


def as_features(value: Any, dim: int) -> Tensor:
    x = to_tensor(value, "features")
    if x.dtype not in FLOAT_CODES:
        raise TypeError(
            f"features: dtype {x.dtype} is not supported (use float32, float64, float16 or bfloat16)"
        )
    if x.ndim != 2:
        raise ValueError(f"features: expected a 2-D (rows, dim) array, got shape {tuple(x.shape)}")
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
