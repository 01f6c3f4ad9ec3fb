"""SFDA (Shao et al., "Not all models are equal: predicting model transferability in a
self-challenging Fisher space", ECCV 2022), in the convention of the authors' code
(TencentARC/SFDA ``metrics.py``: ``SFDA`` and ``SFDA_Score``).

What is exact from the statistics and what needs the rows again:

1. The first regularised Fisher fit is exact from the first pass's ClassStats: priors n_c / N,
   Sigma_W (= sum_c prior_c cov_c), Sigma_T, the shrinkage s = max(exp(-5 lambda), 1e-10) with
   lambda the authors' three-step power estimate of Sigma_W's largest eigenvalue, the shrunk
   S_W' = (1 - s) Sigma_W + s (tr Sigma_W / D) I and S_T' likewise, S_B = S_T' - S_W', the
   generalised eigenvectors V of (S_B, S_W') (V^T S_W' V = I, all D kept), and the LDA
   classifier coef = M V V^T, intercept_c = -1/2 mu_c . coef_c + log prior_c.
2. ConfMix moves every row towards the mean of the other classes' means by its own
   probability, x' = p x + (1 - p) mean_{c' != y} mu_c', p = softmax(softmax(logits))_y (the
   authors' "softened" probability). That is a per-row operation, so the statistics of the
   mixed rows need a second pass over the data (:class:`SFDAMixPass`, exact).
3. The second fit (same shrinkage) is exact from the mixed rows' statistics, and the score, the
   mean over rows of softmax(x' coef2^T + intercept2)_y, a mean of per-row nonlinear values,
   needs a third pass (:class:`SFDAScorePass`, exact; x' is recomputed from x and the first fit).

Nothing is approximated; the price is the two extra passes. Since V is square, V V^T =
S_W'^-1: the Fisher projection with all directions is LDA with the shrunk within-class
covariance (S_B does not change the score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from .._inputs import as_features, as_labels, check_label_range, to_tensor
from ..backend.dispatch import NAN_POLICIES
from ..stats import ClassStats
from ._common import check_dense_decomposition, present_classes


def _power_top_eigenvalue(a: Tensor, iterations: int = 3) -> float:
    """The authors' ``iterative_A``: x = row sums of A, then alternately y = Ax/|Ax|,
    x = Ay/|Ay|, `iterations` times; returns x^T A y."""
    x = a.sum(dim=1)
    y = x
    for _ in range(iterations):
        t = a @ x
        y = t / t.norm()
        t = a @ y
        x = t / t.norm()
    return float(x @ (a @ y))


def _shrunk(cov: Tensor, s: float) -> Tensor:
    d = cov.shape[0]
    out = (1.0 - s) * cov
    out.diagonal().add_(s * float(torch.trace(cov)) / d)
    return out


@dataclass
class SFDAFit:
    """One regularised Fisher (LDA) fit: ``probabilities(x)`` = softmax(x coef^T + intercept).

    classes: (K',) labels of the classes with rows; coef (K', D); intercept (K',);
    scalings (D, D): the Fisher directions V, best first; shrinkage: s."""

    classes: Tensor
    means: Tensor
    coef: Tensor
    intercept: Tensor
    scalings: Tensor
    shrinkage: float
    nan_policy: str = "raise"

    @classmethod
    def from_stats(cls, stats: ClassStats, shrinkage: Optional[float] = None) -> "SFDAFit":
        """The fit from statistics (``shrinkage=None``: the authors' adaptive choice)."""
        present = present_classes(stats, "sfda")
        check_dense_decomposition(stats.dim, "sfda", stats.device)
        n = stats.num_samples
        counts = stats._state.counts[present].to(torch.float64)
        means = stats._state.means[present]
        priors = counts / n
        within = stats.sigma_w()
        if shrinkage is None:
            shrinkage = max(math.exp(-5.0 * _power_top_eigenvalue(within)), 1e-10)
        s = float(shrinkage)
        total = _shrunk(stats.sigma_t(), s)
        within = _shrunk(within, s)
        between = total - within
        chol = torch.linalg.cholesky(0.5 * (within + within.T))
        half = torch.linalg.solve_triangular(chol, between, upper=False)
        reduced = torch.linalg.solve_triangular(chol, half.T, upper=False)
        evals, evecs = torch.linalg.eigh(0.5 * (reduced + reduced.T))
        scalings = torch.linalg.solve_triangular(chol.T, evecs, upper=True).flip(1)  # S_W'-orthonormal
        coef = means @ scalings @ scalings.T
        intercept = -0.5 * (means * coef).sum(dim=1) + torch.log(priors)
        return cls(present.nonzero().flatten(), means, coef, intercept, scalings, s, stats.nan_policy)

    def probabilities(self, features: Tensor) -> Tensor:
        """(B, K') softmax(features coef^T + intercept), features (B, D) float64."""
        return torch.softmax(features @ self.coef.T + self.intercept, dim=1)

    def confmix_pass(self) -> "SFDAMixPass":
        """The second pass: statistics of the ConfMix rows."""
        return SFDAMixPass(self)


class _Pass:
    """Shared by the two passes: checks a batch and maps its labels to fitted class positions."""

    def __init__(self, fit: SFDAFit) -> None:
        self.fit = fit
        k = int(fit.classes.max()) + 1
        self._position = torch.full((k,), -1, dtype=torch.int64, device=fit.coef.device)
        self._position[fit.classes] = torch.arange(fit.classes.numel(), device=fit.coef.device)
        other = (fit.means.sum(dim=0) - fit.means) / (fit.means.shape[0] - 1)
        self._other_means = other  # (K', D): mean of the other classes' means
        self.num_samples = 0
        self.skipped_rows = 0

    def _batch(self, features: Any, labels: Any):
        x = as_features(features, self.fit.coef.shape[1])
        y = as_labels(labels, x.shape[0])
        check_label_range(y, self._position.shape[0])
        pos = self._position[y.to(self._position.device)]
        if bool((pos < 0).any()):
            row = int((pos < 0).nonzero()[0, 0])
            raise ValueError(f"labels: class {int(y[row])} at row {row} had no rows in the first pass")
        x = x.to(device=self.fit.coef.device, dtype=torch.float64)
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            if self.fit.nan_policy == "raise":
                raise ValueError(f"features: row {int((~finite).nonzero()[0, 0])} holds NaN or Inf "
                                 "(the first pass used nan_policy='raise')")
            self.skipped_rows += int((~finite).sum())
            x, y, pos = x[finite], y[finite], pos[finite]
        return x, y, pos

    def _mixed(self, x: Tensor, pos: Tensor) -> Tensor:
        soft = torch.softmax(self.fit.probabilities(x), dim=1)  # the authors' "softened" p(y|x)
        p = soft.gather(1, pos[:, None])
        return p * x + (1.0 - p) * self._other_means[pos]


class SFDAMixPass(_Pass):
    """Second pass of SFDA: ``update(features, labels)`` over the rows, then :meth:`score_pass`."""

    def __init__(self, fit: SFDAFit) -> None:
        super().__init__(fit)
        self._mixed_stats = ClassStats(self._position.shape[0], fit.coef.shape[1], device=fit.coef.device)

    def update(self, features: Any, labels: Any) -> "SFDAMixPass":
        x, y, pos = self._batch(features, labels)
        self._mixed_stats.update(self._mixed(x, pos), y.to(self._mixed_stats.device))
        self.num_samples += x.shape[0]
        return self

    @property
    def mixed_stats(self) -> ClassStats:
        """Statistics of the ConfMix rows (float64)."""
        return self._mixed_stats

    def score_pass(self) -> "SFDAScorePass":
        """The third pass, with the second fit (the first fit's shrinkage) from the mixed rows."""
        if self.num_samples == 0:
            raise ValueError("sfda: the ConfMix pass saw no rows")
        return SFDAScorePass(self.fit, SFDAFit.from_stats(self._mixed_stats, shrinkage=self.fit.shrinkage))


class SFDAScorePass(_Pass):
    """Third pass of SFDA: ``update(features, labels)`` over the same rows, then ``value``."""

    def __init__(self, first: SFDAFit, second: SFDAFit) -> None:
        super().__init__(first)
        self.second = second
        self._sum = 0.0

    def update(self, features: Any, labels: Any) -> "SFDAScorePass":
        x, _, pos = self._batch(features, labels)
        probs = self.second.probabilities(self._mixed(x, pos))
        self._sum += float(probs.gather(1, pos[:, None]).sum())
        self.num_samples += x.shape[0]
        return self

    @property
    def value(self) -> float:
        """The SFDA score: mean over rows of the second fit's probability of the true class."""
        if self.num_samples == 0:
            raise ValueError("sfda: no rows seen in the third pass")
        return self._sum / self.num_samples


def sfda_score(features: Any, labels: Any, *, chunk_rows: int = 65536, stats: Optional[ClassStats] = None,
               nan_policy: str = "raise") -> float:
    """SFDA of in-memory features (N, D) and labels (N,): the three passes in chunks of
    `chunk_rows` rows (``stats``: the first pass's statistics, if already computed)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy: expected 'raise' or 'skip', got {nan_policy!r}")
    t = to_tensor(features, "features")
    if t.ndim != 2:
        raise ValueError(f"features: expected a 2-D (rows, dim) array, got shape {tuple(t.shape)}")
    x = as_features(t, t.shape[1])
    y = as_labels(labels, x.shape[0])
    if stats is None:
        stats = ClassStats(None, x.shape[1], nan_policy=nan_policy)
        for start in range(0, x.shape[0], chunk_rows):
            stats.update(x[start : start + chunk_rows], y[start : start + chunk_rows])
    mixing = SFDAFit.from_stats(stats).confmix_pass()
    for start in range(0, x.shape[0], chunk_rows):
        mixing.update(x[start : start + chunk_rows], y[start : start + chunk_rows])
    scoring = mixing.score_pass()
    for start in range(0, x.shape[0], chunk_rows):
        scoring.update(x[start : start + chunk_rows], y[start : start + chunk_rows])
    return scoring.value

