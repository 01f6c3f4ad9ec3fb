"""Spectral summaries of the covariances: eigenvalues, RankMe, alpha-ReQ."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import check_dense_decomposition


def eigenvalues(stats, which: str = "total") -> Tensor:
    """Eigenvalues, descending, of Sigma_T (``which="total"``), Sigma_W ("within") or the
    class-balanced Sigma_B ("between"); float64, clamped at 0."""
    matrices = {"total": stats.sigma_t, "within": stats.sigma_w, "between": stats.sigma_b}
    if which not in matrices:
        raise ValueError(f"which: expected one of {tuple(matrices)}, got {which!r}")
    check_dense_decomposition(stats.dim, "eigenvalues", stats.device)
    return torch.linalg.eigvalsh(matrices[which]()).flip(0).clamp(min=0.0)


def rankme(stats, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): exp of the entropy of the normalised singular
    values of the centred feature matrix, i.e. of sqrt(eigenvalues of Sigma_T):
    RankMe = exp(-sum_k p_k log p_k), p_k = s_k / sum_j s_j + eps (eps as in the paper,
    so that log 0 never occurs). Between 1 and D; higher means a richer representation."""
    sv = eigenvalues(stats).sqrt()
    total = float(sv.sum())
    if total == 0.0:
        raise ValueError("rankme: the features have zero variance")
    p = sv / total + eps
    return math.exp(float(-(p * torch.log(p)).sum()))


def alpha_req(stats, *, max_rank: int = None) -> float:
    """alpha-ReQ (Agrawal et al., NeurIPS 2022): the decay exponent alpha of the eigenspectrum
    lambda_k ~ k^-alpha of Sigma_T, from a least-squares line through (log k, log lambda_k)
    over the eigenvalues above D * float64 eps * lambda_1 (smaller ones are rounding noise of
    a rank-deficient Sigma_T), the first `max_rank` of them if given."""
    lam = eigenvalues(stats)
    lam = lam[lam > lam[0] * stats.dim * torch.finfo(torch.float64).eps]
    if max_rank is not None:
        lam = lam[:max_rank]
    if lam.numel() < 2:
        raise ValueError("alpha_req: needs at least two positive eigenvalues")
    x = torch.log(torch.arange(1, lam.numel() + 1, dtype=torch.float64, device=lam.device))
    y = torch.log(lam)
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return -slope
