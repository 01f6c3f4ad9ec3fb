"""Transferability scores from ClassStats (DESIGN.md section 4): FaCe here, and the table of
all of them (:func:`transferability`). LogME, the H-scores, GBC, TransRate and SFDA live in
their own modules and are re-exported here. All float64, on the device that holds the
statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ._common import check_dense_decomposition, present_classes, row_blocks
from .bhattacharyya import gbc, pca_basis
from .hscore import h_score, h_score_shrinkage, ledoit_wolf_shrinkage, oas_shrinkage
from .evidence import LogMEFit, logme, logme_fit
from .nc import nc1
from .coding_rate import transrate

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


class Scores(dict):
    """{name: float} of the scores that could be computed, with ``reasons``: {name: why it
    could not} for each score left out (e.g. GBC without per-class variances)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reasons: dict = {}


def transferability(stats, *, rtol: Optional[float] = None, strict: bool = False) -> Scores:
    """Every transferability score the statistics define, as {name: float}: LogME, H-score,
    NC1, FaCe's C, F and S; the Ledoit-Wolf shrinkage H-score when ``fourth_moments=True``,
    GBC when ``per_class_diag=True``, TransRate when ``per_class_gram=True``. Higher is better
    for all but nc1. ``rtol``: NC1's rank cut. LEEP and NCE need source-model probabilities,
    not features: see :class:`JointStats`; SFDA needs two more passes: see
    :func:`ncfast.metrics.sfda_score`.

    A score that cannot be computed is left out of the mapping and its reason is kept in the
    result's ``reasons`` ({name: reason}); ``strict=True`` raises ValueError with the reasons
    instead. (TransRate is opt-in: it is neither computed nor listed without per_class_gram.)"""
    out = Scores()
    out["logme"] = logme(stats)
    out["h_score"] = h_score(stats)
    if stats.fourth_moments:
        out["h_score_shrinkage"] = h_score_shrinkage(stats)
    else:
        out.reasons["h_score_shrinkage"] = ("needs the fourth moments of the rows; create ClassStats with "
                                            "fourth_moments=True")
    f = face(stats, rtol=rtol)
    out["nc1"] = -f.variance_collapse
    out["face_c"], out["face_f"], out["face"] = f.variance_collapse, f.class_fairness, f.score
    if stats.per_class_diag:
        out["gbc"] = gbc(stats)
    else:
        out.reasons["gbc"] = "needs per-class variances; create ClassStats with per_class_diag=True"
    if stats.per_class_gram:
        out["transrate"] = transrate(stats)
    if strict and out.reasons:
        raise ValueError("transferability: " + "; ".join(f"{k} {why}" for k, why in out.reasons.items()))
    return out


__all__ = ["FaCe", "LogMEFit", "face", "gbc", "h_score", "h_score_shrinkage", "ledoit_wolf_shrinkage", "logme",
           "logme_fit", "oas_shrinkage", "pca_basis", "transferability", "transrate"]
