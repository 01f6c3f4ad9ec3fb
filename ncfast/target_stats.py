"""TargetStats: streaming sufficient statistics of features with real-valued targets, for LogME
on regression and multi-label tasks (thuml's ``LogME(regression=True)``; DESIGN.md section 4).

Per stream: N rows, the feature mean and centred scatter (a one-class :class:`ClassStats`,
so the native kernels do the D x D work), the target mean, the centred cross scatter
S_fy = sum_i (f_i - fbar)(y_i - ybar)^T (D x C) and the target scatter S_yy (C x C). Every
raw moment LogME needs follows exactly: F^T F = S_ff + N fbar fbar^T, F^T y_c = S_fy[:, c] +
N fbar ybar_c, ||y_c||^2 = S_yy[c, c] + N ybar_c^2. Updates and merges use Chan's pairwise
formula, so any order of batches and shards gives the same statistics up to rounding.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ._allreduce import comm_device, require_initialised
from ._inputs import as_features, to_tensor
from .io.atomic import atomic_path
from .stats import ClassStats

_STATE_VERSION = 1
_BLOCK_ENTRIES = 1 << 20


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


class TargetStats:
    """Features with C real-valued targets per row (regression, or one column per label of a
    multi-label task), in one pass; memory O(D^2 + D C + C^2).

    Parameters
    ----------
    dim : int
        D, the number of feature columns.
    num_targets : int
        C, the number of target columns.
    device, precision, nan_policy, backend
        As for :class:`ncfast.ClassStats` (the feature scatter is one). Under
        ``nan_policy="skip"`` a row whose features or targets hold NaN/Inf is dropped and
        counted in ``skipped_rows``; under "raise" it is an error naming the row.

    Examples
    --------
    >>> t = TargetStats(dim=64, num_targets=3)
    >>> t.update(torch.randn(500, 64), torch.randn(500, 3))  # doctest: +ELLIPSIS
    <ncfast.target_stats.TargetStats ...>
    >>> from ncfast import metrics
    >>> score = metrics.logme(t)  # mean evidence per target column
    """

    def __init__(self, dim: int, num_targets: int, *, device: Union[str, torch.device, None] = None,
                 precision: str = "auto", nan_policy: str = "raise", backend: str = "auto") -> None:
        dim = _positive(dim, "dim")
        num_targets = _positive(num_targets, "num_targets")
        self._features = ClassStats(1, dim, device=device, precision=precision, nan_policy=nan_policy,
                                    backend=backend)
        device = self._features.device
        self._target_mean = torch.zeros(num_targets, dtype=torch.float64, device=device)
        self._cross = torch.zeros(dim, num_targets, dtype=torch.float64, device=device)
        self._target_scatter = torch.zeros(num_targets, num_targets, dtype=torch.float64, device=device)
        self._skipped = 0

    # ------------------------------------------------------------------ update / merge

    def update(self, features: Any, targets: Any) -> "TargetStats":
        """Folds a batch in.

        Parameters
        ----------
        features : Tensor or ndarray, shape (B, D)
            float32, float64, float16 or bfloat16.
        targets : Tensor or ndarray, shape (B, C) or (B,) when C = 1
            Any floating dtype (or integer / bool, e.g. 0/1 labels); converted to float64.

        Raises ValueError/TypeError naming the bad argument; on error nothing is changed.
        """
        x = as_features(features, self.dim)
        y = self._as_targets(targets, x.shape[0])
        if x.device != self.device or y.device != self.device:
            raise ValueError(f"features/targets: on {x.device}/{y.device} but the statistics are on {self.device}")
        finite = torch.isfinite(x).all(dim=1) & torch.isfinite(y).all(dim=1)
        skipped = 0
        if not bool(finite.all()):
            if self.nan_policy == "raise":
                row = int((~finite).nonzero()[0, 0])
                raise ValueError(f"features/targets: row {row} holds NaN or Inf "
                                 "(pass nan_policy='skip' to drop such rows)")
            skipped = int((~finite).sum())
            x, y = x[finite], y[finite]
        if x.shape[0]:
            n_a = float(self.num_samples)
            f_mean_a = self._features._state.means[0].clone()
            y_mean_b, cross_b, scatter_b, f_mean_b = self._chunk_moments(x, y)
            self._features.update(x, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device))
            self._fold(n_a, f_mean_a, float(x.shape[0]), f_mean_b, y_mean_b, cross_b, scatter_b)
        self._skipped += skipped
        return self

    def _as_targets(self, targets: Any, rows: int) -> Tensor:
        y = to_tensor(targets, "targets")
        if y.ndim == 1 and self.num_targets == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape != (rows, self.num_targets):
            raise ValueError(f"targets: expected shape ({rows}, {self.num_targets}), got {tuple(y.shape)}")
        if y.is_complex():
            raise TypeError(f"targets: dtype {y.dtype} is not supported (use real numbers)")
        return y.to(torch.float64)

    def _chunk_moments(self, x: Tensor, y: Tensor):
        """The chunk's target mean, centred cross scatter, target scatter and feature mean."""
        step = max(1, _BLOCK_ENTRIES // self.dim)  # rows widened to float64 a block at a time
        f_mean = torch.zeros(self.dim, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], step):
            f_mean += x[start : start + step].to(torch.float64).sum(dim=0)
        f_mean /= x.shape[0]
        y_mean = y.mean(dim=0)
        yc = y - y_mean
        cross = torch.zeros(self.dim, self.num_targets, dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], step):
            cross += (x[start : start + step].to(torch.float64) - f_mean).T @ yc[start : start + step]
        return y_mean, cross, yc.T @ yc, f_mean

    def _fold(self, n_a: float, f_mean_a: Tensor, n_b: float, f_mean_b: Tensor, y_mean_b: Tensor,
              cross_b: Tensor, scatter_b: Tensor) -> None:
        """Chan's merge of the target moments: S_fy = S_fy^A + S_fy^B + (n_A n_B / n) df dy^T."""
        n = n_a + n_b
        df = f_mean_b - f_mean_a
        dy = y_mean_b - self._target_mean
        w = n_a * n_b / n
        self._cross += cross_b + w * torch.outer(df, dy)
        scatter = self._target_scatter + scatter_b + w * torch.outer(dy, dy)
        self._target_scatter.copy_(0.5 * (scatter + scatter.T))
        self._target_mean += (n_b / n) * dy

    def merge(self, other: "TargetStats") -> "TargetStats":
        """In-place merge with the statistics of another stream (Chan et al.)."""
        if not isinstance(other, TargetStats):
            raise TypeError(f"other: expected TargetStats, got {type(other).__name__}")
        if (other.dim, other.num_targets) != (self.dim, self.num_targets):
            raise ValueError(f"other: (dim, num_targets) {(other.dim, other.num_targets)} does not match "
                             f"{(self.dim, self.num_targets)}")
        if other.device != self.device:
            raise ValueError(f"other: on {other.device} but these statistics are on {self.device}")
        if other.num_samples:
            n_a = float(self.num_samples)
            f_mean_a = self._features._state.means[0].clone()
            f_mean_b = other._features._state.means[0]
            self._features.merge(other._features)
            self._fold(n_a, f_mean_a, float(other.num_samples), f_mean_b, other._target_mean, other._cross,
                       other._target_scatter)
        self._skipped += other._skipped
        return self

    def all_reduce(self, group: Optional[Any] = None) -> "TargetStats":
        """Replaces these statistics, on every rank of `group`, by those of all ranks' rows
        together (exact: global means first, then each rank's centred moments plus its
        correction, as in :meth:`ClassStats.all_reduce`)."""
        dist = require_initialised()
        if dist.get_world_size(group) == 1:
            return self
        device = comm_device(dist, group, self.device)
        n_r = float(self.num_samples)
        f_mean_r = self._features._state.means[0].to(device)
        first = torch.cat([torch.tensor([n_r], dtype=torch.float64, device=device), n_r * f_mean_r,
                           n_r * self._target_mean.to(device)])
        dist.all_reduce(first, op=dist.ReduceOp.SUM, group=group)
        n = float(first[0])
        d, c = self.dim, self.num_targets
        f_mean = first[1 : 1 + d] / max(n, 1.0)
        y_mean = first[1 + d :] / max(n, 1.0)
        df, dy = f_mean_r - f_mean, self._target_mean.to(device) - y_mean
        second = torch.cat([(self._cross.to(device) + n_r * torch.outer(df, dy)).reshape(-1),
                            (self._target_scatter.to(device) + n_r * torch.outer(dy, dy)).reshape(-1),
                            torch.tensor([float(self._skipped)], dtype=torch.float64, device=device)])
        dist.all_reduce(second, op=dist.ReduceOp.SUM, group=group)
        self._features.all_reduce(group)
        home = self.device
        self._cross.copy_(second[: d * c].reshape(d, c).to(home))
        self._target_scatter.copy_(second[d * c : d * c + c * c].reshape(c, c).to(home))
        self._target_mean.copy_(y_mean.to(home))
        self._skipped = int(round(float(second[-1])))
        return self

    def __iadd__(self, other: "TargetStats") -> "TargetStats":
        return self.merge(other)

    # ------------------------------------------------------------------ statistics

    @property
    def dim(self) -> int:
        return self._features.dim

    @property
    def num_targets(self) -> int:
        return self._target_mean.shape[0]

    @property
    def device(self) -> torch.device:
        return self._features.device

    @property
    def nan_policy(self) -> str:
        return self._features.nan_policy

    @property
    def num_samples(self) -> int:
        """N, the rows folded in (skipped rows excluded)."""
        return self._features.num_samples

    @property
    def skipped_rows(self) -> int:
        return self._skipped

    def _require_samples(self, what: str) -> int:
        n = self.num_samples
        if n == 0:
            raise ValueError(f"{what}: undefined before any row was seen (call update first)")
        return n

    @property
    def feature_mean(self) -> Tensor:
        """(D,) float64 mean of the feature rows."""
        return self._features._state.means[0].clone()

    @property
    def target_mean(self) -> Tensor:
        """(C,) float64 mean of the target rows."""
        return self._target_mean.clone()

    def gram(self) -> Tensor:
        """(D, D) float64 raw Gram F^T F (LogME's input)."""
        self._require_samples("gram")
        return self._features.gram()

    def feature_target_products(self) -> Tensor:
        """(D, C) float64 raw F^T Y = S_fy + N fbar ybar^T."""
        n = self._require_samples("feature_target_products")
        return self._cross + n * torch.outer(self._features._state.means[0], self._target_mean)

    def target_products(self) -> Tensor:
        """(C, C) float64 raw Y^T Y = S_yy + N ybar ybar^T (its diagonal: ||y_c||^2)."""
        n = self._require_samples("target_products")
        return self._target_scatter + n * torch.outer(self._target_mean, self._target_mean)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        return {
            "version": _STATE_VERSION,
            "dim": self.dim,
            "num_targets": self.num_targets,
            "features": self._features.state_dict(),
            "target_mean": self._target_mean.clone(),
            "cross": self._cross.clone(),
            "target_scatter": self._target_scatter.clone(),
            "skipped_rows": self._skipped,
        }

    def load_state_dict(self, state_dict: dict) -> "TargetStats":
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        if state_dict.get("version") != _STATE_VERSION:
            raise ValueError(f"state_dict: version {state_dict.get('version')!r} is not supported "
                             f"(expected {_STATE_VERSION})")
        missing = [k for k in ("dim", "num_targets", "features", "target_mean", "cross", "target_scatter")
                   if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict: missing {', '.join(missing)}")
        d, c = int(state_dict["dim"]), int(state_dict["num_targets"])
        if (d, c) != (self.dim, self.num_targets):
            raise ValueError(f"state_dict: (dim, num_targets) {(d, c)} does not match {(self.dim, self.num_targets)}")
        shapes = {"target_mean": (c,), "cross": (d, c), "target_scatter": (c, c)}
        for name, shape in shapes.items():
            if tuple(state_dict[name].shape) != shape:
                raise ValueError(f"state_dict: {name} has shape {tuple(state_dict[name].shape)}, expected {shape}")
        features = ClassStats(1, d, **{k: v for k, v in self._features._options().items()})
        features.load_state_dict(state_dict["features"])
        self._features = features
        for name, target in (("target_mean", self._target_mean), ("cross", self._cross),
                             ("target_scatter", self._target_scatter)):
            target.copy_(state_dict[name].to(torch.float64))
        self._skipped = int(state_dict.get("skipped_rows", 0))
        return self

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes the state dict with torch.save (atomically)."""
        with atomic_path(os.fspath(path)) as tmp:
            torch.save({"options": self._options(), "state": self.state_dict()}, tmp)

    @staticmethod
    def load(path: Union[str, os.PathLike]) -> "TargetStats":
        """Reads statistics written by :meth:`save` (onto the CPU)."""
        blob = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        options = dict(blob["options"], device="cpu")
        state = blob["state"]
        return TargetStats(state["dim"], state["num_targets"], **options).load_state_dict(state)

    def _options(self) -> dict:
        opts = self._features._options()
        return {k: opts[k] for k in ("device", "precision", "nan_policy", "backend")}

    def __getstate__(self) -> dict:
        return {"options": self._options(), "state": self.state_dict()}

    def __setstate__(self, data: dict) -> None:
        state = data["state"]
        self.__init__(state["dim"], state["num_targets"], **data["options"])
        self.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"TargetStats(dim={self.dim}, num_targets={self.num_targets}, "
                f"num_samples={self._features._raw_state.counts.sum().item()}, device={self.device})")
