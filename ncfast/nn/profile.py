"""Per-layer neural-collapse tables: what NCMonitor.report() and finetune.nc_profile() return."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

from .._format import format_column
from ..metrics import cdnv, nc1, nc1_trace, nc2
from ..stats import ClassStats


@dataclass
class LayerNC:
    """Neural-collapse scores of one layer's features (None where undefined, see `note`)."""

    layer: str
    dim: int
    num_samples: int
    num_classes: int
    nc1: Optional[float] = None
    nc1_trace: Optional[float] = None
    cdnv: Optional[float] = None
    nc2_etf: Optional[float] = None
    nc2_equinorm: Optional[float] = None
    nc2_equiangularity: Optional[float] = None
    note: str = ""


_COLUMNS = ("nc1", "nc1_trace", "cdnv", "nc2_etf", "nc2_equinorm", "nc2_equiangularity")
SCORE_COLUMNS = _COLUMNS  # the score columns of a LayerNC, in table order


def layer_scores(layer: str, stats: Optional[ClassStats]) -> LayerNC:
    """The LayerNC row of one layer's statistics (all columns None before any batch)."""
    if stats is None or stats.num_samples == 0:
        return LayerNC(layer, stats.dim if stats is not None else 0, 0, 0, note="no batch seen")
    row = LayerNC(layer, stats.dim, stats.num_samples, int((stats.counts > 0).sum()))
    notes = []
    for name, fn in (("nc1", nc1), ("nc1_trace", nc1_trace), ("cdnv", cdnv)):
        try:
            setattr(row, name, fn(stats))
        except ValueError as err:
            notes.append(str(err))
    try:
        geometry = nc2(stats.centred_means())
        row.nc2_etf, row.nc2_equinorm = geometry.etf_distance, geometry.equinorm
        row.nc2_equiangularity = geometry.equiangularity
    except ValueError as err:
        notes.append(f"nc2: {err}")
    row.note = "; ".join(dict.fromkeys(notes))
    return row


class NCProfile:
    """Per-layer neural-collapse table, in the order the layers were given.

    ``profile["layer3"]`` is a :class:`LayerNC`; ``profile.column("nc1")`` a list over layers;
    ``to_dict()`` gives ``{layer: {score: value}}``; ``str(profile)`` a printable table;
    ``stats`` holds the {layer: ClassStats} it was computed from.
    Smaller NC1 / NC1_tr / CDNV / NC2 means more collapsed.
    """

    def __init__(self, rows: Sequence[LayerNC], stats: Optional[Mapping[str, ClassStats]] = None) -> None:
        self.rows: List[LayerNC] = list(rows)
        self.stats: Dict[str, ClassStats] = dict(stats or {})

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[LayerNC]:
        return iter(self.rows)

    def __getitem__(self, key: Union[int, str]) -> LayerNC:
        if isinstance(key, int):
            return self.rows[key]
        for row in self.rows:
            if row.layer == key:
                return row
        raise KeyError(f"layer {key!r} is not in this profile (layers: {', '.join(self.layers)})")

    @property
    def layers(self) -> List[str]:
        return [r.layer for r in self.rows]

    def column(self, score: str) -> List[Optional[float]]:
        if score not in {f.name for f in fields(LayerNC)}:
            raise ValueError(f"score: unknown {score!r} (choose from {', '.join(_COLUMNS)})")
        return [getattr(r, score) for r in self.rows]

    def to_dict(self) -> Dict[str, dict]:
        return {r.layer: {k: v for k, v in asdict(r).items() if k != "layer"} for r in self.rows}

    def __str__(self) -> str:
        head = ["layer", "dim", "rows", "K"] + list(_COLUMNS)
        columns = [format_column([getattr(r, c) for r in self.rows]) for c in _COLUMNS]  # one format a column
        body = []
        for i, r in enumerate(self.rows):
            cells = [r.layer, str(r.dim), str(r.num_samples), str(r.num_classes)]
            cells += [column[i] for column in columns]
            body.append(cells)
        widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(len(head))]
        lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
        for cells in body:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
        notes = [f"  {r.layer}: {r.note}" for r in self.rows if r.note]
        return "\n".join(lines + (["notes:"] + notes if notes else []))

    def __repr__(self) -> str:
        return f"NCProfile(layers={self.layers})"
