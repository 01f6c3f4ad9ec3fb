"""TransRate (Huang et al., "Frustratingly easy transferability estimation", ICML 2022), exactly
from the statistics with per-class scatter matrices, in the convention of its published code
(tllib's ``tllib.ranking.transrate``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import check_dense_decomposition, present_classes

# Classes are handled this many at a time, so the batched eigendecomposition's workspace stays
# a few D x D matrices per class in the group, not K of them.
_CLASS_GROUP = 16


def _coding_rate(gram: Tensor, rows: Tensor, eps: float) -> Tensor:
    """R = 1/2 logdet(I + Z^T Z / (n eps)) for a batch of Grams Z^T Z (..., D, D) of n rows,
    through the eigenvalues of Z^T Z (PSD): 1/2 sum_j log1p(lambda_j / (n eps))."""
    lam = torch.linalg.eigvalsh(gram).clamp(min=0.0)
    return 0.5 * torch.log1p(lam / (rows[..., None] * eps)).sum(dim=-1)


def transrate(stats, eps: float = 1e-4) -> float:
    """TransRate = R(Z) - (1/K) sum_c R(Z_c), higher is better, with Z the features centred on
    their mean mu_G, Z_c the rows of class c of Z (not re-centred), and the coding rate
    R(Z) = 1/2 logdet(I + Z^T Z / (n eps)) over the n rows of Z (tllib's convention; eps its
    1e-4). Exact from the statistics: Z^T Z = W + S_B and
    Z_c^T Z_c = W_c + n_c (mu_c - mu_G)(mu_c - mu_G)^T, which needs ``per_class_gram=True``.
    K counts the classes with rows (tllib's code divides by the largest label + 1)."""
    present = present_classes(stats, "transrate")
    if not stats.per_class_gram:
        raise ValueError("transrate: needs the per-class scatter matrices; create ClassStats with "
                         "per_class_gram=True (ncfast.accumulate(..., per_class_gram=True))")
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps!r}")
    check_dense_decomposition(stats.dim, "transrate", stats.device)
    n = stats.num_samples
    total = stats._state.scatter + stats.between_scatter()
    rows = torch.tensor(float(n), dtype=torch.float64, device=total.device)
    rate = float(_coding_rate(0.5 * (total + total.T), rows, eps))
    classes = present.nonzero().flatten()
    mu = stats._state.means - stats.global_mean
    counts = stats._state.counts.to(torch.float64)
    class_rates = 0.0
    for start in range(0, classes.numel(), _CLASS_GROUP):
        group = classes[start : start + _CLASS_GROUP]
        m = mu[group]
        gram = stats._state.class_gram[group] + counts[group, None, None] * m[:, :, None] * m[:, None, :]
        class_rates += float(_coding_rate(0.5 * (gram + gram.transpose(1, 2)), counts[group], eps).sum())
    return rate - class_rates / classes.numel()
