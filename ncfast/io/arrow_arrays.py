"""Arrow columns as rows: a list / large-list / fixed-size-list of floats (or a fixed-shape
tensor extension column) is a (rows, D) array, an integer or float column a (rows,) one.
Shared by the file readers (Parquet, Arrow IPC, HF datasets) and by ``ClassStats.update``,
which accepts a pyarrow (Chunked)Array. Imports pyarrow only when handed its objects."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

def is_arrow(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "pyarrow"


def layout(arrow_type: Any, where: str) -> Tuple[Tuple[Optional[int], ...], torch.dtype]:
    """(row shape, dtype) of a column of `arrow_type`; a variable list's width is None (it is
    found from the data). ValueError naming `where` for types that are not numbers."""
    import pyarrow as pa

    t = arrow_type
    if isinstance(t, pa.BaseExtensionType):
        if getattr(t, "extension_name", "") == "arrow.fixed_shape_tensor":
            if t.permutation is not None and list(t.permutation) != sorted(t.permutation):
                raise ValueError(f"{where}: a tensor column with a permuted layout is not supported")
            _, dtype = layout(t.storage_type.value_type, where)
            if any(int(s) < 0 for s in t.shape):
                raise ValueError(f"{where}: a tensor column of shape {list(t.shape)}")
            return tuple(int(s) for s in t.shape), dtype
        t = t.storage_type
    if pa.types.is_fixed_size_list(t):
        inner, dtype = layout(t.value_type, where)
        if t.list_size < 0:
            raise ValueError(f"{where}: a fixed-size list of {t.list_size} values")
        return (t.list_size,) + inner, dtype
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner, dtype = layout(t.value_type, where)
        if inner:
            raise ValueError(f"{where}: a list of lists is not supported; store a fixed-size list per row")
        return (None,), dtype
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        raise ValueError(f"{where}: holds {t} values; labels must be integer class indices (map them first, e.g. "
                         "datasets' class_encode_column or pandas' factorize) and features numbers")
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise ValueError(f"{where}: holds {t} values, which ncfast cannot read (store floats or integers)")
    return (), torch.from_numpy(np.empty(0, dtype=np.dtype(t.to_pandas_dtype()))).dtype


def _first_null(array: Any) -> int:
    return int(np.argmax(array.is_null().to_numpy(zero_copy_only=False)))


def rows_of(array: Any, width: Tuple[int, ...], where: str, first_row: int = 0) -> np.ndarray:
    """A (len(array), *width) NumPy view of an Arrow array (a copy only where Arrow must
    make one); ValueError naming the row for nulls and rows of another length."""
    import pyarrow as pa

    if isinstance(array.type, pa.BaseExtensionType):
        array = array.storage
    n = len(array)
    if array.null_count:
        raise ValueError(f"{where}: row {first_row + _first_null(array)} is null")
    if not width:
        return array.to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(array.type):
        values = array.flatten()
    else:
        offsets = array.offsets.to_numpy()
        lengths = np.diff(offsets)
        bad = np.flatnonzero(lengths != width[0])
        if bad.size:
            raise ValueError(f"{where}: row {first_row + int(bad[0])} holds {int(lengths[bad[0]])} values, the "
                             f"rows before it {width[0]}")
        values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    inner = rows_of(values, width[1:], where, first_row) if len(width) > 1 else values
    if len(width) > 1:
        return inner.reshape((n,) + tuple(width))
    if values.null_count:
        raise ValueError(f"{where}: a value of row {first_row + _first_null(values) // max(1, width[0])} is null")
    return values.to_numpy(zero_copy_only=False).reshape((n,) + tuple(width))


def width_of(array: Any, shape: Tuple[Optional[int], ...]) -> Tuple[int, ...]:
    """The row shape with a variable list's width taken from the first row (0 for no rows)."""
    if not shape or shape[0] is not None:
        return tuple(int(s) for s in shape)  # type: ignore[arg-type]
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = next((c for c in array.chunks if len(c)), array.chunks[0] if array.num_chunks else None)
    if array is None or not len(array):
        return (0,)
    offsets = array.offsets
    return (int(offsets[1].as_py()) - int(offsets[0].as_py()),)


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A pyarrow Array or ChunkedArray (a table column) as one NumPy array."""
    import pyarrow as pa

    if isinstance(value, (pa.Table, pa.RecordBatch)):
        raise TypeError(f"{name}: got a pyarrow {type(value).__name__}; pass one column, e.g. table['embedding']")
    if not isinstance(value, (pa.Array, pa.ChunkedArray)):
        raise TypeError(f"{name}: expected a tensor or array, got {type(value).__name__}")
    shape, _ = layout(value.type, name)
    width = width_of(value, shape)
    chunks = value.chunks if isinstance(value, pa.ChunkedArray) else [value]
    parts, row = [], 0
    for chunk in chunks:
        parts.append(rows_of(chunk, width, name, row))
        row += len(chunk)
    if len(parts) == 1:
        return parts[0]
    if not parts:
        _, dtype = layout(value.type, name)
        return torch.empty((0,) + width, dtype=dtype).numpy()
    return np.concatenate(parts)
