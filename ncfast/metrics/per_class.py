"""Per-class neural-collapse outputs and the hyperspherical uniformity of the class means.

Per class (rhubarbwu/neural-collapse's per-class measures, as tensors): the within-class
variance, the CDNV row means, the norms of the centred means, the classifier-mean cosines, the
K x K interference (cosine) matrix of the centred means for moderate K, and the NC4 agreement
from a second pass. Uniformity (Liu et al., "Generalizing and decoupling neural collapse via
hyperspherical uniformity gap", ICLR 2023; rhubarbwu's ``kernel_stats``): the mean and variance
over pairs of a kernel of the distances between the normalised centred class means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
from torch import Tensor

from ._common import as_classifier, centred_means, mean_resolution, present_classes, row_blocks

KERNELS = ("log", "riesz")
# The K x K interference matrix is returned only up to this many classes (K^2 float64 entries).
MAX_INTERFERENCE_CLASSES = 4096


@dataclass
class PerClass:
    """Per-class outputs over the K' classes with rows (index i is class ``classes[i]``).

    classes: (K',) int64 labels; counts: (K',) int64 rows;
    within_variance: (K',) E_{i in c} ||x_i - mu_c||^2 = tr_c / n_c;
    cdnv_row_mean: (K',) mean over c' != c of (var_c + var_c') / (2 ||mu_c - mu_c'||^(2 dist_exp));
    mean_norms: (K',) ||mu_c - mu_G||;
    classifier_cosine: (K',) cos(w_c, mu_c - mu_G), with a classifier;
    interference: (K', K') cos(mu_c - mu_G, mu_c' - mu_G), when K' <= MAX_INTERFERENCE_CLASSES;
    nc4_agreement: (K',) fraction of the rows of class c where the nearest class centre and the
    classifier agree, from an :class:`ncfast.NCCStats` second pass with labels.
    All float64 except the labels and counts.
    """

    classes: Tensor
    counts: Tensor
    within_variance: Tensor
    cdnv_row_mean: Tensor
    mean_norms: Tensor
    classifier_cosine: Optional[Tensor] = None
    interference: Optional[Tensor] = None
    nc4_agreement: Optional[Tensor] = None

    def as_dict(self) -> dict:
        """Plain lists (JSON-ready); absent outputs are left out."""
        return {f.name: getattr(self, f.name).tolist() for f in fields(self) if getattr(self, f.name) is not None}


def _cdnv_row_means(mu: Tensor, var: Tensor, floor: float, dist_exp: float) -> Tensor:
    k = mu.shape[0]
    sq = (mu * mu).sum(dim=1)
    out = torch.empty(k, dtype=torch.float64, device=mu.device)
    for start, stop in row_blocks(k, k):
        dist2 = (sq[start:stop, None] + sq[None, :] - 2.0 * mu[start:stop] @ mu.T).clamp(min=0.0)
        rows = torch.arange(stop - start)
        dist2[rows, rows + start] = float("inf")
        if bool((dist2 <= floor).any()):
            raise ValueError("per_class: two classes have identical means; CDNV is undefined")
        scale = dist2 if dist_exp == 1.0 else dist2**dist_exp
        out[start:stop] = ((var[start:stop, None] + var[None, :]) / (2.0 * scale)).sum(dim=1) / (k - 1)
    return out


def per_class_report(stats, classifier: Optional[Tensor] = None, *, ncc=None, global_mean: str = "weighted",
              dist_exp: float = 1.0, max_interference_classes: int = MAX_INTERFERENCE_CLASSES) -> PerClass:
    """The :class:`PerClass` outputs of the statistics (K x D classifier optional; ``ncc``: an
    :class:`ncfast.NCCStats` that has seen a second pass with labels, for the NC4 agreement)."""
    present = present_classes(stats, "per_class")
    counts = stats._state.counts[present]
    mu = centred_means(stats, present, global_mean)
    var = stats._state.class_scatter[present] / counts.to(torch.float64)
    norms = mu.norm(dim=1)
    out = PerClass(
        classes=present.nonzero().flatten(),
        counts=counts.clone(),
        within_variance=var,
        cdnv_row_mean=_cdnv_row_means(mu, var, mean_resolution(stats, present) ** 2, dist_exp),
        mean_norms=norms,
    )
    unit = mu / norms.clamp(min=torch.finfo(torch.float64).tiny)[:, None]
    if mu.shape[0] <= max_interference_classes:
        out.interference = unit @ unit.T
    if classifier is not None:
        w = as_classifier(classifier, stats, "per_class")[present]
        out.classifier_cosine = (w * unit).sum(dim=1) / w.norm(dim=1).clamp(min=torch.finfo(torch.float64).tiny)
    if ncc is not None:
        out.nc4_agreement = ncc.class_agreement.to(mu.device)[present]
    return out


@dataclass
class Uniformity:
    """Mean and variance, over the pairs c < c', of a kernel of ||u_c - u_c'|| with
    u_c = (mu_c - mu_G) / ||mu_c - mu_G||: lower mean energy is more uniform on the sphere."""

    kernel: str
    mean: float
    variance: float


def _kernel(dist: Tensor, kernel: str, dim: int) -> Tensor:
    if kernel == "log":
        return -torch.log(dist)  # log(||u - u'||^-1)
    s = dim - 2  # Riesz s-energy with s = D - 2, signed as rhubarbwu's riesz_kernel
    return math.copysign(1.0, s) * dist ** (-s)


def hyperspherical_uniformity(stats, kernel: str = "log", *, global_mean: str = "weighted") -> Uniformity:
    """Hyperspherical uniformity of the centred class means (Liu et al. 2023), as
    rhubarbwu/neural-collapse's ``kernel_stats`` with ``log_kernel`` (log 1/d) or
    ``riesz_kernel`` (sign(s) d^-s, s = D - 2): the mean and variance of the kernel over the
    pairs of classes with rows. Pairwise work is blocked (no K x K x D tensor at once)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")
    present = present_classes(stats, "hyperspherical_uniformity")
    mu = centred_means(stats, present, global_mean)
    norms = mu.norm(dim=1)
    if bool((norms <= mean_resolution(stats, present)).any()):
        raise ValueError("hyperspherical_uniformity: a class mean coincides with the global mean; "
                         "its direction is undefined")
    unit = mu / norms[:, None]
    k, d = unit.shape
    pairs = k * (k - 1)

    def blocks():
        for start, stop in row_blocks(k, k * d):
            dist = (unit[start:stop, None, :] - unit[None, :, :]).norm(dim=2)
            rows = torch.arange(stop - start)
            off = torch.ones_like(dist, dtype=torch.bool)
            off[rows, rows + start] = False
            if bool((dist[off] == 0).any()):
                raise ValueError("hyperspherical_uniformity: two class means point the same way")
            yield _kernel(dist[off], kernel, d)

    mean = sum(float(b.sum()) for b in blocks()) / pairs
    variance = sum(float(((b - mean) ** 2).sum()) for b in blocks()) / pairs
    return Uniformity(kernel=kernel, mean=mean, variance=variance)
