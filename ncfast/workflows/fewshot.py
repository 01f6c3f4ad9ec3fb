"""Few-shot feature importance and soft mask (DESIGN.md section 5; Luo et al., "Less is More:
On the Feature Redundancy of Pretrained Models When Transferring to Few-shot Tasks",
arXiv 2310.03843).

In few-shot linear probing, dimensions with large within-class variance and small distance
between class centroids confound the classifier. Their exact importance formula is
unpublished; ncfast uses the per-dimension Fisher ratio of the support statistics,

    r_j = (S_B)_jj / W_jj,   S_B = sum_c n_c (mu_c - mu_G)(mu_c - mu_G)^T,  W the within scatter,

and rescales the features by the soft mask m_j = (r_j / mean(r))^tau, tau in [0, 1] (0 = off),
with tau chosen by leave-one-out nearest-centroid accuracy on the support set.

Extension (not in the paper or DESIGN.md): with one shot per class W is zero, so the caller
may add ``prior_rows`` pseudo-rows of a within-class variance estimated elsewhere (e.g. the
base classes' ``sigma_w().diagonal()``): W_jj -> W_jj + prior_rows * within_prior_j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..stats import ClassStats

DEFAULT_TAUS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
_BLOCK_ENTRIES = 1 << 22  # LOO work is done in blocks of held-out rows of about this many entries


# ---------------------------------------------------------------------------------- inputs


def _as_matrix(value: Any, name: str) -> Tensor:
    x = torch.as_tensor(value)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected floating-point features, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (rows, dim) array, got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def _as_class_index(value: Any, rows: int, name: str) -> Tuple[Tensor, Tensor]:
    """Labels -> (classes present, sorted; index of each row's class in them)."""
    y = torch.as_tensor(value)
    if y.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name}: expected int32/int64 class labels, got dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != rows:
        raise ValueError(f"{name}: expected {rows} labels (one per row), got shape {tuple(y.shape)}")
    classes, index = torch.unique(y.to(torch.int64), sorted=True, return_inverse=True)
    return classes, index


def _within_prior(within_prior: Optional[Any], prior_rows: float, dim: int) -> Optional[Tensor]:
    if prior_rows < 0:
        raise ValueError(f"prior_rows: expected a non-negative number, got {prior_rows!r}")
    if within_prior is None or prior_rows == 0:
        return None
    prior = torch.as_tensor(within_prior).to(torch.float64).flatten()
    if prior.shape[0] != dim:
        raise ValueError(f"within_prior: expected {dim} variances, got {prior.shape[0]}")
    if bool((prior < 0).any()) or not bool(torch.isfinite(prior).all()):
        raise ValueError("within_prior: variances must be finite and non-negative")
    return prior_rows * prior


# ---------------------------------------------------------------------------------- importance


def _fisher_ratio(between: Tensor, within: Tensor) -> Tensor:
    """r = between / within elementwise (last axis = dimensions); 0/0 -> 0 (a dimension constant
    over the whole set carries nothing); a within variance below 1e-12 x its mean is floored."""
    floor = 1e-12 * within.mean(dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    r = between.clamp(min=0.0) / torch.maximum(within, floor)
    return torch.where(between > 0, r, torch.zeros_like(r))


def feature_importance(stats: ClassStats, *, within_prior: Optional[Any] = None, prior_rows: float = 0.0) -> Tensor:
    """Per-dimension Fisher ratio r_j = (S_B)_jj / W_jj of labelled features (DESIGN.md section 5).

    Parameters
    ----------
    stats : ClassStats
        Statistics of the support set (or any labelled set). With ``per_class_diag=True``,
        W_jj is read as sum_c q_cj, otherwise from the diagonal of the within scatter.
    within_prior : array of shape (D,), optional
        A within-class variance per dimension from other data, added as ``prior_rows``
        pseudo-rows (module docstring); required when every class has one row.
    prior_rows : float
        Weight of ``within_prior`` in rows (0 = ignore it).

    Returns
    -------
    Tensor, shape (D,), float64, >= 0
        Larger is more discriminative. The scale is irrelevant to :func:`soft_mask`.
    """
    if not isinstance(stats, ClassStats):
        raise TypeError(f"stats: expected ClassStats, got {type(stats).__name__}")
    present = stats._state.counts > 0
    if int(present.sum()) < 2:
        raise ValueError(f"stats: needs at least 2 classes with rows, got {int(present.sum())}")
    counts = stats._state.counts[present].to(torch.float64)
    centred = stats.centred_means()
    between = (counts[:, None] * centred * centred).sum(dim=0)
    if stats.per_class_diag:
        within = stats._state.class_diag[present].sum(dim=0)
    else:
        within = stats._state.scatter.diagonal().clone()
    prior = _within_prior(within_prior, prior_rows, stats.dim)
    if prior is not None:
        within = within + prior.to(within.device)
    if not bool((within > 0).any()):
        raise ValueError(
            "stats: the within-class scatter is zero (one row per class?); pass within_prior "
            "(e.g. base-class sigma_w().diagonal()) with prior_rows > 0"
        )
    return _fisher_ratio(between, within)


def soft_mask(importance: Any, tau: float) -> Tensor:
    """m_j = (r_j / mean(r))^tau (DESIGN.md section 5). tau = 0 gives all ones; dimensions with
    r_j = 0 get 0 for tau > 0. Returns a float64 tensor shaped like ``importance``."""
    r = torch.as_tensor(importance).to(torch.float64)
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau: expected a value in [0, 1], got {tau!r}")
    if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError("importance: expected finite, non-negative values")
    mean = r.mean(dim=-1, keepdim=True)
    if bool((mean <= 0).any()):
        raise ValueError("importance: all zero, the mask is undefined")
    return (r / mean) ** float(tau)


# ---------------------------------------------------------------------------------- LOO selection


def loo_ncc_accuracy(
    support_x: Any,
    support_y: Any,
    taus: Sequence[float] = DEFAULT_TAUS,
    *,
    within_prior: Optional[Any] = None,
    prior_rows: float = 0.0,
) -> Tensor:
    """Leave-one-out nearest-centroid accuracy of the masked support set, for every tau.

    For each held-out row i, the class means, counts and W are downdated without it (W_jj -=
    n_c/(n_c-1) (x_ij - mu_cj)^2, exact), S_B is recomputed from those means, the importance
    and mask follow, and x_i is assigned to the nearest masked centroid: the held-out row
    never informs its own mask. Needs at least 2 rows in every class. Returns (len(taus),)
    float64 accuracies.
    """
    x = _as_matrix(support_x, "support_x")
    classes, idx = _as_class_index(support_y, x.shape[0], "support_y")
    taus_t = torch.as_tensor([float(t) for t in taus], dtype=torch.float64)
    if taus_t.numel() == 0 or bool(((taus_t < 0) | (taus_t > 1)).any()):
        raise ValueError(f"taus: expected values in [0, 1], got {list(taus)!r}")
    k, (n, d) = classes.numel(), x.shape
    if k < 2:
        raise ValueError(f"support_y: needs at least 2 classes, got {k}")
    counts = torch.bincount(idx, minlength=k).to(torch.float64)
    if bool((counts < 2).any()):
        raise ValueError(
            "support_y: leave-one-out needs at least 2 rows in every class "
            f"(smallest class has {int(counts.min())}); pass tau explicitly instead"
        )
    means = torch.zeros(k, d, dtype=torch.float64).index_add_(0, idx, x) / counts[:, None]
    mu_g = x.mean(dim=0)
    resid = x - means[idx]
    within = (resid * resid).sum(dim=0)
    prior = _within_prior(within_prior, prior_rows, d)

    correct = torch.zeros(taus_t.numel(), dtype=torch.float64)
    step = max(1, _BLOCK_ENTRIES // (k * d * taus_t.numel()))
    for start in range(0, n, step):
        rows = torch.arange(start, min(n, start + step))
        xi, ci = x[rows], idx[rows]
        nc = counts[ci][:, None]
        b = rows.numel()
        w_i = (within - nc / (nc - 1) * resid[rows] ** 2).clamp(min=0.0)
        # class means and counts without row i: only its own class moves
        mu_i = means.expand(b, k, d).clone()
        mu_i[torch.arange(b), ci] = (nc * means[ci] - xi) / (nc - 1)
        n_i = counts.expand(b, k).clone()
        n_i[torch.arange(b), ci] -= 1.0
        mu_g_i = (n * mu_g - xi) / (n - 1)
        between_i = (n_i[:, :, None] * (mu_i - mu_g_i[:, None, :]) ** 2).sum(dim=1)
        r_i = _fisher_ratio(between_i, w_i if prior is None else w_i + prior)
        ratio = r_i / r_i.mean(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
        weights = ratio[:, None, :] ** (2.0 * taus_t[None, :, None])  # (b, T, D): m_j^2
        sq = (xi[:, None, :] - mu_i) ** 2  # (b, K, D)
        dist = torch.einsum("btd,bkd->btk", weights, sq)
        pred = dist.argmin(dim=2)
        correct += (pred == ci[:, None]).sum(dim=0).to(torch.float64)
    return correct / n


def select_tau(
    support_x: Any,
    support_y: Any,
    taus: Sequence[float] = DEFAULT_TAUS,
    *,
    within_prior: Optional[Any] = None,
    prior_rows: float = 0.0,
) -> Tuple[float, Tensor]:
    """The tau with the highest :func:`loo_ncc_accuracy`; ties go to the smallest tau (the
    least masking). Returns (tau, accuracies over ``taus``)."""
    acc = loo_ncc_accuracy(support_x, support_y, taus, within_prior=within_prior, prior_rows=prior_rows)
    best = float(acc.max())
    tau = min(float(t) for t, a in zip(taus, acc.tolist()) if a == best)
    return tau, acc


@dataclass
class SoftMask:
    """A fitted mask: ``mask`` (D,) float64, the ``tau`` used, the support ``importance``, and
    the LOO accuracies over ``taus`` when tau was selected (None when given)."""

    mask: Tensor
    tau: float
    importance: Tensor
    taus: Tuple[float, ...]
    loo_accuracy: Optional[Tensor]

    def __call__(self, features: Any) -> Tensor:
        """Masked features x * m (float64)."""
        x = _as_matrix(features, "features")
        if x.shape[1] != self.mask.shape[0]:
            raise ValueError(f"features: expected {self.mask.shape[0]} columns, got {x.shape[1]}")
        return x * self.mask


def fit_soft_mask(
    support_x: Any,
    support_y: Any,
    *,
    tau: Optional[float] = None,
    taus: Sequence[float] = DEFAULT_TAUS,
    within_prior: Optional[Any] = None,
    prior_rows: float = 0.0,
) -> SoftMask:
    """Importance from the support statistics (a ClassStats with per_class_diag=True) and the
    soft mask, tau chosen by :func:`select_tau` unless given (1-shot supports must give it)."""
    x = _as_matrix(support_x, "support_x")
    classes, idx = _as_class_index(support_y, x.shape[0], "support_y")
    stats = ClassStats(classes.numel(), x.shape[1], per_class_diag=True).update(x, idx)
    importance = feature_importance(stats, within_prior=within_prior, prior_rows=prior_rows)
    accuracy = None
    if tau is None:
        tau, accuracy = select_tau(x, idx, taus, within_prior=within_prior, prior_rows=prior_rows)
    return SoftMask(soft_mask(importance, tau), float(tau), importance, tuple(float(t) for t in taus), accuracy)


# ---------------------------------------------------------------------------------- classifiers


def _masked(x: Tensor, mask: Optional[Any]) -> Tensor:
    if mask is None:
        return x
    m = torch.as_tensor(mask).to(torch.float64).flatten()
    if m.shape[0] != x.shape[1]:
        raise ValueError(f"mask: expected {x.shape[1]} values, got {m.shape[0]}")
    return x * m


def nearest_centroid(support_x: Any, support_y: Any, query_x: Any, *, mask: Optional[Any] = None) -> Tensor:
    """Labels of the query rows by the nearest class mean of the (masked) support rows
    (Euclidean). Returns (Q,) int64 label values from ``support_y``."""
    x = _masked(_as_matrix(support_x, "support_x"), mask)
    classes, idx = _as_class_index(support_y, x.shape[0], "support_y")
    q = _masked(_as_matrix(query_x, "query_x"), mask)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"query_x: expected {x.shape[1]} columns, got {q.shape[1]}")
    counts = torch.bincount(idx, minlength=classes.numel()).to(torch.float64)
    means = torch.zeros(classes.numel(), x.shape[1], dtype=torch.float64).index_add_(0, idx, x) / counts[:, None]
    return classes[torch.cdist(q, means).argmin(dim=1)]


def _logistic_newton(x: Tensor, idx: Tensor, k: int, l2: float, max_iter: int, tol: float) -> Tuple[Tensor, Tensor]:
    """argmin_{W,b} mean CE(x W + b, idx) + (l2/2) ||W||_F^2, exactly, by Newton's method.

    The optimal W lies in the span of the centred rows (representer theorem; the bias is not
    penalised), so the problem is solved in the r <= n coordinates of that span: (r+1) K
    unknowns whatever D is. Each step solves the Hessian system; backtracking (Armijo)
    keeps the decrease monotone; it stops when the Newton decrement^2 / 2 < tol.
    """
    n = x.shape[0]
    mu = x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x - mu, full_matrices=False)
    basis = vh[s > s.max().clamp(min=torch.finfo(torch.float64).tiny) * 1e-12].T  # (D, r)
    r = basis.shape[1]
    xt = torch.cat([(x - mu) @ basis, torch.ones(n, 1, dtype=x.dtype)], dim=1)  # (n, r+1), last = bias
    target = torch.nn.functional.one_hot(idx, k).to(x.dtype)
    penalty = torch.ones(r + 1, 1, dtype=x.dtype)
    penalty[-1] = 0.0
    theta = torch.zeros(r + 1, k, dtype=x.dtype)

    def objective(th: Tensor) -> Tensor:
        z = xt @ th
        return (torch.logsumexp(z, dim=1) - (z * target).sum(dim=1)).mean() + 0.5 * l2 * ((th * penalty) ** 2).sum()

    value = objective(theta)
    for _ in range(max_iter):
        p = torch.softmax(xt @ theta, dim=1)
        grad = xt.T @ (p - target) / n + l2 * penalty * theta
        # Hessian: (1/n) sum_i xt_i xt_i^T (x) (diag p_i - p_i p_i^T), as one GEMM
        blocks = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, K, K)
        weighted = (blocks[:, :, :, None] * xt[:, None, None, :]).reshape(n, -1)
        hess = (xt.T @ weighted / n).reshape(r + 1, k, k, r + 1).permute(0, 1, 3, 2).reshape((r + 1) * k, -1)
        # the penalty, and a tiny ridge for the softmax's shift invariance in the bias
        hess = hess + torch.diag((l2 * penalty).expand(r + 1, k).reshape(-1) + 1e-10)
        chol = torch.linalg.cholesky(hess)  # positive definite: l2 > 0 and the ridge
        step = torch.cholesky_solve(-grad.reshape(-1, 1), chol).reshape(r + 1, k)
        decrement = -float((grad * step).sum())
        if decrement / 2 < tol:
            break
        t = 1.0
        while True:
            trial = theta + t * step
            trial_value = objective(trial)
            if trial_value <= value - 0.25 * t * decrement or t < 1e-10:
                break
            t *= 0.5
        theta, value = trial, trial_value
    weight = basis @ theta[:-1]
    return weight, theta[-1] - mu @ weight


def linear_probe(
    support_x: Any,
    support_y: Any,
    query_x: Any,
    *,
    mask: Optional[Any] = None,
    l2: float = 1e-2,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> Tensor:
    """Multinomial logistic regression on the (masked) support rows, applied to the queries.

    Minimises mean cross-entropy + (l2 / 2) ||W||_F^2 (bias not penalised), in float64, to
    convergence by Newton's method in the span of the support rows (exact; fast for few-shot
    supports whatever D is). The penalty is what makes a feature's scale, and so the mask,
    matter. Returns (Q,) int64 label values from ``support_y``.
    """
    if not l2 > 0:
        raise ValueError(f"l2: expected a positive number, got {l2!r}")
    x = _masked(_as_matrix(support_x, "support_x"), mask)
    classes, idx = _as_class_index(support_y, x.shape[0], "support_y")
    q = _masked(_as_matrix(query_x, "query_x"), mask)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"query_x: expected {x.shape[1]} columns, got {q.shape[1]}")
    weight, bias = _logistic_newton(x, idx, classes.numel(), float(l2), max_iter, tol)
    return classes[(q @ weight + bias).argmax(dim=1)]


# ---------------------------------------------------------------------------------- episodes


class Episode(NamedTuple):
    """Row indices into the pool and episode labels 0..ways-1 (``classes[j]`` is label j)."""

    support: np.ndarray
    support_y: np.ndarray
    query: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray


class EpisodeSampler:
    """N-way K-shot episodes drawn from a labelled pool, reproducibly.

    Each episode picks ``ways`` classes uniformly among those with at least shots + queries
    rows, then shots + queries distinct rows of each (support and query disjoint).

    Parameters
    ----------
    labels : array of shape (N,)
        Integer class labels of the pool.
    ways, shots, queries : int
        Classes per episode, support rows per class, query rows per class.
    episodes : int
        Number of episodes the iterator yields.
    seed : int
        Seed of the NumPy generator (the same seed gives the same episodes).
    """

    def __init__(self, labels: Any, ways: int, shots: int, queries: int, *, episodes: int, seed: int = 0) -> None:
        checks = (("ways", ways, 2), ("shots", shots, 1), ("queries", queries, 1), ("episodes", episodes, 1))
        for name, value, low in checks:
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        y = np.asarray(labels)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels: expected a 1-D integer array, got dtype {y.dtype} shape {y.shape}")
        self._rows = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
        self._eligible = np.array(sorted(c for c, r in self._rows.items() if r.size >= shots + queries))
        if self._eligible.size < ways:
            raise ValueError(
                f"labels: only {self._eligible.size} classes have {shots + queries} rows (shots + queries), "
                f"fewer than ways={ways}"
            )
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.episodes, self.seed = int(episodes), seed

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[Episode]:
        rng = np.random.default_rng(self.seed)
        k, s, q = self.ways, self.shots, self.queries
        for _ in range(self.episodes):
            chosen = rng.choice(self._eligible, size=k, replace=False)
            picks = [rng.choice(self._rows[int(c)], size=s + q, replace=False) for c in chosen]
            support = np.concatenate([p[:s] for p in picks])
            query = np.concatenate([p[s:] for p in picks])
            yield Episode(support, np.repeat(np.arange(k), s), query, np.repeat(np.arange(k), q), chosen)


def mean_ci95(values: Any) -> Tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% interval, 1.96 s / sqrt(n)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        raise ValueError(f"values: need at least 2, got {v.size}")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))
