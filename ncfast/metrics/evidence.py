"""LogME (You et al., ICML 2021; the fixed-point form of You et al., JMLR 2022 / arXiv
2110.10545), exactly from the statistics, in each convention its published code uses
(docs/CONVENTIONS.md).

Per target y (a one-hot class column, or a regression column of a :class:`TargetStats`) the
evidence of the Bayesian linear model y ~ N(F w, 1/beta), w ~ N(0, 1/alpha) is maximised over
(alpha, beta) by MacKay's fixed point. All it needs of the rows is the D x D Gram
F^T F = V diag(sigma) V^T, t = V^T F^T y and ||y||^2: with lam = alpha / beta and
u = t / (lam + sigma) (the posterior mean m = V u),

    gamma = sum_j sigma_j / (sigma_j + lam),   ||m||^2 = sum u^2,
    ||y - F m||^2 = ||y||^2 - sum_j t_j^2 (2 lam + sigma_j) / (lam + sigma_j)^2,
    alpha <- gamma / (||m||^2 + e),   beta <- (N - gamma) / (||y - F m||^2 + e),

and at the last step the evidence / N is

    [D/2 log alpha + N/2 log beta - 1/2 sum_j log(alpha + beta sigma_j)
     - beta/2 (||y - F m||^2 + e') - alpha/2 (||m||^2 + e') - N/2 log(2 pi)] / N.

One eigendecomposition serves every target. The log-determinant runs over all D eigenvalues,
the zero ones included (F^T F has D - rank(F) of them when N <= D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from .._inputs import to_tensor
from ._common import check_dense_decomposition, present_classes


@dataclass(frozen=True)
class _Convention:
    eps_update: float  # e above
    eps_evidence: float  # e' above
    tol: float
    inclusive: bool  # stop when the relative change of lam is <= tol (else < tol)
    max_iter: int


VARIANTS = {
    # thuml/LogME ``LogME().fit`` (``_fit_fixed_point``, the default code path)
    "thuml": _Convention(1e-5, 0.0, 1e-3, True, 11),
    # thuml/LogME ``_fit_icml`` / ``each_evidence``, the ICML 2021 paper's code
    "icml": _Convention(1e-5, 1e-5, 1e-2, False, 11),
    # thuml/Transfer-Learning-Library ``tllib.ranking.log_maximum_evidence``
    "tllib": _Convention(0.0, 0.0, 1e-2, False, 11),
    # the exact fixed point of the paper's equations
    "converged": _Convention(0.0, 0.0, 1e-13, True, 10_000),
}
LOGDETS = ("full", "nonzero")


@dataclass
class LogMEFit:
    """The fitted Bayesian linear models, one per target (class or regression column).

    score: mean evidence / N over the targets (the LogME score; higher is better);
    evidence, alpha, beta: (C,) float64 per target; weights: (C, D) float64 posterior means m;
    targets: (C,) int64, the class label (classification) or the column (regression) of each row.
    """

    score: float
    evidence: Tensor
    alpha: Tensor
    beta: Tensor
    weights: Tensor
    targets: Tensor
    regression: bool

    def predict(self, features: Any) -> Tensor:
        """As thuml's ``LogME.predict``: the linear predictions ``features @ weights.T``
        (B, C) for regression, the class label of the largest one (B,) for classification."""
        f = to_tensor(features, "features").to(device=self.weights.device, dtype=torch.float64)
        if f.ndim != 2 or f.shape[1] != self.weights.shape[1]:
            raise ValueError(f"features: expected (B, {self.weights.shape[1]}), got shape {tuple(f.shape)}")
        logits = f @ self.weights.T
        return logits if self.regression else self.targets[logits.argmax(dim=1)]


def _targets_of(stats) -> Tuple[Tensor, Tensor, Tensor, bool]:
    """(F^T y (C, D), ||y||^2 (C,), target ids (C,), regression) for ClassStats or TargetStats."""
    if hasattr(stats, "feature_target_products"):
        n = stats.num_samples
        if n == 0:
            raise ValueError("logme: undefined before any row was seen (call update first)")
        ids = torch.arange(stats.num_targets, device=stats.device)
        return stats.feature_target_products().T, torch.diagonal(stats.target_products()).clone(), ids, True
    present = present_classes(stats, "logme")
    counts = stats._state.counts[present].to(torch.float64)
    ids = present.nonzero().flatten()
    return stats._state.means[present] * counts[:, None], counts, ids, False


def _logdet_mask(sigma: Tensor, n: int) -> Tensor:
    """The eigenvalues thuml's fixed-point code sums in its log-determinant: min(N, D) of them.
    For N <= D the N largest (the thin SVD of F). For N > D all D: its truncated SVD drops
    singular values of F below 1e-10, but those of a rank-deficient F come out of a float64
    SVD of F^T F at the rounding level (about sqrt(eps sigma_max) >> 1e-10) and are kept."""
    keep = torch.ones(sigma.shape[0], dtype=torch.bool, device=sigma.device)
    if n < sigma.shape[0]:
        keep[: sigma.shape[0] - n] = False  # eigh sorts ascending: keep the N largest
    return keep


def logme_fit(stats, *, variant: str = "thuml", logdet: str = "full", tol: Optional[float] = None,
              max_iter: Optional[int] = None) -> LogMEFit:
    """LogME of ClassStats (one-hot class targets) or TargetStats (real-valued targets).

    Parameters
    ----------
    stats : ClassStats or TargetStats
    variant : {"thuml", "icml", "tllib", "converged"}
        Whose code the iteration follows (docs/CONVENTIONS.md):
        "thuml" (default): thuml/LogME's ``LogME().fit`` (``_fit_fixed_point``): e = 1e-5 in the
        alpha/beta updates only, stop when lam changes by <= 1e-3 relative or after 11 steps;
        "icml": the ICML 2021 code (``each_evidence``): e = e' = 1e-5, stop at < 1e-2 or 11 steps;
        "tllib": ``tllib.ranking.log_maximum_evidence``: no epsilon, stop at < 1e-2 or 11 steps;
        "converged": no epsilon, iterated to the exact fixed point (relative change <= 1e-13).
    logdet : {"full", "nonzero"}
        "full" (default, exact): the log-determinant of alpha I + beta F^T F over all D
        eigenvalues. "nonzero": over the N largest only when N < D, as thuml's fixed-point code
        does (a known bug, thuml/LogME issue #23 / pull request #24): it differs from the exact
        value by + (D - N) log(alpha) / (2N) per target. For comparing with published tables; for N >= D
        it equals "full" (see docs/CONVENTIONS.md).
    tol, max_iter
        Override the variant's stopping rule.

    Classes without rows are left out (thuml's code iterates over every label below the largest).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {tuple(VARIANTS)}, got {variant!r}")
    if logdet not in LOGDETS:
        raise ValueError(f"logdet: expected one of {LOGDETS}, got {logdet!r}")
    conv = VARIANTS[variant]
    tol = conv.tol if tol is None else float(tol)
    max_iter = conv.max_iter if max_iter is None else int(max_iter)
    if max_iter < 1:
        raise ValueError(f"max_iter: expected a positive int, got {max_iter}")
    sums, y2, ids, regression = _targets_of(stats)
    n, d = stats.num_samples, stats.dim
    check_dense_decomposition(d, "logme", stats.device)
    sigma, v = torch.linalg.eigh(stats.gram())
    sigma = sigma.clamp(min=0.0)
    t = sums @ v  # (C, D): V^T F^T y
    t2 = t * t
    k = t.shape[0]
    alpha = torch.ones(k, dtype=torch.float64, device=t.device)
    beta = torch.ones_like(alpha)
    active = torch.ones(k, dtype=torch.bool, device=t.device)
    m2 = res2 = torch.zeros_like(alpha)
    u = torch.zeros_like(t)
    for _ in range(max_iter):
        lam = alpha / beta
        denom = lam[:, None] + sigma
        gamma = (sigma / denom).sum(dim=1)
        new_u = t / denom
        new_m2 = (new_u * new_u).sum(dim=1)
        new_res2 = (y2 - (t2 * (2.0 * lam[:, None] + sigma) / (denom * denom)).sum(dim=1)).clamp(min=0.0)
        new_alpha = gamma / (new_m2 + conv.eps_update)
        new_beta = (n - gamma) / (new_res2 + conv.eps_update)
        u = torch.where(active[:, None], new_u, u)
        m2 = torch.where(active, new_m2, m2)
        res2 = torch.where(active, new_res2, res2)
        change = (new_alpha / new_beta - lam).abs() / lam
        alpha = torch.where(active, new_alpha, alpha)
        beta = torch.where(active, new_beta, beta)
        done = change <= tol if conv.inclusive else change < tol
        active = active & ~done
        if not bool(active.any()):
            break
    log_terms = torch.log(alpha[:, None] + beta[:, None] * sigma)
    if logdet == "nonzero":
        log_terms = log_terms * _logdet_mask(sigma, n)
    evidence = (
        d / 2.0 * torch.log(alpha)
        + n / 2.0 * torch.log(beta)
        - 0.5 * log_terms.sum(dim=1)
        - beta / 2.0 * (res2 + conv.eps_evidence)
        - alpha / 2.0 * (m2 + conv.eps_evidence)
        - n / 2.0 * math.log(2.0 * math.pi)
    ) / n
    if not bool(torch.isfinite(evidence).all()):
        raise ValueError("logme: the fixed point left the domain (alpha or beta <= 0); the targets are "
                         "fitted exactly or the features are degenerate")
    return LogMEFit(score=float(evidence.mean()), evidence=evidence, alpha=alpha, beta=beta,
                    weights=u @ v.T, targets=ids, regression=regression)


def logme(stats, *, variant: str = "thuml", logdet: str = "full", tol: Optional[float] = None,
          max_iter: Optional[int] = None) -> float:
    """The LogME score (mean evidence / N over the targets; higher is better) of ClassStats
    or TargetStats, for any N (N <= D included). See :func:`logme_fit` for the options; the
    default reproduces thuml/LogME's ``LogME().fit(f, y)`` (with the exact log-determinant)."""
    return logme_fit(stats, variant=variant, logdet=logdet, tol=tol, max_iter=max_iter).score
