"""Transferability scores from ClassStats (DESIGN.md section 4): LogME, H-score (plain and
shrinkage), GBC and FaCe. All float64, on the device that holds the statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from ._common import check_dense_decomposition, present_classes, row_blocks
from .nc import nc1

# ---------------------------------------------------------------------------------- LogME

_LOGME_EPS = 1e-5  # added to the alpha/beta denominators and to the evidence, as in You et al.'s code


def logme(stats, *, max_iter: int = 100, tol: float = 1e-8) -> float:
    """LogME (You et al., ICML 2021), exactly from the statistics.

    Per class k (one-hot target y_k), the evidence of a Bayesian linear model y ~ N(F w,
    1/beta), w ~ N(0, 1/alpha), maximised by MacKay's fixed point on (alpha, beta). Everything
    it needs of the features is in the D x D Gram F^T F = V diag(sigma) V^T and the class sums
    S_k = F^T y_k = n_k mu_k: with t = V^T S_k and u = beta t / (alpha + beta sigma) (m = V u),
    ||m||^2 = sum u^2 and ||y_k - F m||^2 = n_k - 2 t.u + sum sigma u^2. One eigendecomposition
    serves every class. Returns the mean over classes of evidence / N (higher is better),
    with the evidence of class k at the fixed point

        D/2 log alpha + N/2 log beta - 1/2 sum_j log(alpha + beta sigma_j)
        - beta/2 (||y_k - F m||^2 + eps) - alpha/2 (||m||^2 + eps) - N/2 log(2 pi),

    eps = 1e-5 as in You et al.'s code (also added to the denominators of the alpha and
    beta updates, alpha = gamma / (||m||^2 + eps), beta = (N - gamma) / (||y - F m||^2 + eps),
    gamma = sum_j beta sigma_j / (alpha + beta sigma_j)).

    The iteration stops when alpha/beta changes by less than `tol` (relative); You et al.'s
    code stops at 1e-2 or 11 steps, so its values can differ in the later digits.
    Needs N > D (raises otherwise).
    """
    present = present_classes(stats, "logme")
    n, d = stats.num_samples, stats.dim
    if n <= d:
        raise ValueError(
            f"logme: needs more rows than dimensions (N={n}, D={d}); add rows or reduce D (e.g. PCA) first"
        )
    check_dense_decomposition(d, "logme", stats.device)
    sigma, v = torch.linalg.eigh(stats.gram())
    sigma = sigma.clamp(min=0.0)
    counts = stats._state.counts[present].to(torch.float64)
    t = (stats._state.means[present] * counts[:, None]) @ v  # (K', D): V^T S_k
    k = t.shape[0]
    alpha = torch.ones(k, dtype=torch.float64, device=t.device)
    beta = torch.ones_like(alpha)
    lam = alpha / beta
    active = torch.ones(k, dtype=torch.bool, device=t.device)
    m2 = res2 = torch.zeros_like(alpha)
    for _ in range(max_iter):
        gamma = (sigma / (sigma + lam[:, None])).sum(dim=1)
        u = beta[:, None] * t / (alpha[:, None] + beta[:, None] * sigma)
        new_m2 = (u * u).sum(dim=1)
        new_res2 = counts - 2.0 * (t * u).sum(dim=1) + (sigma * u * u).sum(dim=1)
        new_alpha = gamma / (new_m2 + _LOGME_EPS)
        new_beta = (n - gamma) / (new_res2 + _LOGME_EPS)
        m2 = torch.where(active, new_m2, m2)
        res2 = torch.where(active, new_res2, res2)
        alpha = torch.where(active, new_alpha, alpha)
        beta = torch.where(active, new_beta, beta)
        new_lam = alpha / beta
        converged = (new_lam - lam).abs() / lam < tol
        lam = torch.where(active, new_lam, lam)
        active = active & ~converged
        if not bool(active.any()):
            break
    evidence = (
        d / 2.0 * torch.log(alpha)
        + n / 2.0 * torch.log(beta)
        - 0.5 * torch.log(alpha[:, None] + beta[:, None] * sigma).sum(dim=1)
        - beta / 2.0 * (res2 + _LOGME_EPS)
        - alpha / 2.0 * (m2 + _LOGME_EPS)
        - n / 2.0 * math.log(2.0 * math.pi)
    )
    return float((evidence / n).mean())


# ---------------------------------------------------------------------------------- H-score


def _feature_and_label_covariances(stats, what: str):
    present_classes(stats, what)
    n = stats.num_samples
    if n < 2:
        raise ValueError(f"{what}: needs at least 2 rows")
    cov_f = stats.sigma_t() * (n / (n - 1))
    cov_g = stats.between_scatter() / (n - 1)
    return cov_f, cov_g


def h_score(stats, *, rcond: Optional[float] = None) -> float:
    """H-score (Bao et al., ICIP 2019) = tr(pinv(cov f) cov g), with g_i = mu_{y_i} and both
    covariances normalised by N - 1. The pseudo-inverse drops eigenvalues of cov f below
    rcond * lambda_max (default D * float64 eps). Higher is better."""
    check_dense_decomposition(stats.dim, "h_score", stats.device)
    cov_f, cov_g = _feature_and_label_covariances(stats, "h_score")
    lam, v = torch.linalg.eigh(cov_f)
    tol = (stats.dim * torch.finfo(torch.float64).eps if rcond is None else rcond) * float(lam.max())
    keep = lam > tol
    vk = v[:, keep]
    return float((((vk.T @ cov_g) * vk.T).sum(dim=1) / lam[keep]).sum())


def oas_shrinkage(cov: Tensor, num_samples: int) -> float:
    """Oracle-approximating shrinkage coefficient (Chen et al. 2010, scikit-learn's form) of a
    covariance estimate; it needs only the covariance itself. (Ledoit-Wolf's coefficient needs
    fourth moments of the rows, which one-pass second-order statistics do not keep.)"""
    d = cov.shape[0]
    mu = float(torch.trace(cov)) / d
    mean_sq = float((cov * cov).mean())
    num = mean_sq + mu * mu
    den = (num_samples + 1) * (mean_sq - mu * mu / d)
    return 1.0 if den == 0 else min(num / den, 1.0)


def h_score_shrinkage(stats, alpha: Union[float, str] = "oas") -> float:
    """Shrinkage H-score (Ibrahim et al., ICLR 2023): cov f is replaced by
    (1 - alpha) cov f + alpha (tr(cov f) / D) I before inverting. ``alpha="oas"`` picks the
    oracle-approximating coefficient from the statistics (see :func:`oas_shrinkage`)."""
    check_dense_decomposition(stats.dim, "h_score_shrinkage", stats.device)
    cov_f, cov_g = _feature_and_label_covariances(stats, "h_score_shrinkage")
    n, d = stats.num_samples, stats.dim
    a = oas_shrinkage(stats.sigma_t(), n) if alpha == "oas" else float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1] or 'oas', got {alpha!r}")
    shrunk = (1.0 - a) * cov_f + a * float(torch.trace(cov_f)) / d * torch.eye(d, dtype=torch.float64, device=cov_f.device)
    return float(torch.trace(torch.linalg.solve(shrunk, cov_g)))


# ---------------------------------------------------------------------------------- GBC


def gbc(stats, *, var_floor: float = 1e-12) -> float:
    """Gaussian Bhattacharyya coefficient (Pandy et al., CVPR 2022), with per-class diagonal
    Gaussians N(mu_c, diag(v_c)), v_cj = q_cj / n_c floored at var_floor * mean(v):
    D_B(c,c') = 1/8 sum_j (mu_cj - mu_c'j)^2 / v_j + 1/2 sum_j log(v_j / sqrt(v_cj v_c'j)),
    v_j = (v_cj + v_c'j) / 2, and GBC = -sum_{c != c'} exp(-D_B(c, c')) (higher is better).
    Needs ``per_class_diag=True``. For the PCA variant, project the features with
    :func:`ncfast.metrics.pca_basis` in a second pass and score those statistics."""
    present = present_classes(stats, "gbc")
    if not stats.per_class_diag:
        raise ValueError("gbc: needs per-class variances; create ClassStats with per_class_diag=True")
    counts = stats._state.counts[present].to(torch.float64)
    mu = stats._state.means[present]
    var = stats._state.class_diag[present] / counts[:, None]
    floor = var_floor * max(float(var.mean()), torch.finfo(torch.float64).tiny)
    var = var.clamp(min=floor)
    log_var = torch.log(var)
    k, d = mu.shape
    total = 0.0
    for start, stop in row_blocks(k, k * d):
        v = 0.5 * (var[start:stop, None, :] + var[None, :, :])
        diff = mu[start:stop, None, :] - mu[None, :, :]
        dist = 0.125 * (diff * diff / v).sum(dim=2) + 0.5 * (
            torch.log(v).sum(dim=2) - 0.5 * log_var[start:stop].sum(dim=1)[:, None] - 0.5 * log_var.sum(dim=1)[None, :]
        )
        coef = torch.exp(-dist)
        rows = torch.arange(stop - start)
        coef[rows, rows + start] = 0.0
        total += float(coef.sum())
    return -total


def pca_basis(stats, components: int):
    """(origin (D,), basis (D, p)): the top-p principal directions of Sigma_T, for a second
    pass that feeds ``(features - origin) @ basis`` into a new ClassStats (e.g. for GBC)."""
    if not 1 <= components <= stats.dim:
        raise ValueError(f"components: expected 1..{stats.dim}, got {components}")
    check_dense_decomposition(stats.dim, "pca_basis", stats.device)
    _, v = torch.linalg.eigh(stats.sigma_t())
    return stats.global_mean, v[:, -components:].flip(1)


# ---------------------------------------------------------------------------------- FaCe


@dataclass
class FaCe:
    """FaCe = C + F (Ding et al., arXiv 2310.05754), as reconstructed in DESIGN.md section 4.

    variance_collapse (C) = -NC1; class_fairness (F) = -std_c(o_c) / (mean_c(o_c) + eps),
    o_c = mean_{c' != c} exp(-d_cc' / 8) with d_cc' the squared Mahalanobis distance between
    class means under Sigma_W + lambda I. Higher is better for all three.
    """

    variance_collapse: float
    class_fairness: float
    score: float


def face(stats, *, ridge: Optional[float] = None, eps: float = 1e-12, rtol: Optional[float] = None) -> FaCe:
    """FaCe from the statistics. The paper's code is not public: this is the documented
    reconstruction (see :class:`FaCe`). ``ridge`` is lambda, default 1e-6 * tr(Sigma_W) / D;
    ``rtol`` is NC1's rank cut (:func:`ncfast.metrics.nc1`).
    Pairwise K x K work is blocked, so K = 100k classes fit in memory."""
    present = present_classes(stats, "face")
    d = stats.dim
    check_dense_decomposition(d, "face", stats.device)
    c = -nc1(stats, rtol=rtol)
    within = stats.sigma_w()
    lam = 1e-6 * float(torch.trace(within)) / d if ridge is None else float(ridge)
    lam = max(lam, torch.finfo(torch.float64).tiny)
    chol = torch.linalg.cholesky(within + lam * torch.eye(d, dtype=torch.float64, device=within.device))
    mu = stats._state.means[present] - stats.global_mean
    white = torch.linalg.solve_triangular(chol, mu.T, upper=False).T  # Mahalanobis -> Euclidean
    k = white.shape[0]
    sq = (white * white).sum(dim=1)
    overlap = torch.empty(k, dtype=torch.float64, device=white.device)
    for start, stop in row_blocks(k, k):
        dist2 = (sq[start:stop, None] + sq[None, :] - 2.0 * white[start:stop] @ white.T).clamp(min=0.0)
        bc = torch.exp(-dist2 / 8.0)
        rows = torch.arange(stop - start)
        bc[rows, rows + start] = 0.0
        overlap[start:stop] = bc.sum(dim=1) / (k - 1)
    f = -float(overlap.std(unbiased=False)) / (float(overlap.mean()) + eps)
    return FaCe(variance_collapse=c, class_fairness=f, score=c + f)


# ---------------------------------------------------------------------------------- all


def transferability(stats, *, rtol: Optional[float] = None) -> dict:
    """Every transferability score the statistics define, as {name: float}: LogME (when
    N > D), H-score, shrinkage H-score, NC1, FaCe's C, F and S, and GBC (when per-class
    variances are tracked). Higher is better for all but nc1. ``rtol``: NC1's rank cut.
    LEEP and NCE need source-model probabilities, not features: see :class:`JointStats`."""
    out = {}
    if stats.num_samples > stats.dim:
        out["logme"] = logme(stats)
    out["h_score"] = h_score(stats)
    out["h_score_shrinkage"] = h_score_shrinkage(stats)
    f = face(stats, rtol=rtol)
    out["nc1"] = -f.variance_collapse
    out["face_c"], out["face_f"], out["face"] = f.variance_collapse, f.class_fairness, f.score
    if stats.per_class_diag:
        out["gbc"] = gbc(stats)
    return out
