"""LEEP and NCE from a streamed source-prediction x target-label table.

LEEP (Nguyen et al., ICML 2020): with the source model's class probabilities theta(x) and the
empirical conditional P(y|z) = P(z, y) / P(z) from the soft joint
P(z, y) = (1/N) sum_i theta_z(x_i) 1[y_i = y],
LEEP = (1/N) sum_i log sum_z P(y_i|z) theta_z(x_i). The log of a per-row mixture does not
decompose over the table, so soft predictions need a second pass (:meth:`JointStats.leep_pass`);
with hard (argmax) predictions it reduces to the table and equals NCE.
NCE (Tran et al., ICCV 2019) = -H(Y|Z) = sum_{z,y} P(z,y) log P(y|z) over the hard joint.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._inputs import check_label_range, to_tensor


def _labels(value: Any, name: str, rows: Optional[int], high: int, device) -> Tensor:
    t = to_tensor(value, name)
    if t.dtype not in (torch.int32, torch.int64) or t.ndim != 1:
        raise TypeError(f"{name}: expected a 1-D int32/int64 array, got {t.dtype} of shape {tuple(t.shape)}")
    if rows is not None and t.shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} entries, got {t.shape[0]}")
    check_label_range(t, high, name)
    return t.to(device=device, dtype=torch.int64)


def _log_conditional(joint: Tensor, what: str) -> Tensor:
    """log P(y|z) with 0 log 0 = 0 handled by the callers' weights."""
    marginal = joint.sum(dim=1, keepdim=True)
    return torch.log(joint / marginal.clamp(min=torch.finfo(torch.float64).tiny)).nan_to_num(neginf=0.0)


class JointStats:
    """Streams the (K_s x K_t) joint of source predictions and target labels.

    ``update(source, target)``: ``source`` is either (B, K_s) source-model probabilities
    (rows summing to 1) or (B,) source argmax labels; ``target`` is (B,) target labels.
    """

    def __init__(self, num_source: int, num_target: int, *, device: Any = None) -> None:
        if num_source < 1 or num_target < 1:
            raise ValueError("num_source and num_target must be positive")
        self.num_source, self.num_target = num_source, num_target
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self.soft = torch.zeros(num_source, num_target, dtype=torch.float64, device=self._device)
        self.hard = torch.zeros(num_source, num_target, dtype=torch.float64, device=self._device)
        self.num_samples = 0
        self.all_hard = True

    def update(self, source: Any, target: Any) -> "JointStats":
        src = to_tensor(source, "source").to(self._device)
        y = _labels(target, "target", src.shape[0], self.num_target, self._device)
        if src.ndim == 2:
            if src.shape[1] != self.num_source or not src.is_floating_point():
                raise ValueError(f"source: expected (B, {self.num_source}) probabilities, got {tuple(src.shape)} {src.dtype}")
            probs = src.to(torch.float64)
            z = probs.argmax(dim=1)
            self.soft.T.index_add_(0, y, probs)
            self.all_hard = False
        else:
            z = _labels(src, "source", None, self.num_source, self._device)
            self.soft.index_put_((z, y), torch.ones_like(z, dtype=torch.float64), accumulate=True)
        self.hard.index_put_((z, y), torch.ones_like(z, dtype=torch.float64), accumulate=True)
        self.num_samples += y.shape[0]
        return self

    def _require_rows(self, what: str) -> None:
        if self.num_samples == 0:
            raise ValueError(f"{what}: no rows seen yet")

    def nce(self) -> float:
        """Negative conditional entropy of target given the source argmax (higher is better)."""
        self._require_rows("nce")
        p = self.hard / self.num_samples
        return float((p * _log_conditional(self.hard, "nce")).sum())

    def leep(self) -> float:
        """LEEP, exact when every update gave hard source labels; soft probabilities need
        :meth:`leep_pass` (a second pass)."""
        self._require_rows("leep")
        if not self.all_hard:
            raise ValueError("leep: soft source probabilities need a second pass; use joint.leep_pass()")
        return self.nce()

    def leep_pass(self) -> "LEEPPass":
        """Accumulator for LEEP's second pass, using this table's P(y|z)."""
        self._require_rows("leep_pass")
        return LEEPPass(self.soft / self.soft.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny))


class LEEPPass:
    """Second pass of LEEP: ``update(probs, target)`` over the same rows, then ``value``."""

    def __init__(self, conditional: Tensor) -> None:
        self._conditional = conditional  # (K_s, K_t) P(y|z)
        self._log_sum = 0.0
        self.num_samples = 0

    def update(self, source_probs: Any, target: Any) -> "LEEPPass":
        probs = to_tensor(source_probs, "source_probs").to(self._conditional.device, torch.float64)
        ks, kt = self._conditional.shape
        if probs.ndim != 2 or probs.shape[1] != ks:
            raise ValueError(f"source_probs: expected (B, {ks}), got {tuple(probs.shape)}")
        y = _labels(target, "target", probs.shape[0], kt, self._conditional.device)
        eep = (probs * self._conditional[:, y].T).sum(dim=1)
        self._log_sum += float(torch.log(eep).sum())
        self.num_samples += y.shape[0]
        return self

    @property
    def value(self) -> float:
        if self.num_samples == 0:
            raise ValueError("leep: no rows seen in the second pass")
        return self._log_sum / self.num_samples
