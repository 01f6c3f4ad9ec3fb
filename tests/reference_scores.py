"""Independent float64 NumPy implementations of every score, straight from the raw rows and
the papers' definitions (no statistics, no ncfast code)."""

from __future__ import annotations

import math

import numpy as np


def class_means(x, y):
    classes = np.unique(y)
    return classes, np.stack([x[y == c].mean(axis=0) for c in classes])


def sigma_w_b(x, y):
    classes, mu = class_means(x, y)
    centred = x - mu[np.searchsorted(classes, y)]
    sw = centred.T @ centred / len(x)
    m = mu - x.mean(axis=0)
    sb = m.T @ m / len(classes)
    return sw, sb, m


def nc1(x, y):
    sw, sb, m = sigma_w_b(x, y)
    return float(np.trace(sw @ np.linalg.pinv(sb, hermitian=True)) / m.shape[0])


def nc1_trace(x, y):
    sw, sb, _ = sigma_w_b(x, y)
    return float(np.trace(sw) / np.trace(sb))


def nc2(a):
    k = a.shape[0]
    norms = np.linalg.norm(a, axis=1)
    cos = (a / norms[:, None]) @ (a / norms[:, None]).T
    off = cos[~np.eye(k, dtype=bool)]
    g = a @ a.T
    etf = (np.eye(k) - np.ones((k, k)) / k) / math.sqrt(k - 1)
    return {
        "equinorm": norms.std() / norms.mean(),
        "equiangularity": off.std(),
        "max_angle": np.abs(off + 1.0 / (k - 1)).mean(),
        "etf_distance": np.linalg.norm(g / np.linalg.norm(g) - etf),
    }


def nc3(x, y, w):
    _, _, m = sigma_w_b(x, y)
    return float(np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2)


def cdnv(x, y):
    classes, mu = class_means(x, y)
    var = np.array([((x[y == c] - mu[i]) ** 2).sum(axis=1).mean() for i, c in enumerate(classes)])
    vals = []
    for i in range(len(classes)):
        for j in range(len(classes)):
            if i != j:
                vals.append((var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2)))
    return float(np.mean(vals))


def nearest_centre(x, mu):
    d = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(axis=2)
    return d.argmin(axis=1)


def logme(f, y, tol=1e-8, max_iter=100, eps=1e-5):
    """LogME from the paper's equations on the in-memory features: A = alpha I + beta F^T F,
    m = beta A^-1 F^T y, MacKay updates alpha = gamma / m^T m, beta = (N - gamma) / ||y - F m||^2."""
    n, d = f.shape
    ftf = f.T @ f
    sigma = np.linalg.eigvalsh(ftf)
    out = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        for _ in range(max_iter):
            gamma = (beta * sigma / (alpha + beta * sigma)).sum()
            m = beta * np.linalg.solve(alpha * np.eye(d) + beta * ftf, f.T @ t)
            m2 = m @ m
            res2 = np.sum((t - f @ m) ** 2)
            alpha = gamma / (m2 + eps)
            beta = (n - gamma) / (res2 + eps)
            new_lam = alpha / beta
            done = abs(new_lam - lam) / lam < tol
            lam = new_lam
            if done:
                break
        _, logdet = np.linalg.slogdet(alpha * np.eye(d) + beta * ftf)
        evidence = (
            d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * logdet
            - beta / 2 * (res2 + eps) - alpha / 2 * (m2 + eps) - n / 2 * math.log(2 * math.pi)
        )
        out.append(evidence / n)
    return float(np.mean(out))


def h_score(f, y):
    classes, mu = class_means(f, y)
    g = mu[np.searchsorted(classes, y)]
    cov_f = np.cov(f, rowvar=False)
    cov_g = np.cov(g, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=f.shape[1] * np.finfo(float).eps, hermitian=True) @ cov_g))


def h_score_shrinkage(f, y):
    from sklearn.covariance import OAS

    alpha = OAS().fit(f).shrinkage_
    classes, mu = class_means(f, y)
    g = mu[np.searchsorted(classes, y)]
    cov_f = np.cov(f, rowvar=False)
    d = f.shape[1]
    shrunk = (1 - alpha) * cov_f + alpha * np.trace(cov_f) / d * np.eye(d)
    return float(np.trace(np.linalg.inv(shrunk) @ np.cov(g, rowvar=False))), alpha


def gbc(f, y, floor_rel=1e-12):
    classes, mu = class_means(f, y)
    var = np.stack([f[y == c].var(axis=0) for c in classes])
    var = np.maximum(var, floor_rel * var.mean())
    total = 0.0
    for i in range(len(classes)):
        for j in range(len(classes)):
            if i == j:
                continue
            v = (var[i] + var[j]) / 2
            db = 0.125 * np.sum((mu[i] - mu[j]) ** 2 / v) + 0.5 * np.sum(np.log(v / np.sqrt(var[i] * var[j])))
            total += math.exp(-db)
    return -total


def face(f, y, ridge=None):
    sw, _, m = sigma_w_b(f, y)
    d = f.shape[1]
    lam = 1e-6 * np.trace(sw) / d if ridge is None else ridge
    inv = np.linalg.inv(sw + lam * np.eye(d))
    k = m.shape[0]
    overlap = np.zeros(k)
    for i in range(k):
        for j in range(k):
            if i != j:
                diff = m[i] - m[j]
                overlap[i] += math.exp(-(diff @ inv @ diff) / 8) / (k - 1)
    c = -nc1(f, y)
    fair = -overlap.std() / (overlap.mean() + 1e-12)
    return c, fair, c + fair


def leep(probs, y, num_target):
    joint = np.zeros((probs.shape[1], num_target))
    for p, t in zip(probs, y):
        joint[:, t] += p
    joint /= len(y)
    cond = joint / joint.sum(axis=1, keepdims=True)
    return float(np.mean([math.log(probs[i] @ cond[:, y[i]]) for i in range(len(y))]))


def nce(z, y, num_source, num_target):
    joint = np.zeros((num_source, num_target))
    for a, b in zip(z, y):
        joint[a, b] += 1
    joint /= len(y)
    pz = joint.sum(axis=1, keepdims=True)
    mask = joint > 0
    return float(np.sum(joint[mask] * np.log((joint / np.where(pz > 0, pz, 1))[mask])))
