"""NC4 and nearest-class-centre accuracy: a second streaming pass with the class means fixed
(DESIGN.md section 4, NC4).

The pass is a matrix product per chunk, done in the input's precision (float32 for float32 and
16-bit rows, float64 for float64 rows) against centres and classifier kept in float64 and cast
once; only the decisions (argmin / argmax) leave the product, and the counts are exact integers.
Rows are centred on the mean of the centres first when the features carry a common offset
large against the spread of the centres (where a float32 product would lose the digits that
separate the classes); otherwise the offset is folded, exactly, into the per-class constants."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..backend.dispatch import NAN_POLICIES
from .._inputs import as_features, as_labels, check_label_range

# Rows per chunk are chosen so a chunk's (rows x K) score matrix and (rows x D) working copy stay
# under this many entries.
_SCORE_ENTRIES = 1 << 22
# Centre the rows before the product when |mean of centres| exceeds this many RMS centre spreads.
_OFFSET_RATIO = 8.0


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
        # Distances are taken about the mean of the centres, where ||x - mu_c||^2 ranks as
        # -(2 (x - o).mu'_c - ||mu'_c||^2) with mu'_c = mu_c - o; see the module docstring.
        self._origin = mu.mean(dim=0)
        self._mu = mu - self._origin
        self._mu_sq = (self._mu * self._mu).sum(dim=1)
        spread = float(self._mu_sq.mean()) ** 0.5
        self._centre_rows = float(self._origin.norm()) > _OFFSET_RATIO * spread
        if valid is not None:
            valid = torch.as_tensor(valid, device=device, dtype=torch.bool)
            self._mu_sq = torch.where(valid, self._mu_sq, torch.full_like(self._mu_sq, float("inf")))
        self._cast: dict = {}
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
        self.class_rows = torch.zeros(k, dtype=torch.int64, device=device)  # labelled rows per true class
        self.class_agreements = torch.zeros(k, dtype=torch.int64, device=device)  # NCC == classifier

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

    def _operands(self, dtype: torch.dtype):
        """[2 mu'^T | W^T] (D, K or 2K) and the per-class constants [-||mu'||^2 | b] in the
        product's precision, cast once per dtype; the origin is folded into the constants
        exactly (float64) when rows are not centred. One product serves both decisions."""
        if dtype not in self._cast:
            ncc_bias = -self._mu_sq
            if not self._centre_rows:
                ncc_bias = ncc_bias - 2.0 * (self._mu @ self._origin)
            mats, biases = [2.0 * self._mu.T], [ncc_bias]
            if self._w is not None:
                mats.append(self._w.T)
                biases.append(self._b + self._w @ self._origin if self._centre_rows else self._b)
            self._cast[dtype] = (torch.cat(mats, dim=1).to(dtype).contiguous(), torch.cat(biases).to(dtype))
        return self._cast[dtype]

    def _decide(self, chunk: Tensor):
        """(nearest centre, classifier argmax or None, rows whose product was not finite)."""
        dtype = torch.float64 if chunk.dtype == torch.float64 else torch.float32
        weights, bias = self._operands(dtype)
        if self._centre_rows:
            rows = torch.sub(chunk, self._origin.to(dtype))
        else:
            rows = chunk if chunk.dtype == dtype else chunk.to(dtype)
        scores = torch.addmm(bias, rows, weights)
        k = self.num_classes
        best, nearest = scores[:, :k].max(dim=1)
        bad = ~torch.isfinite(best)  # a NaN/Inf row, or a float32 overflow
        predicted = None
        if self._w is not None:
            top, predicted = scores[:, k:].max(dim=1)
            bad |= ~torch.isfinite(top)
        return nearest, predicted, bad

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
        counts = dict.fromkeys(("num_samples", "num_labelled", "ncc_correct", "classifier_correct",
                                "mismatches", "skipped_rows"), 0)
        class_rows = torch.zeros_like(self.class_rows)
        class_agreements = torch.zeros_like(self.class_agreements)
        copies = self._centre_rows or x.dtype not in (torch.float32, torch.float64)  # a (rows x D) working copy
        width = 2 * self.num_classes if self._w is not None else self.num_classes
        step = max(1, _SCORE_ENTRIES // (max(width, self.dim) if copies else width))
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step]
            truth = y[start : start + step] if y is not None else None
            nearest, predicted, bad = self._decide(chunk)
            if bool(bad.any()):
                finite = torch.isfinite(chunk).all(dim=1)
                if not bool(finite.all()):
                    if self.nan_policy == "raise":
                        row = start + int((~finite).nonzero()[0, 0])
                        raise ValueError(f"features: row {row} holds NaN or Inf; NCCStats counts only finite rows "
                                         "(nan_policy='skip' drops them)")
                    counts["skipped_rows"] += int((~finite).sum())
                    chunk = chunk[finite]
                    truth = truth[finite] if truth is not None else None
                # finite rows whose low-precision product overflowed: decide them in float64
                nearest, predicted, _ = self._decide(chunk.to(torch.float64))
            if predicted is not None:
                agree = predicted == nearest
                counts["mismatches"] += chunk.shape[0] - int(agree.sum())
            if truth is not None:
                counts["ncc_correct"] += int((nearest == truth).sum())
                if predicted is not None:
                    counts["classifier_correct"] += int((predicted == truth).sum())
                    # one bincount gives, per class, the rows (even + odd) and the agreements (odd)
                    both = torch.bincount(2 * truth + agree, minlength=2 * self.num_classes).view(-1, 2)
                    class_rows += both.sum(dim=1)
                    class_agreements += both[:, 1]
                else:
                    class_rows += torch.bincount(truth, minlength=self.num_classes)
                counts["num_labelled"] += chunk.shape[0]
            counts["num_samples"] += chunk.shape[0]
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)
        self.class_rows += class_rows
        self.class_agreements += class_agreements
        return self

    _COUNTERS = ("num_samples", "num_labelled", "ncc_correct", "classifier_correct", "mismatches", "skipped_rows")

    def all_reduce(self, group: Optional[Any] = None) -> "NCCStats":
        """Sums the counters of all ranks (torch.distributed), so every rank holds the
        accuracies and NC4 of all ranks' rows."""
        from .._allreduce import comm_device, require_initialised

        dist = require_initialised()
        device = comm_device(dist, group, self._device)
        scalars = torch.tensor([getattr(self, n) for n in self._COUNTERS], dtype=torch.int64, device=device)
        counters = torch.cat([scalars, self.class_rows.to(device), self.class_agreements.to(device)])
        dist.all_reduce(counters, op=dist.ReduceOp.SUM, group=group)
        scalars, k = len(self._COUNTERS), self.num_classes
        for name, value in zip(self._COUNTERS, counters[:scalars].tolist()):
            setattr(self, name, int(value))
        self.class_rows.copy_(counters[scalars : scalars + k])
        self.class_agreements.copy_(counters[scalars + k :])
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
    def class_agreement(self) -> Tensor:
        """(K,) float64: per true class, the fraction of its labelled rows where the nearest
        class centre and the classifier agree (rhubarbwu's per-class NC4 agreement); NaN for a
        class without labelled rows. Needs a classifier and labels."""
        if self._w is None:
            raise ValueError("class_agreement: needs a classifier (pass classifier= when creating NCCStats)")
        rows = self.class_rows.to(torch.float64)
        return self.class_agreements.to(torch.float64) / rows

    @property
    def ncc_accuracy(self) -> float:
        return self._fraction(self.ncc_correct, self.num_labelled, "ncc_accuracy")

    @property
    def classifier_accuracy(self) -> float:
        if self._w is None:
            raise ValueError("classifier_accuracy: no classifier was given")
        return self._fraction(self.classifier_correct, self.num_labelled, "classifier_accuracy")
