"""H-score (Bao et al., ICIP 2019) and its shrinkage form (Ibrahim et al., "Newer is not always
better", ICLR 2023; tllib's ``regularized_h_score``), with the Ledoit-Wolf and OAS shrinkage
coefficients, from the statistics. All float64, on the device that holds the statistics."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .. import _moments
from ._common import check_dense_decomposition, present_classes

SHRINKAGES = ("ledoit_wolf", "oas")


def _covariances(stats, what: str):
    """(Sigma_T with 1/N, cov g = S_B / (N - 1)) where g_i = mu_{y_i}."""
    present_classes(stats, what)
    n = stats.num_samples
    if n < 2:
        raise ValueError(f"{what}: needs at least 2 rows")
    return stats.sigma_t(), stats.between_scatter() / (n - 1)


def _trace_pinv_product(a: Tensor, b: Tensor, rcond: float) -> float:
    """tr(pinv(a) b) for symmetric a, dropping eigenvalues below rcond * lambda_max (NumPy's
    ``pinv(rcond=...)`` cut for a symmetric positive semi-definite matrix)."""
    lam, v = torch.linalg.eigh(a)
    keep = lam > rcond * float(lam.abs().max())
    vk = v[:, keep]
    return float((((vk.T @ b) * vk.T).sum(dim=1) / lam[keep]).sum())


def h_score(stats, *, rcond: Optional[float] = None) -> float:
    """H-score = tr(pinv(cov f) cov g), with g_i = mu_{y_i} and both covariances normalised by
    N - 1 (``np.cov``). The pseudo-inverse drops eigenvalues of cov f below
    rcond * lambda_max; default rcond = D * float64 eps (tllib uses 1e-15, which agrees unless
    cov f has eigenvalues between the two cuts). Higher is better."""
    check_dense_decomposition(stats.dim, "h_score", stats.device)
    sigma_t, cov_g = _covariances(stats, "h_score")
    n = stats.num_samples
    cov_f = sigma_t * (n / (n - 1))
    cut = stats.dim * torch.finfo(torch.float64).eps if rcond is None else float(rcond)
    return _trace_pinv_product(cov_f, cov_g, cut)


def oas_shrinkage(cov: Tensor, num_samples: int) -> float:
    """Oracle-approximating shrinkage coefficient (Chen et al. 2010, scikit-learn's ``OAS``)
    of the population covariance `cov` of `num_samples` rows: with mu = tr(cov)/D and
    a = mean(cov^2), min(1, (a + mu^2) / ((N + 1)(a - mu^2 / D)))."""
    d = cov.shape[0]
    mu = float(torch.trace(cov)) / d
    mean_sq = float((cov * cov).mean())
    num = mean_sq + mu * mu
    den = (num_samples + 1) * (mean_sq - mu * mu / d)
    return 1.0 if den == 0 else min(num / den, 1.0)


def ledoit_wolf_shrinkage(stats) -> float:
    """Ledoit-Wolf shrinkage coefficient (Ledoit & Wolf 2004, scikit-learn's ``LedoitWolf``) of
    the features, exactly from the statistics; needs ``fourth_moments=True``.

    With S = Sigma_T (1/N), mu = tr(S)/D and P4 = sum_i ||x_i - mu_G||^4 (the only fourth-order
    quantity it uses): b = (P4/N - ||S||_F^2) / (D N), d = ||S - mu I||_F^2 / D, and the
    coefficient is min(b, d) / d (0 when b = 0; 0 for D = 1, as scikit-learn)."""
    if not getattr(stats, "fourth_moments", False):
        raise ValueError(
            "ledoit_wolf: needs sum_i ||x_i - mu||^4, which these statistics do not track; create them "
            "with ClassStats(..., fourth_moments=True) (ncfast.accumulate(..., fourth_moments=True)), "
            "or use shrinkage='oas'"
        )
    n, d = stats.num_samples, stats.dim
    if n == 0:
        raise ValueError("ledoit_wolf: undefined before any row was seen (call update first)")
    if d == 1:
        return 0.0
    s = stats.sigma_t()
    fourth = float(_moments.central_moments(stats._state)[0])
    trace = float(torch.trace(s))
    mu = trace / d
    frob2 = float((s * s).sum())
    beta = (fourth / n - frob2) / (d * n)
    delta = (frob2 - 2.0 * mu * trace + d * mu * mu) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def h_score_shrinkage(stats, shrinkage: Union[str, float] = "ledoit_wolf", *, rcond: float = 1e-15) -> float:
    """Shrinkage H-score (Ibrahim et al.; tllib's ``regularized_h_score``):

        tr(pinv((1 - a) Sigma_T + a (tr Sigma_T / D) I) (1 - a) cov g),

    Sigma_T the population covariance of the features (1/N), cov g = S_B / (N - 1) and a the
    shrinkage coefficient: ``"ledoit_wolf"`` (default, as tllib; needs ``fourth_moments=True``,
    else a ValueError says so), ``"oas"`` (:func:`oas_shrinkage`, from the covariance alone) or
    a number in [0, 1]. ``rcond``: the pseudo-inverse's cut, 1e-15 as tllib. Higher is better."""
    check_dense_decomposition(stats.dim, "h_score_shrinkage", stats.device)
    if isinstance(shrinkage, str):
        if shrinkage not in SHRINKAGES:
            raise ValueError(f"shrinkage: expected one of {SHRINKAGES} or a number in [0, 1], got {shrinkage!r}")
    elif isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage: expected one of {SHRINKAGES} or a number in [0, 1], got {shrinkage!r}")
    sigma_t, cov_g = _covariances(stats, "h_score_shrinkage")
    if shrinkage == "ledoit_wolf":
        try:
            a = ledoit_wolf_shrinkage(stats)
        except ValueError as err:
            raise ValueError(f"h_score_shrinkage: {err}") from None
    elif shrinkage == "oas":
        a = oas_shrinkage(sigma_t, stats.num_samples)
    else:
        a = float(shrinkage)
    d = stats.dim
    eye = torch.eye(d, dtype=torch.float64, device=sigma_t.device)
    shrunk = (1.0 - a) * sigma_t + a * float(torch.trace(sigma_t)) / d * eye
    return _trace_pinv_product(shrunk, (1.0 - a) * cov_g, rcond)
