"""GBC, the Gaussian Bhattacharyya coefficient (Pandy et al., "Transferability estimation using
Bhattacharyya class separability", CVPR 2022), in google-research's ``stable_transfer``
conventions by default, and the PCA basis for its projected variant."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import check_dense_decomposition, present_classes, row_blocks

GAUSSIANS = ("diagonal", "spherical")
FLOORS = ("absolute", "relative")


def class_variances(stats, *, var_floor: float = 1e-4, floor: str = "absolute") -> Tensor:
    """(K', D) per-dimension variances q_cj / n_c (ddof 0) of the classes with rows, floored
    at `var_floor` (``floor="absolute"``, google-research's 1e-4) or at var_floor times the
    mean variance (``floor="relative"``)."""
    present = present_classes(stats, "gbc")
    if not stats.per_class_diag:
        raise ValueError("gbc: needs per-class variances; create ClassStats with per_class_diag=True")
    if floor not in FLOORS:
        raise ValueError(f"floor: expected one of {FLOORS}, got {floor!r}")
    if not var_floor > 0:
        raise ValueError(f"var_floor: expected a positive number, got {var_floor!r}")
    counts = stats._state.counts[present].to(torch.float64)
    var = stats._state.class_diag[present] / counts[:, None]
    if floor == "relative":
        return var.clamp(min=var_floor * max(float(var.mean()), torch.finfo(torch.float64).tiny))
    return var.clamp(min=var_floor)


def gbc(stats, *, gaussian: str = "diagonal", var_floor: float = 1e-4, floor: str = "absolute") -> float:
    """GBC = -sum_{c != c'} exp(-D_B(c, c')) over ordered pairs of classes (higher is better).

    Each class is a Gaussian N(mu_c, diag(v_c)) with v_c from :func:`class_variances` (default:
    floored at an absolute 1e-4, as google-research's ``stable_transfer``), and
    D_B(c,c') = 1/8 sum_j (mu_cj - mu_c'j)^2 / v_j + 1/2 [sum_j log v_j - 1/2 sum_j log v_cj
    - 1/2 sum_j log v_c'j], v = (v_c + v_c') / 2.

    ``gaussian="spherical"``: google-research's spherical variant, v_c replaced by the scalar
    s_c = mean_j v_cj (of the floored variances), so the first term is
    1/8 ||mu_c - mu_c'||^2 / s and the log term is counted once, not D times:
    1/2 [log s - 1/2 log s_c - 1/2 log s_c'], s = (s_c + s_c') / 2 (as their code computes it;
    the Bhattacharyya distance of two spherical Gaussians would have D times that term).

    Needs ``per_class_diag=True``. Pairwise work is blocked (no K x K x D tensor). For the PCA
    variant, project the features with :func:`pca_basis` in a second pass and score those
    statistics."""
    if gaussian not in GAUSSIANS:
        raise ValueError(f"gaussian: expected one of {GAUSSIANS}, got {gaussian!r}")
    var = class_variances(stats, var_floor=var_floor, floor=floor)
    mu = stats._state.means[present_classes(stats, "gbc")]
    if gaussian == "spherical":
        var = var.mean(dim=1, keepdim=True)
    log_var = torch.log(var)
    k, d = mu.shape
    total = 0.0
    for start, stop in row_blocks(k, k * d):
        v = 0.5 * (var[start:stop, None, :] + var[None, :, :])  # (b, K, D), or (b, K, 1) if spherical
        diff = mu[start:stop, None, :] - mu[None, :, :]
        first = 0.125 * (diff * diff / v).sum(dim=2)
        second = 0.5 * (torch.log(v).sum(dim=2) - 0.5 * log_var[start:stop].sum(dim=1)[:, None]
                        - 0.5 * log_var.sum(dim=1)[None, :])
        coef = torch.exp(-(first + second))
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
