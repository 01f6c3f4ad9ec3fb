"""Sources: a 2-D (features) or 1-D (labels) array that hands out row ranges, made of the
Parts of one or more files (every format in :mod:`ncfast.io.formats`), or held in memory.

A path is ``FILE``, ``FILE:KEY`` (a tensor, dataset, member or column; ``:0`` for a list or
tuple position), a folder or a glob of shards of one format (concatenated in name order), or
a Hugging Face ``save_to_disk`` folder. An existing path always wins over the ``:KEY`` syntax,
so ``run:1/x.npy`` is the file of that name.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .._inputs import to_tensor
from .arrow_arrays import is_arrow
from .formats import open_part, sniff
from .part import Part, element_size

PathLike = Union[str, os.PathLike]
_GLOB = "*?["


class ArraySource:
    """Rows of a file, a set of shards, or an in-memory array, read chunk by chunk.

    Attributes
    ----------
    shape : tuple of int
        (rows, *row_shape), known without reading data.
    dtype : torch.dtype
        The dtype of the rows handed out.
    """

    def __init__(self, segments: Sequence[Part] = (), array: Optional[Tensor] = None, name: str = "",
                 origin: str = "") -> None:
        self.name = name
        self.origin = origin  # the path or pattern it was opened from ("" for an array)
        self._array = array
        self._parts = list(segments)
        if array is not None:
            self.shape, self.dtype = tuple(array.shape), array.dtype
        else:
            for p in self._parts:
                if not all(isinstance(s, int) and s >= 0 for s in p.shape):
                    raise ValueError(f"{p.path or name}: holds an array of shape {p.shape}")
            tails = {p.shape[1:] for p in self._parts}
            dtypes = {p.dtype for p in self._parts}
            if len(tails) != 1 or len(dtypes) != 1:
                raise ValueError(f"{name}: shards disagree in shape or dtype ({sorted(map(str, tails))}, "
                                 f"{sorted(map(str, dtypes))})")
            self.shape = (sum(p.rows for p in self._parts),) + tails.pop()
            self.dtype = dtypes.pop()
        self._starts = np.cumsum([0] + [p.rows for p in self._parts])

    @property
    def in_memory(self) -> bool:
        return self._array is not None

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def parts(self) -> List[Part]:
        return list(self._parts)

    def fingerprint(self) -> list:
        """Identifies the data for checkpoint resume: paths, sizes, modification times."""
        if self._array is not None:
            return [("array", list(self.shape), str(self.dtype))]
        return [entry for p in self._parts for entry in p.fingerprint()]

    def read(self, start: int, stop: int, out: Optional[Tensor] = None) -> Tensor:
        """Rows [start, stop) as a tensor (into `out` when given, which must be large enough)."""
        if not 0 <= start <= stop <= self.rows:
            raise ValueError(f"{self.name}: rows [{start}, {stop}) are not inside [0, {self.rows}]")
        if self._array is not None:
            return self._array[start:stop]
        shape = (stop - start,) + self.shape[1:]
        out = torch.empty(shape, dtype=self.dtype) if out is None else out.view(-1)[: int(np.prod(shape))].view(shape)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        row = start
        while row < stop:
            part = self._parts[first]
            part_start = int(self._starts[first])
            take = min(stop, part_start + part.rows) - row
            if take > 0:
                part.read_into(out[row - start: row - start + take], row - part_start, row - part_start + take)
            row += max(take, 0)
            first += 1
        return out


def split_key(spec: str) -> Tuple[str, Optional[str]]:
    """(path, key) of ``PATH`` or ``PATH:KEY``: the longest existing path (or matching glob)
    before a colon wins, so colons inside file names need no escaping."""
    if os.path.lexists(spec):
        return spec, None
    at = len(spec)
    while True:
        at = spec.rfind(":", 0, at)
        if at <= 0:
            return spec, None
        head = spec[:at]
        if os.path.lexists(head) or (any(c in head for c in _GLOB) and glob.glob(head)):
            return head, spec[at + 1:]


def _shard_names(folder: str, name: str) -> List[str]:
    """The data files of a folder, in name order: a Hugging Face save_to_disk folder lists its
    own; otherwise every regular file whose name does not start with '.' or '_' (metadata
    such as _SUCCESS or _common_metadata, hidden files)."""
    state = os.path.join(folder, "state.json")
    if os.path.isfile(state) and os.path.isfile(os.path.join(folder, "dataset_info.json")):
        try:
            with open(state) as f:
                files = [entry["filename"] for entry in json.load(f)["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{name}: {state} cannot be read ({err})") from None
        return [os.path.join(folder, os.path.basename(str(f))) for f in files]
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        splits = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        raise ValueError(f"{name}: {folder} is a DatasetDict with the splits {splits}; give one, e.g. "
                         f"{os.path.join(folder, splits[0] if splits else 'train')}")
    names = sorted(n for n in os.listdir(folder) if not n.startswith((".", "_")))
    paths = [os.path.join(folder, n) for n in names if not os.path.isdir(os.path.join(folder, n))]
    if not paths:
        raise FileNotFoundError(f"{name}: folder {folder} holds no data files")
    return paths


def resolve(spec: str, name: str) -> Tuple[List[str], Optional[str]]:
    """The files a path spec names, in order, and the key to select in each."""
    path, key = split_key(spec)
    if os.path.isdir(path):
        return _shard_names(path, name), key
    if not os.path.lexists(path) and any(c in path for c in _GLOB):
        paths = sorted(glob.glob(path))
        if not paths:
            raise FileNotFoundError(f"{name}: no file matches {spec}")
        folders = [p for p in paths if os.path.isdir(p)]
        if folders:
            raise ValueError(f"{name}: {spec} matches the folder {folders[0]}; match files only")
        return paths, key
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{name}: no such file: {spec}")
    return [path], key


def _open_shards(paths: List[str], key: Optional[str], name: str) -> List[Part]:
    kinds = [sniff(p) for p in paths]
    if len(set(kinds)) > 1:
        seen = {}
        for p, k in zip(paths, kinds):
            seen.setdefault(k, os.path.basename(p))
        listed = ", ".join(f"{k} ({p})" for k, p in seen.items())
        raise ValueError(f"{name}: the shards are of several formats: {listed}; keep one format per folder, or "
                         "select the shards with a glob such as folder/*.npy")
    return [open_part(p, key, kind) for p, kind in zip(paths, kinds)]


def open_array(spec: Any, name: str = "features") -> ArraySource:
    """An ArraySource for a path spec, an in-memory array, or a data-frame column.

    Parameters
    ----------
    spec
        A path: a file of any format ncfast reads (recognised by its first bytes), with
        ``:KEY`` to select a tensor / dataset / member / column; a folder or glob of shards of
        one format; a Hugging Face ``save_to_disk`` folder. Or a NumPy array or torch tensor,
        a pyarrow Array / ChunkedArray (a table column), a ``datasets`` column
        (``ds["embedding"]``) or one-column Dataset.
    name
        What the array is, for messages ("features", "labels").
    """
    if isinstance(spec, (np.ndarray, Tensor)):
        return ArraySource(array=to_tensor(spec, name), name=name)
    if is_arrow(spec) and not isinstance(spec, (str, os.PathLike)):
        from .arrow import ArrowArray

        return ArraySource([ArrowArray(spec, name)], name=name)
    from .hfdatasets import is_dataset

    if is_dataset(spec):
        from .hfdatasets import DatasetColumn

        return ArraySource([DatasetColumn(spec, name)], name=name)
    if not isinstance(spec, (str, os.PathLike)):
        return ArraySource(array=to_tensor(spec, name), name=name)
    spec = os.fspath(spec)
    paths, key = resolve(spec, name)
    return ArraySource(_open_shards(paths, key, name), name=name, origin=spec)


def check_pair(features: ArraySource, labels: ArraySource) -> None:
    if len(features.shape) != 2:
        raise ValueError(f"features: expected a 2-D (rows, dim) array{_where(features)}, got shape {features.shape}")
    if len(labels.shape) != 1:
        raise ValueError(f"labels: expected a 1-D array{_where(labels)}, got shape {labels.shape}")
    if labels.rows != features.rows:
        raise ValueError(f"labels: {labels.rows} labels for {features.rows} feature rows")
    if labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"labels: dtype {_dtype_name(labels.dtype)}{_where(labels)} is not int32/int64 "
                         "(convert it first, e.g. y.astype(np.int64))")
    if features.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"features: dtype {_dtype_name(features.dtype)}{_where(features)} is not "
                         "float32/float64/float16/bfloat16 (convert it first, e.g. x.astype(np.float32))")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _where(source: ArraySource) -> str:
    return f" in {source.origin}" if source.origin else ""


def default_chunk_rows(dim: int, dtype: torch.dtype, budget_bytes: int = 64 << 20) -> int:
    return max(1, budget_bytes // (max(1, dim) * element_size(dtype)))
