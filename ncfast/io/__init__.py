"""Reading and writing: one module per file format, the read-ahead stream, atomic writes and
the statistics file format. Nothing here knows ClassStats: the statistics' own ``save`` and
``load`` build on :mod:`ncfast.io.statsfile`, and the pass over a dump is
:func:`ncfast.accumulate`.

- ``part``: the reader interface (:class:`Part`: shape and dtype without reading, a row
  range into a caller's buffer); ``segment``: a run of rows at a byte offset
- ``formats``: the format of a file from its first bytes, and the Part that reads it
- the formats: ``npy``, ``npz``, ``pt`` (torch.save), ``safetensors``, ``hdf5`` (h5py),
  ``arrow`` (Parquet, Arrow IPC / Feather, HF datasets folders; pyarrow), ``hfdatasets``
  (live ``datasets`` objects), ``bigann`` (.fbin / .fvecs families), ``text`` (labels)
- ``sources``: :class:`ArraySource` and :func:`open_array`, the row ranges of a path spec
  (``file:key``, folders and globs of shards) or an in-memory array
- ``stream``: chunks read ahead by a background thread into recycled buffers
- ``statsfile``: statistics and checkpoints as ``.safetensors`` or ``.pt``
- ``atomic``: files replaced whole or not at all
"""

from __future__ import annotations

from .formats import READS, SPEC_HELP
from .part import Part
from .sources import ArraySource, check_pair, default_chunk_rows, open_array
from .stream import stream

__all__ = ["ArraySource", "Part", "READS", "SPEC_HELP", "check_pair", "default_chunk_rows", "open_array", "stream"]
