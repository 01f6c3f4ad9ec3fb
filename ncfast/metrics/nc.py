"""Neural-collapse scores from ClassStats (DESIGN.md section 4; Papyan, Han & Donoho 2020,
"Prevalence of neural collapse during the terminal phase of deep learning training";
Galanti et al. 2022 for CDNV; Kothapalli 2023 for the ETF form of NC3). All float64, on the
device that holds the statistics.

``global_mean`` ("weighted", the default, Papyan et al.'s count-weighted mu_G; or
"unweighted", the plain mean of the class means, rhubarbwu/neural-collapse's default) chooses
where the class means are centred; CDNV does not depend on it (docs/CONVENTIONS.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from ._common import (as_classifier, centre_of, centred_means, mean_resolution, present_classes, require_all_classes,
                      row_blocks)
from .per_class import PerClass, per_class_report

NC3_VARIANTS = ("papyan", "kothapalli")


def default_rank_rtol(k: int, d: int) -> float:
    """Singular values of M / sqrt(K) below rtol * s_max are dropped, with
    rtol = sqrt(max(K, D) * float64 eps) (about 4e-8 for K, D ~ 1000): the same cut as a
    pseudo-inverse of Sigma_B = M^T M / K at rcond max(K, D) * eps (NumPy's matrix_rank
    convention applied to Sigma_B). A cut at eps relative to s_max would keep the
    rounding noise of centring features with a large common offset (the K centred means
    are linearly dependent, so one singular value is pure noise at about eps * |mu|)."""
    return math.sqrt(max(k, d) * torch.finfo(torch.float64).eps)


def nc1(stats, rtol: Optional[float] = None, *, global_mean: str = "weighted") -> float:
    """NC1 = (1/K) tr(Sigma_W Sigma_B^+), exactly, without a D x D pseudo-inverse.

    With the thin SVD M / sqrt(K) = U S V^T of the K x D centred class means,
    Sigma_B^+ = V S^-2 V^T, so NC1 = (1/K) sum_j (v_j^T Sigma_W v_j) / s_j^2 over the
    singular values s_j > max(rtol * s_max, r), with rtol from :func:`default_rank_rtol`
    unless given and r the rounding floor of the means (64 max(K, D) eps times their RMS
    norm, so that means that differ only in rounding count as coinciding). K counts the classes that have rows. Smaller is more
    collapsed. Raises ValueError when no singular value passes (all means coincide).
    ``global_mean="unweighted"`` centres Sigma_B on the mean of the class means (as
    rhubarbwu/neural-collapse's ``covariance_pinv``).
    """
    present = present_classes(stats, "nc1")
    m = centred_means(stats, present, global_mean)
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


def nc1_trace(stats, *, global_mean: str = "weighted") -> float:
    """NC1_tr = tr(Sigma_W) / tr(Sigma_B), with Papyan's class-balanced Sigma_B over the
    classes that have rows: tolerant of an ill-conditioned Sigma_B. Raises ValueError when
    sqrt(tr Sigma_B) is below the rounding floor of the means (see :func:`nc1`).
    (rhubarbwu/neural-collapse's ``covariance_ratio`` with ``global_mean="unweighted"``.)"""
    present = present_classes(stats, "nc1_trace")
    m = centred_means(stats, present, global_mean)
    tr_b = float((m * m).sum()) / m.shape[0]
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
    # That form loses half the digits when G is close to E (sqrt of a difference near 0), which
    # needs rank G = K - 1 <= D: there the K x K Gram is the small one and the difference is
    # taken directly; for K > D the distance stays far from 0 and the identity is exact enough.
    if k <= a.shape[1]:
        gram = a @ a.T
        etf_matrix = (torch.eye(k, dtype=torch.float64, device=a.device) - 1.0 / k) / math.sqrt(k - 1)
        etf = float((gram / gram.norm() - etf_matrix).norm())
    else:
        g_norm = float((a.T @ a).norm())
        inner = (float((norms**2).sum()) - float(a.sum(dim=0).norm() ** 2) / k) / math.sqrt(k - 1)
        etf = math.sqrt(max(0.0, 2.0 - 2.0 * inner / g_norm))
    return NC2(
        equinorm=float(norms.std(unbiased=False) / norms.mean()),
        equiangularity=math.sqrt(sq_dev / pairs),
        max_angle=abs_gap / pairs,
        etf_distance=etf,
    )


def nc3(stats, classifier: Tensor, *, variant: str = "papyan", global_mean: str = "weighted") -> float:
    """NC3, self-duality of the classifier W (K x D) and the centred class means M (every class
    must have rows):

    ``variant="papyan"`` (default; Papyan, Han & Donoho 2020):
        || W/||W||_F - M/||M||_F ||_F^2;
    ``variant="kothapalli"`` (Kothapalli 2023; rhubarbwu/neural-collapse's ``self_duality_error``):
        || W M^T / ||W M^T||_F - (I - 11^T/K)/sqrt(K-1) ||_F, the distance of the cross Gram from
        a simplex ETF (computed without a K x K matrix when K > D).
    """
    if variant not in NC3_VARIANTS:
        raise ValueError(f"variant: expected one of {NC3_VARIANTS}, got {variant!r}")
    require_all_classes(stats, "nc3")
    w = as_classifier(classifier, stats, "nc3")
    m = stats._state.means - centre_of(stats, stats._state.counts > 0, global_mean)
    if variant == "papyan":
        return float(((w / w.norm() - m / m.norm()) ** 2).sum())
    k = w.shape[0]
    if k <= w.shape[1]:  # the K x K difference itself (no cancellation when the error is small)
        cross = w @ m.T
        norm = float(cross.norm())
        if norm == 0.0:
            raise ValueError("nc3: W M^T is zero; the kothapalli variant is undefined")
        etf = (torch.eye(k, dtype=torch.float64, device=w.device) - 1.0 / k) / math.sqrt(k - 1)
        return float((cross / norm - etf).norm())
    # K > D: ||G/||G|| - E||^2 = 2 - 2 <G, E> / ||G||, with ||W M^T||_F^2 = <W^T W, M^T M> and
    # <G, E> = (tr G - 1^T G 1 / K) / sqrt(K-1), 1^T W M^T 1 = (sum W) . (sum M): no K x K matrix
    norm = math.sqrt(max(0.0, float(((w.T @ w) * (m.T @ m)).sum())))
    inner = (float((w * m).sum()) - float(w.sum(dim=0) @ m.sum(dim=0)) / k) / math.sqrt(k - 1)
    if norm == 0.0:
        raise ValueError("nc3: W M^T is zero; the kothapalli variant is undefined")
    return math.sqrt(max(0.0, 2.0 - 2.0 * inner / norm))


def cdnv(stats, *, dist_exp: float = 1.0) -> float:
    """Class-distance normalised variance (Galanti et al. 2022):
    mean over ordered pairs c != c' of (var_c + var_c') / (2 ||mu_c - mu_c'||^(2 dist_exp)),
    var_c = tr_c / n_c = E_{i in c} ||x_i - mu_c||^2. Uses only the per-class scatter traces.
    ``dist_exp`` is rhubarbwu/neural-collapse's power on the squared distance (1, the default,
    is Galanti et al.'s CDNV). Pairwise work is blocked (no K x K matrix for large K). Raises
    ValueError when two means are closer than the rounding floor of the means (see :func:`nc1`)."""
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
        scale = dist2 if dist_exp == 1.0 else dist2**dist_exp
        total += float(((var[start:stop, None] + var[None, :]) / (2.0 * scale)).sum())
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
    per_class: Optional[PerClass] = None

    def as_dict(self) -> dict:
        """Plain values (JSON-ready: the per-class tensors become lists)."""
        out = asdict(replace(self, per_class=None))
        out["per_class"] = self.per_class.as_dict() if self.per_class is not None else None
        return out


def nc_report(stats, classifier: Optional[Tensor] = None, *, rtol: Optional[float] = None,
              global_mean: str = "weighted", per_class: bool = False, ncc=None) -> NCReport:
    """NC1, NC1_tr, CDNV and NC2 of the class means; with `classifier` (K x D) also NC2 of its
    rows and NC3. NC4 needs a second pass over the data: see :class:`ncfast.NCCStats`.
    ``global_mean``: where the means are centred (see the module docstring). ``per_class=True``
    adds the per-class outputs (:class:`ncfast.metrics.PerClass`: within-class variances, CDNV
    row means, mean norms, classifier-mean cosines, the interference matrix for moderate K and,
    given ``ncc`` = an NCCStats after its second pass, the per-class NC4 agreement)."""
    present = present_classes(stats, "nc_report")
    report = NCReport(
        num_samples=stats.num_samples,
        num_classes=int(present.sum()),
        nc1=nc1(stats, rtol, global_mean=global_mean),
        nc1_trace=nc1_trace(stats, global_mean=global_mean),
        cdnv=cdnv(stats),
        nc2_means=nc2(centred_means(stats, present, global_mean)),
    )
    if classifier is not None:
        w = as_classifier(classifier, stats, "nc_report")
        report.nc2_classifier = nc2(w)
        report.nc3 = nc3(stats, w, global_mean=global_mean)
    if per_class:
        report.per_class = per_class_report(stats, classifier, ncc=ncc, global_mean=global_mean)
    return report
