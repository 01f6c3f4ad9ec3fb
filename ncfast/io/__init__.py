"""Reading and writing: one module per file format, the read-ahead stream, atomic writes and
the statistics file format. Nothing here knows ClassStats: the statistics' own ``save`` and
``load`` build on :mod:`ncfast.io.statsfile`, and the pass over a dump is
:func:`ncfast.accumulate`.

- ``sources``: :class:`ArraySource` and :func:`open_array`, the row ranges of a path or an array
- ``npy``, ``safetensors``: the formats (``segment``: a run of rows at a byte offset)
- ``stream``: chunks read ahead by a background thread into recycled buffers
- ``statsfile``: statistics and checkpoints as ``.safetensors`` or ``.pt``
- ``atomic``: files replaced whole or not at all
"""

from __future__ import annotations

from .sources import ArraySource, check_pair, default_chunk_rows, open_array
from .stream import stream

__all__ = ["ArraySource", "check_pair", "default_chunk_rows", "open_array", "stream"]
