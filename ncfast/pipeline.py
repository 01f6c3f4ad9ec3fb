"""One streaming pass over a feature dump into ClassStats: read-ahead, progress, checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Optional, Tuple, Union

import torch

from ._inputs import IGNORE_INDEX, check_ignore_index
from ._progress import Progress
from ._statecheck import whole_number
from .io import ArraySource, check_pair, default_chunk_rows, open_array, stream
from .stats import DEFAULT_MAX_CLASSES, ClassStats, load_stats, save_stats

_LABEL_SCAN_ROWS = 1 << 20  # at most this many labels read at once when their range is checked
_SAMPLE_BYTES = 256 << 10  # bytes of rows at each end of an input that a checkpoint's fingerprint hashes


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
    max_classes: int = DEFAULT_MAX_CLASSES,
    fourth_moments: bool = False,
    per_class_gram: bool = False,
    ignore_index: Optional[int] = IGNORE_INDEX,
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
    the optional statistics of :class:`ClassStats`. Rows labelled `ignore_index` (default -100,
    PyTorch's padding label; None: none) are left out and counted in ``stats.skipped_rows``.

    Before the pass the labels are read once (they are small next to the features) and a label
    outside [0, num_classes), or with ``num_classes=None`` at or beyond `max_classes`, raises
    ValueError naming its row and value. A checkpoint is used only when its digest, the
    fingerprint of the inputs (paths, sizes, modification times and a hash of the rows at both
    ends) and its own row count agree; an edited or damaged one raises ValueError."""
    if not isinstance(features, ArraySource):
        features = open_array(features, "features")
    if not isinstance(labels, ArraySource):
        labels = open_array(labels, "labels")
    check_pair(features, labels)
    first_row, stop_row = _row_range(row_range, features)
    dim = features.shape[1]
    if dim == 0:
        raise ValueError(f"features: {_where(features)}has 0 columns (shape {features.shape}); nothing to accumulate")
    if chunk_rows is not None:
        chunk_rows = whole_number(chunk_rows, "chunk_rows", low=1)
    chunk_rows = chunk_rows or default_chunk_rows(dim, features.dtype)
    ignore_index = check_ignore_index(ignore_index)
    _check_labels(labels, first_row, stop_row, num_classes, max_classes, min(chunk_rows, _LABEL_SCAN_ROWS),
                  ignore_index)
    identity = {
        "features": features.fingerprint(),
        "labels": labels.fingerprint(),
        # only a checkpoint needs it: the rows at both ends, hashed
        "content": [_content_sample(src, first_row, stop_row) for src in (features, labels)] if checkpoint else None,
        "num_classes": num_classes,
        "per_class_diag": per_class_diag,
        "chunk_rows": chunk_rows,
        "row_range": [first_row, stop_row],
        "nan_policy": nan_policy,
    }
    extras = {"fourth_moments": fourth_moments, "per_class_gram": per_class_gram}
    identity.update({k: v for k, v in extras.items() if v})  # absent when off: older checkpoints still match
    if ignore_index != IGNORE_INDEX:
        identity["ignore_index"] = ignore_index
    identity = _jsonable(identity)
    stats, start = None, first_row
    if checkpoint and os.path.exists(checkpoint):
        try:
            saved, extra = load_stats(checkpoint)
        except (ValueError, KeyError, RuntimeError) as err:
            raise ValueError(f"--checkpoint: {checkpoint} cannot be read ({err}); delete it to start over") from None
        if extra.get("identity") == identity:
            start = _rows_done(checkpoint, extra, saved, first_row, stop_row, chunk_rows)
            stats = saved.to(device) if device != "cpu" else saved
            _note(progress, f"resuming from {checkpoint} at row {start:,} of {stop_row:,}")
        else:
            _note(progress, f"{checkpoint} belongs to other data or options; starting over")
    if stats is None:
        stats = ClassStats(num_classes, dim, device=device, per_class_diag=per_class_diag, nan_policy=nan_policy,
                           max_classes=max_classes, **extras)
    every = checkpoint_every or max(chunk_rows, 10 * chunk_rows)
    every = max(chunk_rows, every - every % chunk_rows)  # checkpoints fall on chunk boundaries
    bar = Progress(stop_row - first_row, label=label, enabled=progress)
    bar.skip(start - first_row)
    since_save = 0
    chunks = stream(features, labels, chunk_rows=chunk_rows, start_row=start, stop_row=stop_row, device=device)
    for first, x, y in chunks:
        stats.update(x, y, ignore_index=ignore_index)
        bar.update(x.shape[0])
        since_save += x.shape[0]
        if checkpoint and since_save >= every and first + x.shape[0] < stop_row:
            save_stats(stats, checkpoint, {"identity": identity, "rows_done": first + x.shape[0]})
            since_save = 0
    bar.close()
    if checkpoint:
        save_stats(stats, checkpoint, {"identity": identity, "rows_done": stop_row})
    return stats


def _where(source: ArraySource) -> str:
    return f"{source.origin} " if source.origin else ""


def _row_range(row_range: Any, features: ArraySource) -> Tuple[int, int]:
    """(first, stop) of the rows to pass over, checked against the features' rows."""
    if row_range is None:
        return 0, features.rows
    try:
        first, stop = row_range
    except (TypeError, ValueError):
        raise ValueError(f"row_range: expected (first, stop), got {row_range!r}") from None
    for name, value in (("first", first), ("stop", stop)):
        value = whole_number(value, f"row_range: {name}", low=-(1 << 63))
        if value < 0:
            raise ValueError(f"row_range: {name} row {value} is negative (expected 0 <= first <= stop <= "
                             f"{features.rows:,})")
    if first > stop:
        raise ValueError(f"row_range: first row {first:,} is after stop {stop:,}")
    if stop > features.rows:
        raise ValueError(f"row_range: stop {stop:,} is past the end of the features {_where(features)}"
                         f"({features.rows:,} rows)")
    return int(first), int(stop)


def _check_labels(labels: ArraySource, first: int, stop: int, num_classes: Optional[int], max_classes: int,
                  block: int, ignore_index: Optional[int] = None) -> None:
    """One read of the labels before the pass, `block` rows at a time (no more than the pass
    reads at once): a stray label is refused before any work (and before it could grow the
    statistics to a size no real label set needs)."""
    limit = num_classes if num_classes is not None else max_classes
    buffer = None if labels.in_memory else torch.empty(min(block, max(1, stop - first)), dtype=labels.dtype)
    for start in range(first, stop, block):
        y = labels.read(start, min(stop, start + block), buffer)
        outside = (y < 0) | (y >= limit)
        if ignore_index is not None:
            outside &= y != ignore_index
        bad = outside.nonzero()
        if not bad.numel():
            continue
        row = int(bad[0, 0])
        value = int(y[row])
        where = f"labels: value {value} at row {start + row:,} {'of ' + labels.origin + ' ' if labels.origin else ''}"
        if value < 0:
            raise ValueError(where + "is negative")
        if num_classes is not None:
            raise ValueError(where + f"is outside [0, {num_classes}) (num_classes={num_classes})")
        raise ValueError(where + f"is beyond max_classes={max_classes:,} (give num_classes, or --num-classes, "
                         "if the labels really go that high)")


def _content_sample(source: ArraySource, first: int, stop: int) -> str:
    """SHA-256 of the rows at both ends of [first, stop): a file rewritten with the same size
    and modification time (cp -p, rsync -t) is not taken for the one a checkpoint belongs to."""
    row_bytes = max(1, source.dtype.itemsize * (source.shape[1] if len(source.shape) > 1 else 1))
    take = max(1, _SAMPLE_BYTES // row_bytes)
    h = hashlib.sha256()
    for a, b in ((first, min(stop, first + take)), (max(first, stop - take), stop)):
        if b > a:
            h.update(memoryview(source.read(a, b).contiguous().view(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _rows_done(path: str, extra: dict, saved: ClassStats, first: int, stop: int, chunk_rows: int) -> int:
    """The row a checkpoint resumes at, once it agrees with the rows the statistics hold."""
    done = extra.get("rows_done")
    if isinstance(done, bool) or not isinstance(done, int) or not first <= done <= stop:
        raise ValueError(f"--checkpoint: {path} is inconsistent (rows_done={done!r} is not a row in "
                         f"[{first:,}, {stop:,}]); delete it to start over")
    held = saved.num_samples + saved.skipped_rows
    if held != done - first or ((done - first) % chunk_rows and done != stop):
        raise ValueError(f"--checkpoint: {path} is inconsistent (it says {done - first:,} rows are done but its "
                         f"statistics hold {held:,}); delete it to start over")
    return done


def _note(enabled: bool, message: str) -> None:
    if enabled:
        print(f"ncfast: {message}", file=sys.stderr)


def _jsonable(value):
    """Round-trips through JSON, so a saved identity compares equal to a fresh one."""
    return json.loads(json.dumps(value))
