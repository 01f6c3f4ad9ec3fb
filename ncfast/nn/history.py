"""The per-layer scores an NCMonitor reported over training, and writing them to loggers.

A history is a long table: one record per (report, layer) with the step, the epoch and the
layer's :class:`~ncfast.nn.profile.LayerNC` columns. It is plain data (JSON-friendly lists and
dicts), so it goes into checkpoints, into ``ncfast.plots.plot_training`` and into pandas
(``pandas.DataFrame(history.records)``) alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from .profile import SCORE_COLUMNS, NCProfile

# What a report records and logs by default: the LayerNC columns.
RECORDED = SCORE_COLUMNS


class NCHistory:
    """Scores of every report, in the order they were made.

    ``records`` is a list of ``{"step", "epoch", "layer", "num_samples", <score>: value}``
    dicts (values None where a score was undefined); ``series(layer, score)`` gives the
    (steps, values) of one curve.
    """

    def __init__(self, records: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        self.records: List[Dict[str, Any]] = [dict(r) for r in (records or [])]

    def append(self, profile: NCProfile, step: int, epoch: Optional[int] = None,
               extra: Optional[Mapping[str, Mapping[str, Optional[float]]]] = None) -> None:
        """Adds one record per layer of `profile`, taken at `step` (and `epoch`); `extra`
        ({layer: {score: value}}) adds columns, e.g. transferability scores."""
        for row in profile:
            record = {"step": int(step), "epoch": None if epoch is None else int(epoch), "layer": row.layer,
                      "num_samples": row.num_samples}
            record.update({score: getattr(row, score) for score in RECORDED})
            record.update((extra or {}).get(row.layer, {}))
            self.records.append(record)

    @property
    def layers(self) -> List[str]:
        return list(dict.fromkeys(r["layer"] for r in self.records))

    @property
    def steps(self) -> List[int]:
        return list(dict.fromkeys(r["step"] for r in self.records))

    def series(self, layer: str, score: str) -> Tuple[List[int], List[Optional[float]]]:
        """(steps, values) of `score` for `layer`, in recording order."""
        rows = [r for r in self.records if r["layer"] == layer]
        if not rows:
            raise KeyError(f"layer {layer!r} has no record (layers: {', '.join(self.layers) or 'none yet'})")
        if score in ("step", "epoch", "layer") or not any(score in r for r in rows):
            known = sorted({k for r in rows for k in r} - {"step", "epoch", "layer"})
            raise ValueError(f"score: unknown {score!r} (recorded: {', '.join(known)})")
        return [r["step"] for r in rows], [r.get(score) for r in rows]

    def last_step(self) -> Optional[int]:
        return self.records[-1]["step"] if self.records else None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.records)

    def __repr__(self) -> str:
        return f"NCHistory(reports={len(self.steps)}, layers={self.layers})"


def check_scores(scores: Sequence[str]) -> None:
    unknown = [s for s in scores if s not in RECORDED]
    if unknown or isinstance(scores, str):
        raise ValueError(f"scores: unknown {unknown or scores!r} (choose from {', '.join(RECORDED)})")


def scalars(profile: NCProfile, scores: Sequence[str] = RECORDED, prefix: str = "nc") -> Dict[str, float]:
    """{"<prefix>/<layer>/<score>": value} for the defined, finite scores of a report."""
    check_scores(scores)
    out = {}
    for row in profile:
        for score in scores:
            value = getattr(row, score)
            if value is not None and math.isfinite(value):
                out[f"{prefix}/{row.layer}/{score}"] = float(value)
    return out


def write_scalars(logger: Any, values: Mapping[str, float], step: int) -> None:
    """Writes `values` at `step` to a TensorBoard ``SummaryWriter`` (anything with
    ``add_scalar``), a Lightning logger (``log_metrics``), or a callable such as ``wandb.log``
    (called as ``logger(values, step=step)``); a list of those gets the values each."""
    if isinstance(logger, (list, tuple)):
        for one in logger:
            write_scalars(one, values, step)
        return
    if hasattr(logger, "add_scalar"):
        for tag, value in values.items():
            logger.add_scalar(tag, value, step)
    elif hasattr(logger, "log_metrics"):
        logger.log_metrics(dict(values), step=step)
    elif callable(logger):
        call: Callable = logger
        call(dict(values), step=step)
    else:
        raise TypeError(
            f"logger: expected a SummaryWriter (add_scalar), a Lightning logger (log_metrics) or a callable "
            f"such as wandb.log, got {type(logger).__name__}"
        )
