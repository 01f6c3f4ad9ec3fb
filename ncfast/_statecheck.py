"""Checks of a saved state (``ClassStats.state_dict()``, or the tensors and metadata of a
statistics file or checkpoint) before anything is allocated from it.

Every size a state claims (K, D) must be the size of the tensors it actually holds, every count
a non-negative int64 whose total fits in a count, every float finite. Nothing here allocates
more than the tensors it is given already occupy.
"""

from __future__ import annotations

import numbers
from typing import Any, Tuple

import torch

from ._state import INT64_MAX

REQUIRED = ("dim", "num_classes", "counts", "means", "scatter", "class_scatter")
FLOAT_TENSORS = ("means", "scatter", "class_scatter", "class_diag")


def whole_number(value: Any, name: str, low: int = 0) -> int:
    """An int >= `low` from any integer type; a bool, a float or a string is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    if int(value) < low:
        raise ValueError(f"{name}: expected a number >= {low}, got {int(value)}")
    return int(value)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_state_dict(state: Any, version: int) -> Tuple[int, int, bool]:
    """(K, D, whether it holds class_diag) of a well-formed saved state; ValueError (TypeError for
    a non-dict) starting with ``state_dict:`` and naming the bad entry otherwise."""
    if not isinstance(state, dict):
        raise TypeError(f"state_dict: expected a dict, got {type(state).__name__}")
    found = state.get("version")
    if found != version or isinstance(found, bool):
        raise ValueError(f"state_dict: version {found!r} is not supported (expected {version})")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ValueError(f"state_dict: missing {', '.join(missing)}")
    dim = whole_number(state["dim"], "state_dict: dim", low=1)
    k = whole_number(state["num_classes"], "state_dict: num_classes")
    has_diag = state.get("class_diag") is not None
    expected = {"counts": (k,), "means": (k, dim), "scatter": (dim, dim), "class_scatter": (k,)}
    if has_diag:
        expected["class_diag"] = (k, dim)
    # the optional statistics, checked alike when present (whether they must be is the caller's)
    optional = {"class_gram": (k, dim, dim), "moment_centre": (dim,), "fourth_moment": (1,), "third_moment": (dim,)}
    expected.update({name: shape for name, shape in optional.items() if state.get(name) is not None})
    for name, shape in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state_dict: {name} is a {type(tensor).__name__}, expected a tensor")
        if tuple(tensor.shape) != shape:
            raise ValueError(f"state_dict: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                             f"for num_classes={k} and dim={dim}")
        if name == "counts":
            if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
                raise ValueError(f"state_dict: counts stored as {_dtype_name(tensor.dtype)}, expected int64")
        elif not tensor.dtype.is_floating_point:
            raise ValueError(f"state_dict: {name} stored as {_dtype_name(tensor.dtype)}, expected float64")
        elif not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"state_dict: {name} holds NaN or Inf")
    counts = state["counts"]
    negative = (counts < 0).nonzero()
    if negative.numel():
        c = int(negative[0, 0])
        raise ValueError(f"state_dict: counts: class {c} holds {int(counts[c])} rows (negative)")
    skipped = whole_number(state.get("skipped_rows", 0), "state_dict: skipped_rows")
    total = sum(counts.tolist()) + skipped  # Python ints: an int64 sum would wrap
    if total > INT64_MAX:
        raise ValueError(f"state_dict: counts and skipped_rows add up to {total:,} rows, more than a count "
                         "holds (2^63 - 1)")
    fixed = state.get("fixed_classes", True)
    if not isinstance(fixed, bool):
        raise ValueError(f"state_dict: fixed_classes: expected True or False, got {fixed!r}")
    return k, dim, has_diag
