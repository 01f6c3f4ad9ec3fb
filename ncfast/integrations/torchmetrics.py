"""ClassStats as a torchmetrics ``Metric`` (pip install 'ncfast[torchmetrics]').

torchmetrics' hooks on one side, ClassStats' update and Chan's merge (``_state.merge_into``,
DESIGN.md section 3) on the other: the metric's registered states ARE the statistics' tensors
(counts, means, W, tr_c and optionally q_cj), so ``.to(device)``, ``reset()``, ``state_dict()``
and Lightning's checkpointing handle them like any metric state. Summing the states across
processes would be wrong (each rank centres on its own class means), so every state is
registered with ``dist_reduce_fx=None`` and the two places where torchmetrics combines states,
the distributed sync and ``merge_state`` (also used by ``forward``), fold them with the exact
merge instead.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torchmetrics
from torch import Tensor
from torchmetrics.utilities.distributed import gather_all_tensors

from .._state import StatsState, empty_state, merge_into, state_over
from ..metrics.registry import REGISTRY, score_stats
from ..stats import ClassStats

DEFAULT_SCORES = ("nc1", "nc1_trace", "cdnv", "nc2_etf", "logme", "h_score")
_STATS = ("counts", "means", "scatter", "class_scatter", "class_diag")


class ClassStatsMetric(torchmetrics.Metric):
    """Streaming class statistics of features, and their NC / transferability scores, as a
    torchmetrics ``Metric``.

    Parameters
    ----------
    num_classes : int
        K (labels in [0, K)); fixed, as metric states have fixed shapes.
    dim : int
        D, the feature width.
    scores : names
        What :meth:`compute` returns, from :data:`ncfast.metrics.registry.SCORES` (default
        NC1, NC1_tr, CDNV, NC2's ETF distance, LogME, H-score).
    per_class_diag, precision, nan_policy, backend
        As for :class:`~ncfast.ClassStats` (``per_class_diag=True`` is needed for "gbc").
    **kwargs
        torchmetrics' own (``process_group``, ``dist_sync_fn``, ``sync_on_compute``, ...).

    ``update(features, labels)`` is ClassStats' update ((B, D) float rows, (B,) int labels on
    the metric's device). ``compute()`` syncs across processes by the exact merge and returns
    ``{score: float64 0-d tensor}``, NaN where a score is undefined (the reason is in
    :attr:`notes`). :meth:`class_stats` gives the statistics as a ClassStats. Prefer
    ``update`` to ``forward``: ``forward`` also scores every batch on its own.

    States are float64 (int64 counts) and persistent (in ``state_dict``). A sync gathers every
    rank's states (``dist_sync_fn``, by default torchmetrics' all-gather) and merges them in
    rank order: transient memory of world_size x (D^2 + K D) float64 on each rank.
    """

    is_differentiable = False
    higher_is_better: Optional[bool] = None
    full_state_update = False

    def __init__(self, num_classes: int, dim: int, *, scores: Sequence[str] = DEFAULT_SCORES,
                 per_class_diag: bool = False, precision: str = "auto", nan_policy: str = "raise",
                 backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes is None:
            raise ValueError("num_classes: a metric needs a fixed number of classes, got None")
        # "sync": a CUDA update's verdict is read at once (a view's pending status would be lost)
        self._options = dict(precision=precision, nan_policy=nan_policy, backend=backend, validate="sync")
        ClassStats(num_classes, dim, per_class_diag=per_class_diag, **self._options)  # validates the options
        unknown = [s for s in scores if s not in REGISTRY]
        if unknown or isinstance(scores, str) or not scores:
            raise ValueError(f"scores: unknown {unknown or scores!r} (choose from {', '.join(REGISTRY)})")
        self.scores: List[str] = list(scores)
        self.notes: Dict[str, str] = {}
        fresh = empty_state(num_classes, dim, torch.device("cpu"), per_class_diag)
        for name in _STATS:
            default = getattr(fresh, name)
            if default is not None:
                self.add_state(name, default, dist_reduce_fx=None, persistent=True)
        self.add_state("skipped_rows", torch.zeros((), dtype=torch.int64), dist_reduce_fx=None, persistent=True)

    # ------------------------------------------------------------------ the statistics

    def _state_view(self) -> StatsState:
        """A StatsState over the metric's own state tensors (updates and merges land in them)."""
        return state_over(self.counts, self.means, self.scatter, self.class_scatter, getattr(self, "class_diag", None))

    def _stats_view(self) -> ClassStats:
        state = self._state_view()
        stats = ClassStats(state.num_classes, 1, device=state.device, **self._options)
        stats._state = state  # the (K, 1) placeholder state is dropped: no D x D allocation per batch
        return stats

    def update(self, features: Any, labels: Any) -> None:
        """Folds a batch into the statistics (:meth:`ncfast.ClassStats.update`)."""
        stats = self._stats_view()
        stats.update(features, labels)
        self.skipped_rows += stats.skipped_rows  # this batch's: a view starts at 0

    def class_stats(self) -> ClassStats:
        """A copy of the statistics as a :class:`~ncfast.ClassStats` (this rank's own, or every
        rank's inside ``sync_context()``)."""
        stats = self._stats_view().clone()
        stats._state.skipped_rows = int(self.skipped_rows)
        return stats

    def compute(self) -> Dict[str, Tensor]:
        """{score: float64 0-d tensor} on the metric's device; NaN where undefined (see notes)."""
        values, self.notes = score_stats(self._stats_view(), self.scores)
        nan = float("nan")
        return {name: torch.tensor(nan if v is None else v, dtype=torch.float64, device=self.counts.device)
                for name, v in values.items()}

    # ------------------------------------------------------------------ combining states: Chan's merge

    def _reduce_states(self, incoming_state: Dict[str, Any]) -> None:
        """``merge_state`` and ``forward``: this state <- this (+) incoming, exactly."""
        missing = [name for name in self._defaults if name not in incoming_state]
        if missing:
            raise ValueError(f"incoming_state: missing {', '.join(missing)}")
        mine = self._state_view()
        merge_into(mine, _state_from(incoming_state, mine.device))
        self.skipped_rows += incoming_state["skipped_rows"].to(self.skipped_rows.device)

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Optional[Any] = None) -> None:
        """The distributed sync: every rank's states gathered, then merged in rank order."""
        group = process_group or self.process_group
        gathered = {name: dist_sync_fn(getattr(self, name), group=group) for name in self._defaults}
        device = self.counts.device
        k, d = self.means.shape
        total = empty_state(k, d, device, "class_diag" in self._defaults)
        for rank in range(len(gathered["counts"])):
            merge_into(total, _state_from({name: parts[rank] for name, parts in gathered.items()}, device))
        for name in self._defaults:
            if name != "skipped_rows":
                setattr(self, name, getattr(total, name))
        self.skipped_rows = torch.stack([t.to(device) for t in gathered["skipped_rows"]]).sum()

    def __repr__(self) -> str:
        k, d = self.means.shape
        return f"ClassStatsMetric(num_classes={k}, dim={d}, rows={int(self.counts.sum())}, scores={self.scores})"


def _state_from(tensors: Dict[str, Tensor], device: torch.device) -> StatsState:
    """A StatsState over (copies on `device` of) one set of metric states."""
    diag = tensors.get("class_diag")
    return state_over(*(tensors[n].to(device) for n in _STATS[:4]), diag.to(device) if diag is not None else None)
