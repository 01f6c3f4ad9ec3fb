"""Neural-collapse scores from ClassStats (DESIGN.md section 4; Papyan, Han & Donoho 2020,
"Prevalence of neural collapse during the terminal phase of deep learning training";
Galanti et al. 2022 for CDNV). All float64, on the device that holds the statistics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import Tensor

from ._common import as_classifier, mean_resolution, present_classes, require_all_classes, row_blocks


def default_rank_rtol(k: int, d: int) -> float:
    """Singular values of M / sqrt(K) below rtol * s_max are dropped, with
    rtol = sqrt(max(K, D) * float64 eps) (about 4e-8 for K, D ~ 1000): the same cut as a
    pseudo-inverse of Sigma_B = M^T M / K at rcond max(K, D) * eps (NumPy's matrix_rank
    convention applied to Sigma_B). A cut at eps relative to s_max would keep the
    rounding noise of centring features with a large common offset (the K centred means
    are linearly dependent, so one singular value is pure noise at about eps * |mu|)."""
    return math.sqrt(max(k, d) * torch.finfo(torch.float64).eps)


def nc1(stats, rtol: Optional[float] = None) -> float:
    """NC1 = (1/K) tr(Sigma_W Sigma_B^+), exactly, without a D x D pseudo-inverse.

    With the thin SVD M / sqrt(K) = U S V^T of the K x D centred class means,
    Sigma_B^+ = V S^-2 V^T, so NC1 = (1/K) sum_j (v_j^T Sigma_W v_j) / s_j^2 over the
    singular values s_j > max(rtol * s_max, r), with rtol from :func:`default_rank_rtol`
    unless given and r the rounding floor of the means (64 max(K, D) eps times their RMS
    norm, so that means that differ only in rounding count as coinciding). K counts the classes that have rows. Smaller is more
    collapsed. Raises ValueError when no singular value passes (all means coincide).
    """
    present = present_classes(stats, "nc1")
    m = stats.centred_means()
    k = m.shape[0]
    rtol = default_rank_rtol(k, stats.dim) if rtol is None else rtol
    _, s, vh = torch.linalg.svd(m / math.sqrt(k), full_matrices=False)
    keep = s > max(rtol * float(s[0]), mean_resolution(stats, present))
    if not bool(keep.any()):
        raise ValueError("nc1: all class means coincide (Sigma_B = 0 up to rounding); NC1 is undefined")
    v = vh[keep]
    within = stats.sigma_w()
    quad = ((v @ within) * v).sum(dim=1)
    return float((quad / s[keep] ** 2).sum() / k)


def nc1_trace(stats) -> float:
    """NC1_tr = tr(Sigma_W) / tr(Sigma_B), with Papyan's class-balanced Sigma_B over the
    classes that have rows: tolerant of an ill-conditioned Sigma_B. Raises ValueError when
    sqrt(tr Sigma_B) is below the rounding floor of the means (see :func:`nc1`)."""
    present = present_classes(stats, "nc1_trace")
    tr_b = float(torch.trace(stats.sigma_b()))
    floor = mean_resolution(stats, present)
    if tr_b <= floor**2:
        raise ValueError("nc1_trace: all class means coincide (tr Sigma_B = 0 up to rounding)")
    return float(torch.trace(stats.sigma_w())) / tr_b


@dataclass
class NC2:
    """Papyan's NC2 measures of a K x D matrix of class vectors A (centred means or classifier rows).

    equinorm: std_c ||A_c|| / mean_c ||A_c||;
    equiangularity: std over c != c' of cos(A_c, A_c');
    max_angle: mean over c != c' of |cos(A_c, A_c') + 1/(K-1)|;
    etf_distance: || G/||G||_F - (I - 11^T/K)/sqrt(K-1) ||_F with G = A A^T.
    All are 0 for a simplex equiangular tight frame.
    """

    equinorm: float
    equiangularity: float
    max_angle: float
    etf_distance: float


def nc2(vectors: Tensor) -> NC2:
    """NC2 of the rows of `vectors` (K x D, K >= 2). K x K work is done in row blocks."""
    a = torch.as_tensor(vectors).to(torch.float64)
    k = a.shape[0] if a.ndim else 0
    if a.ndim != 2 or k < 2:
        raise ValueError(f"vectors: expected a (K, D) matrix with K >= 2, got shape {tuple(a.shape)}")
    norms = a.norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError("vectors: a class vector is zero, its angles are undefined")
    unit = a / norms[:, None]
    pairs = k * (k - 1)
    # two passes over the blocks: mean of the off-diagonal cosines, then their spread
    cos_sum = 0.0
    abs_gap = 0.0
    for start, stop in row_blocks(k, k):
        cos = unit[start:stop] @ unit.T
        cos[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        cos_sum += float(cos.sum())
        gap = (cos + 1.0 / (k - 1)).abs()
        gap[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        abs_gap += float(gap.sum())
    cos_mean = cos_sum / pairs
    sq_dev = 0.0
    for start, stop in row_blocks(k, k):
        dev = unit[start:stop] @ unit.T - cos_mean
        dev[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        sq_dev += float((dev * dev).sum())
    # ||G/||G|| - E||^2 = 2 - 2 <G, E> / ||G||, with <G, E> = (tr G - ||sum_c A_c||^2 / K) / sqrt(K-1)
    # and ||G||_F = ||A^T A||_F, so no K x K matrix is needed.
    small = a @ a.T if k <= a.shape[1] else a.T @ a
    g_norm = float(small.norm())
    inner = (float((norms**2).sum()) - float(a.sum(dim=0).norm() ** 2) / k) / math.sqrt(k - 1)
    etf = math.sqrt(max(0.0, 2.0 - 2.0 * inner / g_norm))
    return NC2(
        equinorm=float(norms.std(unbiased=False) / norms.mean()),
        equiangularity=math.sqrt(sq_dev / pairs),
        max_angle=abs_gap / pairs,
        etf_distance=etf,
    )


def nc3(stats, classifier: Tensor) -> float:
    """NC3 (self-duality) = || W/||W||_F - M/||M||_F ||_F^2, with W the K x D classifier and M
    the centred class means (every class must have rows)."""
    require_all_classes(stats, "nc3")
    w = as_classifier(classifier, stats, "nc3")
    m = stats._state.means - stats.global_mean
    return float(((w / w.norm() - m / m.norm()) ** 2).sum())


def cdnv(stats) -> float:
    """Class-distance normalised variance (Galanti et al. 2022):
    mean over ordered pairs c != c' of (var_c + var_c') / (2 ||mu_c - mu_c'||^2),
    var_c = tr_c / n_c = E_{i in c} ||x_i - mu_c||^2. Uses only the per-class scatter traces.
    Pairwise work is blocked (no K x K matrix for large K). Raises ValueError when two means
    are closer than the rounding floor of the means (see :func:`nc1`)."""
    present = present_classes(stats, "cdnv")
    mu = stats._state.means[present] - stats.global_mean
    var = stats._state.class_scatter[present] / stats._state.counts[present].to(torch.float64)
    k = mu.shape[0]
    sq = (mu * mu).sum(dim=1)
    floor = mean_resolution(stats, present) ** 2
    total = 0.0
    for start, stop in row_blocks(k, k):
        dist2 = (sq[start:stop, None] + sq[None, :] - 2.0 * mu[start:stop] @ mu.T).clamp(min=0.0)
        rows = torch.arange(stop - start)
        dist2[rows, rows + start] = float("inf")  # the diagonal contributes 0
        if bool((dist2 <= floor).any()):
            raise ValueError("cdnv: two classes have identical means; CDNV is undefined")
        total += float(((var[start:stop, None] + var[None, :]) / (2.0 * dist2)).sum())
    return total / (k * (k - 1))


@dataclass
class NCReport:
    """Every neural-collapse score that the statistics (and optional classifier) define."""

    num_samples: int
    num_classes: int
    nc1: float
    nc1_trace: float
    cdnv: float
    nc2_means: NC2
    nc2_classifier: Optional[NC2] = None
    nc3: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def nc_report(stats, classifier: Optional[Tensor] = None, *, rtol: Optional[float] = None) -> NCReport:
    """NC1, NC1_tr, CDNV and NC2 of the class means; with `classifier` (K x D) also NC2 of its
    rows and NC3. NC4 needs a second pass over the data: see :class:`ncfast.NCCStats`."""
    present_classes(stats, "nc_report")
    report = NCReport(
        num_samples=stats.num_samples,
        num_classes=int((stats._state.counts > 0).sum()),
        nc1=nc1(stats, rtol),
        nc1_trace=nc1_trace(stats),
        cdnv=cdnv(stats),
        nc2_means=nc2(stats.centred_means()),
    )
    if classifier is not None:
        w = as_classifier(classifier, stats, "nc_report")
        report.nc2_classifier = nc2(w)
        report.nc3 = nc3(stats, w)
    return report
