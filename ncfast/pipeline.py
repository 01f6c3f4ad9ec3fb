"""One streaming pass over a feature dump into ClassStats: read-ahead, progress, checkpoints."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Tuple, Union


from ._progress import Progress
from .io import ArraySource, check_pair, default_chunk_rows, open_array, stream
from .stats import ClassStats, load_stats, save_stats


def accumulate(
    features: Union[ArraySource, str, os.PathLike, Any],
    labels: Union[ArraySource, str, os.PathLike, Any],
    *,
    num_classes: Optional[int] = None,
    per_class_diag: bool = False,
    device: str = "cpu",
    chunk_rows: Optional[int] = None,
    checkpoint: Optional[str] = None,
    checkpoint_every: Optional[int] = None,
    progress: bool = True,
    label: str = "",
    row_range: Optional[Tuple[int, int]] = None,
    nan_policy: str = "raise",
    fourth_moments: bool = False,
    per_class_gram: bool = False,
) -> ClassStats:
    """Streams (features, labels) through ClassStats in one pass.

    With `checkpoint`, the statistics and the number of rows done are saved there every
    `checkpoint_every` rows (atomically); when the file exists and belongs to the same data
    and options, the pass resumes from it and ends with exactly the statistics an
    uninterrupted pass gives (same chunk boundaries, same operations).

    `features` and `labels` are ArraySources or anything `ncfast.io.open_array` opens: a path
    to a file in any format ncfast reads (FILE:KEY for one array of it; a folder or glob of
    shards), a NumPy array or tensor, a pyarrow column or a ``datasets`` column.
    `row_range` = (first, stop) restricts the pass to those rows (one rank's share).
    `nan_policy`: "raise" (a row with NaN/Inf stops the pass) or "skip" (such rows are dropped
    and counted in ``stats.skipped_rows``). `per_class_diag`, `fourth_moments`, `per_class_gram`:
    the optional statistics of :class:`ClassStats`."""
    if not isinstance(features, ArraySource):
        features = open_array(features, "features")
    if not isinstance(labels, ArraySource):
        labels = open_array(labels, "labels")
    check_pair(features, labels)
    first_row, stop_row = row_range if row_range is not None else (0, features.rows)
    if not 0 <= first_row <= stop_row <= features.rows:
        raise ValueError(f"row_range: ({first_row}, {stop_row}) is not inside [0, {features.rows}]")
    dim = features.shape[1]
    chunk_rows = chunk_rows or default_chunk_rows(dim, features.dtype)
    identity = {
        "features": features.fingerprint(),
        "labels": labels.fingerprint(),
        "num_classes": num_classes,
        "per_class_diag": per_class_diag,
        "chunk_rows": chunk_rows,
        "row_range": [first_row, stop_row],
        "nan_policy": nan_policy,
    }
    extras = {"fourth_moments": fourth_moments, "per_class_gram": per_class_gram}
    identity.update({k: v for k, v in extras.items() if v})  # absent when off: older checkpoints still match
    identity = _jsonable(identity)
    stats, start = None, first_row
    if checkpoint and os.path.exists(checkpoint):
        try:
            saved, extra = load_stats(checkpoint)
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"--checkpoint: {checkpoint} cannot be read ({err}); delete it to start over") from None
        if extra.get("identity") == identity:
            stats, start = saved.to(device) if device != "cpu" else saved, int(extra["rows_done"])
            _note(progress, f"resuming from {checkpoint} at row {start:,} of {stop_row:,}")
        else:
            _note(progress, f"{checkpoint} belongs to other data or options; starting over")
    if stats is None:
        stats = ClassStats(num_classes, dim, device=device, per_class_diag=per_class_diag, nan_policy=nan_policy,
                           **extras)
    every = checkpoint_every or max(chunk_rows, 10 * chunk_rows)
    every = max(chunk_rows, every - every % chunk_rows)  # checkpoints fall on chunk boundaries
    bar = Progress(stop_row - first_row, label=label, enabled=progress)
    bar.skip(start - first_row)
    since_save = 0
    chunks = stream(features, labels, chunk_rows=chunk_rows, start_row=start, stop_row=stop_row, device=device)
    for first, x, y in chunks:
        stats.update(x, y)
        bar.update(x.shape[0])
        since_save += x.shape[0]
        if checkpoint and since_save >= every and first + x.shape[0] < stop_row:
            save_stats(stats, checkpoint, {"identity": identity, "rows_done": first + x.shape[0]})
            since_save = 0
    bar.close()
    if checkpoint:
        save_stats(stats, checkpoint, {"identity": identity, "rows_done": stop_row})
    return stats


def _note(enabled: bool, message: str) -> None:
    if enabled:
        print(f"ncfast: {message}", file=sys.stderr)


def _jsonable(value):
    """Round-trips through JSON, so a saved identity compares equal to a fresh one."""
    import json

    return json.loads(json.dumps(value))
