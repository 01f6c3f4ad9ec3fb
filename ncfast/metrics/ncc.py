"""NC4 and nearest-class-centre accuracy: a second streaming pass with the class means fixed
(DESIGN.md section 4, NC4)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..backend.dispatch import NAN_POLICIES
from .._inputs import as_features, as_labels, check_label_range

# Rows per chunk are chosen so a chunk's (rows x K) score matrix stays under this many entries.
_SCORE_ENTRIES = 1 << 22


class NCCStats:
    """Counts, over a stream of rows, how often the nearest class centre argmin_c ||x - mu_c||
    is the true label (NCC accuracy) and how often it differs from the classifier's
    argmax_c (w_c . x + b_c) (NC4; the bias is included when given).

    Parameters
    ----------
    means : (K, D) tensor
        Class centres, usually ``stats.means`` after a first pass.
    classifier : (K, D) tensor, optional
        Linear classifier rows W; ``bias`` (K,) optional.
    nan_policy : "raise" (default) or "skip"
        Rows with NaN/Inf: an error, or dropped and counted in ``skipped_rows``
        (``from_stats`` takes the first pass's policy).
    valid : (K,) bool tensor, optional
        Classes that may be chosen as nearest centre (default: all). ``from_stats`` passes the
        classes that had rows.
    """

    def __init__(
        self,
        means: Tensor,
        classifier: Optional[Tensor] = None,
        bias: Optional[Tensor] = None,
        *,
        valid: Optional[Tensor] = None,
        device: Any = None,
        nan_policy: str = "raise",
    ) -> None:
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected 'raise' or 'skip', got {nan_policy!r}")
        self.nan_policy = nan_policy
        mu = torch.as_tensor(means)
        device = torch.device(device) if device is not None else mu.device
        mu = mu.to(device=device, dtype=torch.float64)
        if mu.ndim != 2 or mu.shape[0] < 2:
            raise ValueError(f"means: expected a (K, D) matrix with K >= 2, got shape {tuple(mu.shape)}")
        k, d = mu.shape
        # Centre everything on the mean of the centres, so the expanded squared distance
        # ||x||^2 - 2 x.mu + ||mu||^2 does not cancel away large common offsets.
        self._origin = mu.mean(dim=0)
        self._mu = mu - self._origin
        self._mu_sq = (self._mu * self._mu).sum(dim=1)
        if valid is not None:
            valid = torch.as_tensor(valid, device=device, dtype=torch.bool)
            self._mu_sq = torch.where(valid, self._mu_sq, torch.full_like(self._mu_sq, float("inf")))
        self._w = self._b = None
        if classifier is not None:
            w = torch.as_tensor(classifier).to(device=device, dtype=torch.float64)
            if tuple(w.shape) != (k, d):
                raise ValueError(f"classifier: expected shape ({k}, {d}), got {tuple(w.shape)}")
            self._w = w
            self._b = torch.zeros(k, dtype=torch.float64, device=device)
            if bias is not None:
                b = torch.as_tensor(bias).to(device=device, dtype=torch.float64)
                if tuple(b.shape) != (k,):
                    raise ValueError(f"bias: expected shape ({k},), got {tuple(b.shape)}")
                self._b = b
        self._device = device
        self.num_samples = 0
        self.num_labelled = 0
        self.ncc_correct = 0
        self.classifier_correct = 0
        self.mismatches = 0
        self.skipped_rows = 0

    @classmethod
    def from_stats(cls, stats, classifier: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> "NCCStats":
        """Second pass for statistics from a first pass: centres are the class means of the
        classes that had rows; rows with NaN/Inf are treated as the first pass treated them."""
        return cls(stats.means, classifier, bias, valid=stats.counts > 0, device=stats.device,
                   nan_policy=stats.nan_policy)

    @property
    def num_classes(self) -> int:
        return self._mu.shape[0]

    @property
    def dim(self) -> int:
        return self._mu.shape[1]

    def update(self, features: Any, labels: Any = None) -> "NCCStats":
        """Folds a batch in. `labels` (int32/int64 in [0, K)) are needed for the accuracies,
        not for NC4. Raises ValueError, counting nothing, for a label out of range, and for a
        row with NaN/Inf unless ``nan_policy="skip"`` (then such rows are dropped and counted
        in ``skipped_rows``)."""
        x = as_features(features, self.dim)
        y = as_labels(labels, x.shape[0]) if labels is not None else None
        for name, t in (("features", x), ("labels", y)):
            if t is not None and t.device != self._device:
                raise ValueError(f"{name}: on {t.device} but NCCStats is on {self._device}")
        if y is not None:
            check_label_range(y, self.num_classes)
        if x.numel():
            finite = torch.isfinite(x).all(dim=1)
            if not bool(finite.all()):
                if self.nan_policy == "raise":
                    row = int((~finite).nonzero()[0, 0])
                    raise ValueError(f"features: row {row} holds NaN or Inf; NCCStats counts only finite rows "
                                     "(nan_policy='skip' drops them)")
                self.skipped_rows += int((~finite).sum())
                x = x[finite]
                y = y[finite] if y is not None else None
        step = max(1, _SCORE_ENTRIES // self.num_classes)
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step].to(torch.float64)
            centred = chunk - self._origin
            nearest = (2.0 * centred @ self._mu.T - self._mu_sq).argmax(dim=1)
            if self._w is not None:
                predicted = (chunk @ self._w.T + self._b).argmax(dim=1)
                self.mismatches += int((predicted != nearest).sum())
            if y is not None:
                truth = y[start : start + step]
                self.ncc_correct += int((nearest == truth).sum())
                if self._w is not None:
                    self.classifier_correct += int((predicted == truth).sum())
                self.num_labelled += chunk.shape[0]
            self.num_samples += chunk.shape[0]
        return self

    _COUNTERS = ("num_samples", "num_labelled", "ncc_correct", "classifier_correct", "mismatches", "skipped_rows")

    def all_reduce(self, group: Optional[Any] = None) -> "NCCStats":
        """Sums the counters of all ranks (torch.distributed), so every rank holds the
        accuracies and NC4 of all ranks' rows."""
        from .._allreduce import comm_device, require_initialised

        dist = require_initialised()
        device = comm_device(dist, group, self._device)
        counters = torch.tensor([getattr(self, n) for n in self._COUNTERS], dtype=torch.int64, device=device)
        dist.all_reduce(counters, op=dist.ReduceOp.SUM, group=group)
        for name, value in zip(self._COUNTERS, counters.tolist()):
            setattr(self, name, int(value))
        return self

    def _fraction(self, count: int, total: int, what: str) -> float:
        if total == 0:
            raise ValueError(f"{what}: no rows seen yet (call update with features and labels)")
        return count / total

    @property
    def nc4(self) -> float:
        """Fraction of rows where the nearest class centre and the classifier disagree."""
        if self._w is None:
            raise ValueError("nc4: needs a classifier (pass classifier= when creating NCCStats)")
        return self._fraction(self.mismatches, self.num_samples, "nc4")

    @property
    def ncc_accuracy(self) -> float:
        return self._fraction(self.ncc_correct, self.num_labelled, "ncc_accuracy")

    @property
    def classifier_accuracy(self) -> float:
        if self._w is None:
            raise ValueError("classifier_accuracy: no classifier was given")
        return self._fraction(self.classifier_correct, self.num_labelled, "classifier_accuracy")
