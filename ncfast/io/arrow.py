"""Parquet, Arrow IPC (file and stream) and Feather v2 files, and in-memory Arrow columns, via
pyarrow (the ``ncfast[arrow]`` extra). A column is selected by name (``train.parquet:embedding``,
``train.parquet:label``; the only column when none is named): a list / fixed-size-list /
fixed-shape-tensor column of floats gives (rows, D) features, an integer column labels.

Parquet is read row group by row group in record batches, through a cursor kept between
reads, so a pass decodes each page once. Arrow IPC files (HF ``datasets`` shards are IPC
streams) are memory-mapped for the duration of one read only, and only the selected
column's pages are touched: resident memory is bounded by the chunk either way.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .arrow_arrays import layout, rows_of, width_of
from .part import Part, element_size, optional, row_elements, unreadable

PARQUET_MAGIC = b"PAR1"
FILE_MAGIC = b"ARROW1"
STREAM_MAGIC = b"\xff\xff\xff\xff"
BATCH_BYTES = 2 << 20  # Parquet decode granularity: a list column holds about 5x this while decoded


def _pyarrow(what: str = "reading Parquet / Arrow files"):
    optional("pyarrow", "arrow", what)
    import pyarrow as pa
    import pyarrow.ipc  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    return pa


def _column(path: str, names: List[str], key: Optional[str]) -> str:
    if key is None:
        if len(names) != 1:
            raise ValueError(f"{path}: holds the columns {names[:30]}; name one as {path}:COLUMN")
        return names[0]
    if names.count(key) != 1:
        found = "has two columns" if names.count(key) else "has no column"
        raise ValueError(f"{path}: {found} {key!r} (it holds {names[:30]})")
    return key


class _Cursor:
    """Where a sequential reader stands: the batch iterator, the row it has reached, and the
    unread tail of its last batch."""

    def __init__(self, batches: Any, row: int, closer: Any = None) -> None:
        self.batches, self.row, self.pending, self.closer = batches, row, None, closer


class ArrowColumn(Part):
    """What every Arrow-backed part shares: rows of one column copied into the caller's buffer
    batch by batch, with nulls and ragged rows reported by row."""

    def __init__(self, path: str, column: str, rows: int, row_shape: Tuple[int, ...], dtype: torch.dtype) -> None:
        self.path, self.column = path, column
        self.shape, self.dtype = (rows,) + tuple(row_shape), dtype
        self._lock = threading.Lock()

    def _where(self) -> str:
        return f"{self.path}:{self.column}"

    def _copy(self, out_rows: np.ndarray, array: Any, first_row: int) -> None:
        values = rows_of(array, self.shape[1:], self._where(), first_row)
        np.copyto(out_rows, values, casting="no")

    def _out(self, out: Tensor, start: int, stop: int) -> np.ndarray:
        n = stop - start
        return out.view(-1)[: n * row_elements(self.shape)].numpy().reshape((n,) + self.shape[1:])


class ParquetColumn(ArrowColumn):
    def __init__(self, path: str, column: str, rows: int, row_shape, dtype, group_rows: List[int]) -> None:
        super().__init__(path, column, rows, row_shape, dtype)
        self._starts = list(np.cumsum([0] + group_rows))
        self._cursor: Optional[_Cursor] = None

    def _seek(self, start: int) -> _Cursor:
        pa = _pyarrow()
        if self._cursor is not None and self._cursor.closer is not None:
            self._cursor.closer.close()
        group = bisect.bisect_right(self._starts, start) - 1
        f = pa.parquet.ParquetFile(self.path, buffer_size=1 << 20, pre_buffer=False)
        batch_rows = max(256, BATCH_BYTES // max(1, row_elements(self.shape) * element_size(self.dtype)))
        batches = f.iter_batches(batch_size=batch_rows, row_groups=range(group, f.num_row_groups),
                                 columns=[self.column], use_threads=False)
        cursor = _Cursor(batches, int(self._starts[group]), f)
        self._cursor = cursor
        return cursor

    def _next(self, cursor: _Cursor) -> Any:
        if cursor.pending is not None:
            array, cursor.pending = cursor.pending, None
            return array
        try:
            return next(cursor.batches).column(0)
        except StopIteration:
            raise ValueError(f"{self.path}: holds fewer rows than its metadata says ({self.rows})") from None

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        with self._lock:
            try:
                cursor = self._cursor if self._cursor is not None and self._cursor.row == start else None
                if cursor is None:
                    cursor = self._seek(start)
                    while cursor.row < start:  # the rows of the row group before `start`
                        array = self._next(cursor)
                        take = min(len(array), start - cursor.row)
                        cursor.row += take
                        if take < len(array):
                            cursor.pending = array.slice(take)
                dest = self._out(out, start, stop)
                while cursor.row < stop:
                    array = self._next(cursor)
                    take = min(len(array), stop - cursor.row)
                    self._copy(dest[cursor.row - start: cursor.row - start + take], array.slice(0, take), cursor.row)
                    if take < len(array):
                        cursor.pending = array.slice(take)
                    cursor.row += take
            except Exception as err:  # pyarrow raises ArrowException, OSError, UnicodeDecodeError, ...
                if self._cursor is not None and self._cursor.closer is not None:
                    self._cursor.closer.close()
                self._cursor = None
                raise unreadable(self.path, "Parquet file", err) from None
            if stop == self.rows:
                cursor.closer.close()
                self._cursor = None


def parquet_part(path: str, key: Optional[str]) -> Part:
    pa = _pyarrow()
    try:
        f = pa.parquet.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)  # pages stream, not chunks
        try:
            schema = f.schema_arrow
            column = _column(path, schema.names, key)
            where = f"{path}:{column}"
            row_shape, dtype = layout(schema.field(column).type, where)
            if row_shape and row_shape[0] is None:
                first = next(f.iter_batches(batch_size=1, columns=[column], use_threads=False), None)
                row_shape = width_of(first.column(0), row_shape) if first is not None else (0,)
            groups = [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)]
        finally:
            f.close()
    except Exception as err:  # pyarrow raises ArrowException, OSError, UnicodeDecodeError, ...
        raise unreadable(path, "Parquet file", err) from None
    return ParquetColumn(path, column, sum(groups), row_shape, dtype, groups)


class IpcColumn(ArrowColumn):
    """A column of an Arrow IPC file or stream. `offsets` (stream format) are the byte
    positions of the record-batch messages; a file's footer indexes its batches itself."""

    def __init__(self, path: str, column: str, row_shape, dtype, batch_rows: List[int], schema: Any,
                 offsets: Optional[List[int]]) -> None:
        super().__init__(path, column, sum(batch_rows), row_shape, dtype)
        self._starts = list(np.cumsum([0] + batch_rows))
        self._schema, self._offsets = schema, offsets
        self._index = schema.get_field_index(column)

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        pa = _pyarrow()
        if stop <= start:
            return
        dest = self._out(out, start, stop)
        first = bisect.bisect_right(self._starts, start) - 1
        try:
            with pa.memory_map(self.path) as m:  # unmapped after this read: no page stays resident
                reader = pa.ipc.open_file(m) if self._offsets is None else None
                batch, row = first, int(self._starts[first])
                while row < stop:
                    if reader is not None:
                        array = reader.get_batch(batch).column(self._index)
                    else:
                        m.seek(self._offsets[batch])
                        message = pa.ipc.read_message(m)
                        array = pa.ipc.read_record_batch(message, self._schema).column(self._index)
                    lo, hi = max(start, row) - row, min(stop, row + len(array)) - row
                    self._copy(dest[row + lo - start: row + hi - start], array.slice(lo, hi - lo), row + lo)
                    row += len(array)
                    batch += 1
        except Exception as err:  # pyarrow raises ArrowException, OSError, UnicodeDecodeError, ...
            raise unreadable(self.path, "Arrow file", err) from None


def _scan_stream(pa: Any, m: Any, path: str) -> Tuple[Any, List[int], List[int]]:
    reader = pa.ipc.MessageReader.open_stream(m)
    message = next(iter(reader), None)
    if message is None or message.type != "schema":
        raise ValueError(f"{path}: not a readable Arrow stream (it does not start with a schema)")
    schema = pa.ipc.read_schema(message)
    rows, offsets = [], []
    while True:
        at = m.tell()
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        if message is None:
            break
        if message.type == "dictionary batch":
            raise ValueError(f"{path}: holds dictionary-encoded columns, which ncfast does not read; re-save "
                             "them decoded (e.g. table.cast(...)) or as Parquet")
        if message.type != "record batch":
            continue
        rows.append(pa.ipc.read_record_batch(message, schema).num_rows)
        offsets.append(at)
    if offsets:
        _check_native_order(pa, m, path, schema, offsets[0])
    return schema, rows, offsets


def _check_native_order(pa: Any, m: Any, path: str, schema: Any, offset: int) -> None:
    """A stream written in the other byte order is swapped by pyarrow's stream reader (into
    new buffers) but not by read_record_batch: refuse it rather than read raw bytes."""
    m.seek(0)
    swapped = pa.ipc.open_stream(m).read_next_batch()
    m.seek(offset)
    raw = pa.ipc.read_record_batch(pa.ipc.read_message(m), schema)

    def addresses(batch):
        return [b.address for column in batch.columns for b in column.buffers() if b is not None]

    if addresses(swapped) != addresses(raw) and not swapped.equals(raw):  # (an aligning copy is equal)
        raise ValueError(f"{path}: an Arrow stream in big-endian byte order, which ncfast does not read; re-save it "
                         "on a little-endian machine (or as Parquet)")


def ipc_part(path: str, key: Optional[str], stream: bool) -> Part:
    pa = _pyarrow()
    try:
        with pa.memory_map(path) as m:
            if stream:
                schema, rows, offsets = _scan_stream(pa, m, path)
            else:
                reader = pa.ipc.open_file(m)
                schema, offsets = reader.schema, None
                rows = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
            column = _column(path, schema.names, key)
            where = f"{path}:{column}"
            row_shape, dtype = layout(schema.field(column).type, where)
            if row_shape and row_shape[0] is None:
                row_shape = (0,)
                if rows:
                    first = next(i for i, r in enumerate(rows + [1]) if r)
                    if first < len(rows):
                        if stream:
                            m.seek(offsets[first])
                            batch = pa.ipc.read_record_batch(pa.ipc.read_message(m), schema)
                        else:
                            batch = reader.get_batch(first)
                        row_shape = width_of(batch.column(schema.get_field_index(column)), (None,))
    except Exception as err:  # pyarrow raises ArrowException, OSError, UnicodeDecodeError, ...
        raise unreadable(path, "Arrow file", err) from None
    return IpcColumn(path, column, row_shape, dtype, rows, schema, offsets)


class ArrowArray(ArrowColumn):
    """An in-memory pyarrow Array or ChunkedArray (a table column), read chunk by chunk with
    no concatenation."""

    def __init__(self, array: Any, name: str) -> None:
        pa = _pyarrow("reading pyarrow arrays")
        chunks = list(array.chunks) if isinstance(array, pa.ChunkedArray) else [array]
        row_shape, dtype = layout(array.type, name)
        super().__init__("", name, sum(len(c) for c in chunks), width_of(array, row_shape), dtype)
        self._chunks = chunks
        self._starts = list(np.cumsum([0] + [len(c) for c in chunks]))

    def _where(self) -> str:
        return self.column

    def fingerprint(self) -> list:
        return [("arrow", list(self.shape), str(self.dtype))]

    def read_into(self, out: Tensor, start: int, stop: int) -> None:
        dest = self._out(out, start, stop)
        index = bisect.bisect_right(self._starts, start) - 1
        row = int(self._starts[max(index, 0)])
        for chunk in self._chunks[max(index, 0):]:
            if row >= stop:
                break
            lo, hi = max(start, row) - row, min(stop, row + len(chunk)) - row
            if hi > lo:
                self._copy(dest[row + lo - start: row + hi - start], chunk.slice(lo, hi - lo), row + lo)
            row += len(chunk)
