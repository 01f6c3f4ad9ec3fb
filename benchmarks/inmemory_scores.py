"""The usual in-memory implementations of the scores: each takes the whole (N, D) feature
matrix and its labels, as the papers' public code does, and recomputes what it needs from the
rows (float32 matmuls over the rows, float64 for the small D x D / K x D algebra)."""

from __future__ import annotations

import math

import torch


def _class_means(f, y, k):
    counts = torch.bincount(y, minlength=k).to(torch.float32)
    sums = torch.zeros(k, f.shape[1]).index_add_(0, y, f)
    return sums / counts[:, None], counts


def nc1(f, y, k):
    mu, counts = _class_means(f, y, k)
    centred = f - mu[y]
    sw = (centred.T @ centred).double() / f.shape[0]
    mu64, n64 = mu.double(), counts.double()
    m = mu64 - (n64 @ mu64) / n64.sum()  # exact sum_c n_c m_c = 0, so pinv sees rank K-1
    sb = m.T @ m / k
    return float(torch.trace(sw @ torch.linalg.pinv(sb, hermitian=True)) / k)


def logme(f, y, k, iters=11):
    """You et al.'s recipe for N > D: eigh of F^T F, then per class F^T y_k."""
    n, d = f.shape
    sigma, v = torch.linalg.eigh((f.T @ f).double())
    out = []
    for c in range(k):
        t = (y == c).to(torch.float32)
        proj = v.T @ (f.T @ t).double()
        alpha, beta = 1.0, 1.0
        for _ in range(iters):
            gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
            u = beta * proj / (alpha + beta * sigma)
            m2 = float(u @ u)
            res2 = float(t.sum()) - 2 * float(proj @ u) + float((sigma * u * u).sum())
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
        ev = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * float(torch.log(alpha + beta * sigma).sum())
              - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))
        out.append(ev / n)
    return sum(out) / k


def h_score(f, y, k):
    mu, _ = _class_means(f, y, k)
    fc = f - f.mean(dim=0)
    cov_f = (fc.T @ fc).double() / (f.shape[0] - 1)
    g = mu[y] - f.mean(dim=0)
    cov_g = (g.T @ g).double() / (f.shape[0] - 1)
    return float(torch.trace(torch.linalg.pinv(cov_f, hermitian=True) @ cov_g))


def gbc(f, y, k):
    mu, counts = _class_means(f, y, k)
    sq = torch.zeros(k, f.shape[1]).index_add_(0, y, (f - mu[y]) ** 2)
    var = (sq / counts[:, None]).double().clamp(min=1e-12)
    mu = mu.double()
    total = 0.0
    for c in range(k):
        v = 0.5 * (var[c] + var)
        db = 0.125 * ((mu[c] - mu) ** 2 / v).sum(1) + 0.5 * (torch.log(v).sum(1) - 0.5 * torch.log(var[c]).sum() - 0.5 * torch.log(var).sum(1))
        bc = torch.exp(-db)
        bc[c] = 0
        total += float(bc.sum())
    return -total


def all_scores(f, y, k):
    return {"nc1": nc1(f, y, k), "logme": logme(f, y, k), "h_score": h_score(f, y, k), "gbc": gbc(f, y, k)}
