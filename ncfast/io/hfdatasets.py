"""Hugging Face ``datasets`` objects as sources: a column (``ds["embedding"]``) or a Dataset
of one column (``ds.select_columns("embedding")``), read in Arrow format slice by slice, so a
shuffled or filtered dataset gives its rows in its own order. Folders written by
``save_to_disk`` need only pyarrow (see :mod:`ncfast.io.arrow`); this module serves live
objects and imports nothing until handed one."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .arrow import ArrowColumn
from .arrow_arrays import layout, width_of


def is_dataset(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "datasets" and type(value).__name__ in ("Dataset", "Column")


def _split(value: Any, name: str):
    """(dataset, column) of a Column or of a one-column Dataset."""
    if type(value).__name__ == "Column":
        return value.source, value.column_name
    columns = list(value.column_names)
    if len(columns) != 1:
        raise ValueError(f"{name}: the dataset has the columns {columns[:30]}; pass one, e.g. ds[{columns[0]!r}] "
                         "or ds.select_columns(NAME)")
    return value, columns[0]


class DatasetColumn(ArrowColumn):
    """One column of a ``datasets.Dataset``."""

    def __init__(self, value: Any, name: str) -> None:
        dataset, column = _split(value, name)
        if type(dataset).__name__ != "Dataset":
            raise TypeError(f"{name}: a {type(dataset).__name__} is not supported; pass a datasets.Dataset column")
        self._data = dataset.select_columns([column]).with_format("arrow")
        where = f"{name} (column {column!r})"
        row_shape, dtype = layout(dataset.data.schema.field(column).type, where)
        if row_shape and row_shape[0] is None:
            row_shape = width_of(self._data[:1].column(0), row_shape) if len(self._data) else (0,)
        super().__init__("", column, len(self._data), row_shape, dtype)
        self._name = where

    def _where(self) -> str:
        return self._name

    def fingerprint(self) -> list:
        return [("dataset", getattr(self._data, "_fingerprint", ""), self.column, list(self.shape))]

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        dest = self._out(out, start, stop)
        row = start
        for chunk in self._data[start:stop].column(0).chunks:
            self._copy(dest[row - start: row - start + len(chunk)], chunk, row)
            row += len(chunk)


def column_arrow(value: Any, name: str) -> Any:
    """The pyarrow ChunkedArray of a ``datasets`` column or one-column Dataset, rows in the
    dataset's own order."""
    if not is_dataset(value):
        raise TypeError(f"{name}: expected a tensor or array, got {type(value).__name__}")
    dataset, column = _split(value, name)
    return dataset.select_columns([column]).with_format("arrow")[:].column(0)
