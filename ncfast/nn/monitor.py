"""NCMonitor: neural-collapse statistics of chosen layers, accumulated by forward hooks while a
model trains or runs (DESIGN.md sections 1 and 7). One ClassStats per layer; no activation is
kept and nothing enters the autograd graph."""

from __future__ import annotations

import contextlib
import difflib
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .._inputs import to_tensor
from ..stats import ClassStats
from ._modules import module_device
from ._pool import Pool, check_pool, pool_kind, pool_rows
from .history import RECORDED, NCHistory, check_scores, scalars, write_scalars
from .profile import NCProfile, layer_scores

_STATE_VERSION = 1


# ---------------------------------------------------------------------------------- monitor


class _LayerStats(Mapping):
    """Read-only {layer: ClassStats} over the layers that have seen a batch."""

    def __init__(self, monitor: "NCMonitor") -> None:
        self._monitor = monitor

    def __getitem__(self, layer: str) -> ClassStats:
        m = self._monitor
        if layer not in m.layers:
            raise KeyError(f"layer {layer!r} is not monitored (monitored: {', '.join(m.layers)})")
        if layer not in m._stats:
            raise KeyError(f"layer {layer!r} has seen no batch yet (set labels and run a forward first)")
        return m._stats[layer]

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._monitor.layers if name in self._monitor._stats)

    def __len__(self) -> int:
        return len(self._monitor._stats)


class NCMonitor:
    """Accumulates one :class:`~ncfast.ClassStats` per named layer from forward hooks.

    Parameters
    ----------
    model : nn.Module
        The model; `layers` are names from ``model.named_modules()``.
    layers : sequence of str
        Modules whose output is monitored, e.g. ``["layer1", "layer4", "fc"]``.
    num_classes : int or None
        K (labels in [0, K)); None grows K with the labels seen.
    pool : "avg", "flatten", a callable, or a dict {layer: one of those}
        How an output (B, C, *spatial) becomes (B, D) rows: "avg" global-average-pools every
        dimension after the channel one (D = C), "flatten" keeps all (D = C*H*W). (B, D) outputs
        pass through. A callable maps the output to (B, D) (e.g. ``lambda t: t[:, 0]`` for a
        transformer's class token).
    per_class_diag, precision, backend
        Passed to each ClassStats.
    enabled : bool
        Register the hooks now (default) or wait for :meth:`enable`.

    Labels are given per batch, before its forward::

        monitor = NCMonitor(model, ["layer2", "layer4"], num_classes=10)
        for x, y in loader:
            with monitor.labels(y):
                loss = criterion(model(x), y)
            ...
        print(monitor.report())

    Each monitored layer counts the labels once; a forward without fresh labels raises (use
    ``with monitor.disabled():`` for unlabelled forwards). The statistics live on the device of
    the layer's output and follow it if the model moves; labels are moved there too. Hooks
    run under ``torch.no_grad()`` and read a detached output, so the monitor adds nothing to
    the autograd graph. While disabled the hooks are removed (no cost at all).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        num_classes: Optional[int],
        *,
        pool: Union[Pool, Dict[str, Pool]] = "avg",
        per_class_diag: bool = False,
        precision: str = "auto",
        backend: str = "auto",
        enabled: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers: expected a non-empty list of module names, got {layers!r}")
        layers = list(layers)
        dupes = sorted({n for n in layers if layers.count(n) > 1})
        if dupes:
            raise ValueError(f"layers: {', '.join(map(repr, dupes))} given more than once")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes: expected a positive int or None, got {num_classes!r}")
        self._model = model
        self._layers = layers
        self._modules = resolve_modules(model, layers)
        self._pool = _per_layer_pool(pool, layers)
        self._num_classes = num_classes
        self._options = dict(per_class_diag=per_class_diag, precision=precision, backend=backend)
        ClassStats(num_classes, 1, **self._options)  # validates the options now, not at the first batch
        self._stats: Dict[str, ClassStats] = {}
        self._handles: list = []
        self._removed = False
        self._labels: Optional[Tensor] = None
        self._labels_on: Dict[torch.device, Tensor] = {}
        self._counted: set = set()
        self._history = NCHistory()
        if enabled:
            self.enable()

    # ------------------------------------------------------------------ labels

    def set_labels(self, labels: Any) -> "NCMonitor":
        """Labels of the next batch: a (B,) int32/int64 tensor or array, one per input row.
        Every monitored layer counts them once."""
        y = to_tensor(labels, "labels")
        if y.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"labels: dtype {y.dtype} is not supported (use int32 or int64 class indices)")
        if y.ndim != 1:
            raise ValueError(f"labels: expected a 1-D array, got shape {tuple(y.shape)}")
        self._labels, self._labels_on, self._counted = y, {}, set()
        return self

    def clear_labels(self) -> None:
        self._labels, self._labels_on, self._counted = None, {}, set()

    @contextlib.contextmanager
    def labels(self, labels: Any) -> Iterator["NCMonitor"]:
        """``with monitor.labels(y): model(x)`` -- labels for the forwards inside the block."""
        self.set_labels(labels)
        try:
            yield self
        finally:
            self.clear_labels()

    # ------------------------------------------------------------------ enable / disable

    @property
    def is_enabled(self) -> bool:
        return bool(self._handles)

    def enable(self) -> "NCMonitor":
        """Registers the forward hooks (no-op when already enabled)."""
        if self._removed:
            raise RuntimeError("NCMonitor: remove() was called; create a new monitor to hook the model again")
        if not self._handles:
            self._handles = [m.register_forward_hook(self._make_hook(n)) for n, m in zip(self._layers, self._modules)]
        return self

    def disable(self) -> "NCMonitor":
        """Removes the hooks: forwards cost nothing extra until :meth:`enable`. Statistics stay."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self

    @contextlib.contextmanager
    def enabled(self) -> Iterator["NCMonitor"]:
        """Enabled inside the block, then back to the previous state."""
        was = self.is_enabled
        self.enable()
        try:
            yield self
        finally:
            if not was:
                self.disable()

    @contextlib.contextmanager
    def disabled(self) -> Iterator["NCMonitor"]:
        """Disabled inside the block (e.g. evaluation on unlabelled data), then restored."""
        was = self.is_enabled
        self.disable()
        try:
            yield self
        finally:
            if was:
                self.enable()

    def remove(self) -> None:
        """Removes the hooks for good; the statistics stay readable."""
        self.disable()
        self._removed = True

    def __enter__(self) -> "NCMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------------ the hook

    def _make_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._observe(name, module, output)

        return hook

    def _observe(self, name: str, module: nn.Module, output: Any) -> None:
        where = f"NCMonitor layer {name!r} ({type(module).__name__})"
        if not isinstance(output, Tensor):
            raise TypeError(
                f"{where}: output is a {type(output).__name__}, not a tensor; monitor a submodule whose "
                "output is a tensor, or pass pool=callable for this layer"
            )
        y = self._labels
        if y is None:
            raise ValueError(
                f"labels: not set for this batch at {where}; call monitor.set_labels(y) or use "
                "`with monitor.labels(y):` before the forward (or `with monitor.disabled():` for unlabelled data)"
            )
        if name in self._counted:
            raise ValueError(
                f"labels: {where} already counted the current labels (a second forward without new labels, "
                "or the module runs twice per forward); set labels before every forward"
            )
        if y.shape[0] != output.shape[0]:
            raise ValueError(f"labels: {y.shape[0]} labels but {where} output has batch size {output.shape[0]}")
        with torch.no_grad():
            rows = pool_rows(output.detach(), self._pool[name], where)
            stats = self._stats_for(name, rows)
            labels = self._labels_on.get(rows.device)
            if labels is None:
                labels = self._labels_on[rows.device] = y.to(rows.device, non_blocking=True)
            try:
                stats.update(rows, labels)
            except (ValueError, TypeError) as err:
                raise type(err)(f"{where}: {err}") from err
        self._counted.add(name)

    def _stats_for(self, name: str, rows: Tensor) -> ClassStats:
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = ClassStats(self._num_classes, rows.shape[1], device=rows.device, **self._options)
        elif stats.device != rows.device:  # the model moved: the statistics follow it
            stats = self._stats[name] = stats.to(rows.device)
        if stats.dim != rows.shape[1]:
            raise ValueError(
                f"NCMonitor layer {name!r}: output has {rows.shape[1]} features per row but earlier batches had {stats.dim}"
            )
        return stats

    # ------------------------------------------------------------------ results

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def layers(self) -> List[str]:
        return list(self._layers)

    @property
    def stats(self) -> Mapping[str, ClassStats]:
        """{layer: ClassStats} for the layers that have seen a batch (read-only mapping)."""
        return _LayerStats(self)

    def __getitem__(self, layer: str) -> ClassStats:
        return self.stats[layer]

    def report(self) -> NCProfile:
        """NC1, NC1_tr, CDNV and NC2 (ETF distance, equinorm, equiangularity) per layer."""
        return NCProfile([layer_scores(name, self._stats.get(name)) for name in self._layers], self._stats)

    def reset(self, history: bool = False) -> "NCMonitor":
        """Forgets every batch seen (the hooks stay as they are); ``history=True`` also clears
        the recorded reports."""
        self._stats = {}
        self.clear_labels()
        if history:
            self._history = NCHistory()
        return self

    # ------------------------------------------------------------------ history and logging

    @property
    def history(self) -> NCHistory:
        """Every report made by :meth:`record` / :meth:`log`, one record per layer."""
        return self._history

    def record(self, step: Optional[int] = None, *, epoch: Optional[int] = None,
               profile: Optional[NCProfile] = None, extra: Optional[dict] = None) -> NCProfile:
        """Reports the scores now and appends them to :attr:`history` at `step` (default: the
        last recorded step + 1, starting at 0). `profile` records a report made elsewhere (e.g.
        of statistics all-reduced across ranks) instead of this monitor's own; `extra`
        ({layer: {score: value}}) adds columns."""
        profile = self.report() if profile is None else profile
        if step is None:
            last = self._history.last_step()
            step = 0 if last is None else last + 1
        self._history.append(profile, step, epoch, extra)
        return profile

    def log(self, logger: Any = None, step: Optional[int] = None, *, epoch: Optional[int] = None,
            scores: Sequence[str] = RECORDED, prefix: str = "nc") -> NCProfile:
        """Records a report (see :meth:`record`) and writes its scores as scalars
        ``<prefix>/<layer>/<score>`` to `logger`: a TensorBoard ``SummaryWriter``, a Lightning
        logger, a callable such as ``wandb.log`` (called ``logger(values, step=step)``), a list
        of those, or None (history only). Undefined scores are left out."""
        check_scores(scores)
        profile = self.record(step, epoch=epoch)
        values = scalars(profile, scores, prefix)
        if logger is not None and values:
            write_scalars(logger, values, self._history.last_step())
        return profile

    def plot(self, path: str, scores: Sequence[str] = ("nc1", "cdnv", "nc2_etf"), xlabel: str = "step") -> None:
        """Draws the per-layer curves of `scores` over the recorded steps to the PNG `path`
        (:func:`ncfast.plots.plot_training`; needs matplotlib)."""
        from ..plots.training import plot_training

        plot_training(self._history, path, scores=scores, xlabel=xlabel)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """The per-layer statistics and the options that must match on load; save it next to
        the model's: ``torch.save({"model": model.state_dict(), "nc": monitor.state_dict()}, f)``."""
        return {
            "version": _STATE_VERSION,
            "layers": list(self._layers),
            "num_classes": self._num_classes,
            "pool": {n: pool_kind(p) for n, p in self._pool.items()},
            "per_class_diag": self._options["per_class_diag"],
            "stats": {n: s.state_dict() for n, s in self._stats.items()},
            "history": [dict(r) for r in self._history.records],
        }

    def load_state_dict(self, state_dict: dict) -> "NCMonitor":
        """Replaces the statistics with saved ones, placed on each layer's parameter device."""
        if not isinstance(state_dict, dict) or state_dict.get("version") != _STATE_VERSION:
            found = state_dict.get("version") if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"state_dict: not an NCMonitor state (version {found!r}, expected {_STATE_VERSION})")
        if list(state_dict["layers"]) != self._layers:
            raise ValueError(f"state_dict: saved for layers {state_dict['layers']}, this monitor has {self._layers}")
        if state_dict["num_classes"] != self._num_classes:
            raise ValueError(f"state_dict: saved with num_classes={state_dict['num_classes']}, this monitor has {self._num_classes}")
        pools = {n: pool_kind(p) for n, p in self._pool.items()}
        if state_dict["pool"] != pools:
            raise ValueError(f"state_dict: saved with pool={state_dict['pool']}, this monitor has {pools}")
        loaded = {}
        for name, saved in state_dict["stats"].items():
            device = module_device(self._modules[self._layers.index(name)], self._model) or torch.device("cpu")
            stats = ClassStats(self._num_classes, int(saved["dim"]), device=device, **self._options)
            try:
                loaded[name] = stats.load_state_dict(saved)
            except ValueError as err:
                raise ValueError(f"state_dict: layer {name!r}: {err}") from err
        self._stats = loaded
        self._history = NCHistory(state_dict.get("history", []))
        self.clear_labels()
        return self

    def __repr__(self) -> str:
        seen = {n: s.num_samples for n, s in self._stats.items()}
        return f"NCMonitor(layers={self._layers}, num_classes={self._num_classes}, enabled={self.is_enabled}, rows={seen})"


# ---------------------------------------------------------------------------------- helpers


def resolve_modules(model: nn.Module, names: Sequence[str]) -> List[nn.Module]:
    """The submodules called `names`; an unknown name raises ValueError listing close ones."""
    table = dict(model.named_modules())
    out = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layers: expected module names (str), got {type(name).__name__} {name!r}")
        if name not in table:
            choices = [n for n in table if n]
            close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else f"top-level names: {', '.join(n for n in choices if '.' not in n)}"
            raise ValueError(f"layers: no module named {name!r} in {type(model).__name__} ({hint})")
        out.append(table[name])
    return out


def _per_layer_pool(pool, layers: Sequence[str]) -> Dict[str, Pool]:
    if isinstance(pool, dict):
        unknown = sorted(set(pool) - set(layers))
        if unknown:
            raise ValueError(f"pool: names {unknown} are not among layers {list(layers)}")
        return {n: check_pool(pool.get(n, "avg"), f"pool[{n!r}]") for n in layers}
    check_pool(pool)
    return {n: pool for n in layers}
