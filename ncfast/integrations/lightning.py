"""A Lightning callback that watches neural collapse in named layers while a model trains
(pip install 'ncfast[lightning]').

Lightning's hooks on one side, NCMonitor (ClassStats per layer, its history) and the exact
all-reduce on the other: the monitor's hooks are on only during training batches, each batch's
labels come from the batch, and every N steps or epochs the window's statistics are
all-reduced across ranks (DESIGN.md section 3's merge), scored, written to every logger of the
trainer (``logger.log_metrics``, at ``trainer.global_step``), recorded in the monitor's history
and forgotten.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from torch import Tensor

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    from pytorch_lightning import Callback

from ..metrics.registry import REGISTRY, score_stats
from ..nn.history import RECORDED, check_scores, scalars
from ..nn.monitor import NCMonitor
from ..nn.profile import NCProfile, layer_scores
from ..stats import ClassStats

TRANSFER_SCORES = tuple(name for name in REGISTRY if name not in RECORDED)


class NCMonitorCallback(Callback):
    """Per-layer NC scores of a LightningModule's training features, logged as it trains.

    Parameters
    ----------
    layers : names
        Submodules of the LightningModule (``named_modules()`` names, e.g. ``"net.layer3"``).
    num_classes : int or None
        K, as for :class:`~ncfast.NCMonitor`.
    every_n_steps, every_n_epochs : int or None
        When to report: after every N-th optimiser step, and/or at the end of every N-th
        training epoch (default: every epoch). Each report covers the training batches since
        the previous one.
    scores : names
        NCMonitor columns to log (default NC1, CDNV, NC2's ETF distance).
    transfer_scores : names
        Also log these registry scores per layer, e.g. ``("logme", "h_score")`` (one D x D
        eigendecomposition per layer and report).
    labels : callable, optional
        batch -> (B,) labels. Default: ``batch[1]`` for a tuple/list, ``batch["labels"]`` (or
        ``"label"``) for a dict.
    pool, per_class_diag
        As for NCMonitor (``per_class_diag=True`` for "gbc").
    prefix : str
        Logged names are ``<prefix>/<layer>/<score>``.

    The monitor (``callback.monitor``, with its ``history`` and ``plot``) exists from
    ``setup`` on. Its state goes into the checkpoint: the window's statistics (merged over the
    ranks) and the history, so a resumed fit logs what an uninterrupted one would.
    """

    def __init__(self, layers: Sequence[str], num_classes: Optional[int], *, every_n_steps: Optional[int] = None,
                 every_n_epochs: Optional[int] = 1, scores: Sequence[str] = ("nc1", "cdnv", "nc2_etf"),
                 transfer_scores: Sequence[str] = (), labels: Optional[Callable[[Any], Tensor]] = None,
                 pool: Any = "avg", per_class_diag: bool = False, prefix: str = "nc") -> None:
        for name, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected a positive int or None, got {value!r}")
        if every_n_steps is None and every_n_epochs is None:
            raise ValueError("every_n_steps, every_n_epochs: give at least one")
        check_scores(scores)
        unknown = [s for s in transfer_scores if s not in TRANSFER_SCORES]
        if unknown or isinstance(transfer_scores, str):
            raise ValueError(f"transfer_scores: unknown {unknown or transfer_scores!r} (choose from {', '.join(TRANSFER_SCORES)})")
        self.layers, self.num_classes = list(layers), num_classes
        self.every_n_steps, self.every_n_epochs = every_n_steps, every_n_epochs
        self.scores, self.transfer_scores = tuple(scores), tuple(transfer_scores)
        self.labels_of = labels or default_labels
        self.prefix = prefix
        self._monitor_options = dict(pool=pool, per_class_diag=per_class_diag)
        self.monitor: Optional[NCMonitor] = None
        self._rank, self._world = 0, 1
        self._last_step_report = -1

    # ------------------------------------------------------------------ Lightning's hooks

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._rank, self._world = trainer.global_rank, trainer.world_size
        if self.monitor is None:
            self.monitor = NCMonitor(pl_module, self.layers, self.num_classes, enabled=False, **self._monitor_options)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.monitor is not None:
            self.monitor.disable()

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self.monitor.set_labels(self.labels_of(batch))
        self.monitor.enable()

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.monitor.disable()
        self.monitor.clear_labels()
        step = trainer.global_step
        # with gradient accumulation several batches end on one step: report it once
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step_report:
            self._last_step_report = step
            self._report(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._report(trainer)

    def state_dict(self) -> Dict[str, Any]:
        """The monitor's state with the window's statistics merged over all ranks (every rank
        calls this when Lightning saves a checkpoint)."""
        if self.monitor is None:
            return {}
        state = self.monitor.state_dict()
        state["stats"] = {n: s.state_dict() for n, s in self._global_stats().items()}
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restores the history on every rank and the merged statistics on rank 0 only, so that
        the next all-reduce counts them once."""
        if not state_dict:
            return
        if self._rank != 0:
            state_dict = {**state_dict, "stats": {}}
        self.monitor.load_state_dict(state_dict)

    # ------------------------------------------------------------------ reporting

    def _global_stats(self) -> Dict[str, ClassStats]:
        """Copies of the window's statistics, all-reduced over the ranks when there are several.
        Ranks in a DDP fit see the same number of batches, so they agree on what they hold."""
        stats = {name: s.clone() for name, s in self.monitor.stats.items()}
        if self._world > 1 and stats:
            missing = [name for name in self.layers if name not in stats]
            if missing:
                raise RuntimeError(f"NCMonitorCallback: layers {missing} saw no training batch on rank {self._rank}")
            for layer_stats in stats.values():
                layer_stats.all_reduce()
        return stats

    def _report(self, trainer) -> Optional[NCProfile]:
        if not self.monitor.stats:  # nothing since the last report (a step report just before)
            return None
        stats = self._global_stats()
        profile = NCProfile([layer_scores(name, stats.get(name)) for name in self.layers], stats)
        extra = {name: score_stats(layer_stats, self.transfer_scores)[0] for name, layer_stats in stats.items()}
        self.monitor.record(trainer.global_step, epoch=trainer.current_epoch, profile=profile, extra=extra)
        values = scalars(profile, self.scores, self.prefix)
        for name, defined in extra.items():
            values.update({f"{self.prefix}/{name}/{s}": v for s, v in defined.items() if v is not None})
        if values:
            # straight to the loggers, as Lightning's LearningRateMonitor does: each value once, at
            # its step, in float64 (they are rank-zero-only and identical on every rank anyway)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        self.monitor.reset()
        return profile


def default_labels(batch: Any) -> Tensor:
    """``batch[1]`` of a tuple/list batch, ``batch["labels"]`` / ``batch["label"]`` of a dict."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    if isinstance(batch, dict):
        for key in ("labels", "label"):
            if key in batch:
                return batch[key]
    raise ValueError("batch: cannot find its labels (give NCMonitorCallback(labels=lambda batch: ...))")
