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


def logme(f, y):
    """LogME as thuml/LogME's default ``LogME().fit(f, y)`` computes it (with the exact, padded
    log-determinant; see :func:`logme_thuml`)."""
    return logme_thuml(f, y)[0]


def h_score(f, y):
    classes, mu = class_means(f, y)
    g = mu[np.searchsorted(classes, y)]
    cov_f = np.cov(f, rowvar=False)
    cov_g = np.cov(g, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=f.shape[1] * np.finfo(float).eps, hermitian=True) @ cov_g))


def h_score_shrinkage(f, y):
    """tllib's regularised H-score with scikit-learn's OAS coefficient in place of Ledoit-Wolf's
    (ncfast's ``shrinkage="oas"``); returns (score, coefficient)."""
    from sklearn.covariance import OAS

    alpha = OAS().fit(f).shrinkage_
    return regularized_h_score(f, y, alpha), alpha


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


# ---------------------------------------------------------------------------------------------
# The peers' published conventions, each re-derived here in float64 NumPy from the peer's code
# as read (docs/CONVENTIONS.md names the file of each); used to check ncfast's options.


def _targets(y, regression):
    """The target columns: y's columns (regression) or one-hot columns of every label up to the largest."""
    if regression:
        return [y[:, i] for i in range(y.shape[1])]
    return [(y == c).astype(np.float64) for c in range(int(y.max()) + 1)]


def _svd_for_fixed_point(f):
    """thuml/LogME ``_fit_fixed_point``'s decomposition: for N > D the SVD of F^T F keeping
    singular values of F above 1e-10 (their ``truncated_svd``), else the thin SVD of F."""
    n, d = f.shape
    if n > d:
        _, s2, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s2)
        k = int(np.sum(s > 1e-10))
        s, vh = s[:k], vh[:k]
        u = (f @ vh.T) / s
    else:
        u, s, vh = np.linalg.svd(f, full_matrices=False)
    return u, s, vh


def logme_thuml(f, y, regression=False, pad=True, tol=1e-3, max_iter=11):
    """thuml/LogME ``LogME(regression).fit(f, y)``: MacKay's fixed point in the SVD basis,
    1e-5 in the alpha/beta updates only, stop at <= 1e-3 relative change of alpha/beta or after
    11 steps. ``pad=True`` pads sigma with zeros to D entries (thuml/LogME PR #24, the exact
    evidence); ``pad=False`` is their released code. Returns (score, alphas, betas, ms)."""
    f = np.asarray(f, dtype=np.float64)
    n, d = f.shape
    u, s, vh = _svd_for_fixed_point(f)
    sigma = s**2
    sigma_ld = np.concatenate([sigma, np.zeros(d - sigma.size)]) if pad else sigma
    columns = _targets(y, regression)
    out, alphas, betas, ms = [], [], [], []
    for target in columns:
        x = u.T @ target
        x2 = x**2
        res_x2 = target @ target - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / (t + sigma) ** 2).sum()
            res2 = (x2 / (1 + sigma / t) ** 2).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= tol:
                break
        evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * np.log(alpha + beta * sigma_ld).sum()
                    - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi)) / n
        out.append(evidence)
        alphas.append(alpha)
        betas.append(beta)
        ms.append(vh.T @ (s * x / (t + sigma)))
    return float(np.mean(out)), np.array(alphas), np.array(betas), np.stack(ms)


def logme_each_evidence(f, y, eps=1e-5, tol=1e-2, max_iter=11, regression=False):
    """thuml/LogME ``_fit_icml`` / ``each_evidence`` (eps = 1e-5 in the updates and in the
    evidence, stop at < 1e-2 or 11 steps; the residual from the rows); with eps=0 this is
    tllib's ``log_maximum_evidence``. Returns (score, ms)."""
    f = np.asarray(f, dtype=np.float64)
    n, d = f.shape
    v, s, vh = np.linalg.svd(f.T @ f, full_matrices=True)
    columns = _targets(y, regression)
    out, ms = [], []
    for target in columns:
        alpha, beta = 1.0, 1.0
        lam = alpha / beta
        tmp = vh @ (f.T @ target)
        for _ in range(max_iter):
            gamma = (s / (s + lam)).sum()
            m = v @ (tmp * beta / (alpha + beta * s))
            alpha_de = m @ m
            alpha = gamma / (alpha_de + eps)
            beta_de = ((target - f @ m) ** 2).sum()
            beta = (n - gamma) / (beta_de + eps)
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < tol:
                break
            lam = new_lam
        evidence = (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * np.log(alpha + beta * s).sum()
                    - beta / 2 * (beta_de + eps) - alpha / 2 * (alpha_de + eps) - n / 2 * math.log(2 * math.pi))
        out.append(evidence / n)
        ms.append(m)
    return float(np.mean(out)), np.stack(ms)


def logme_exact(f, y):
    """The paper's evidence at the exact fixed point (no epsilon), by dense linear algebra on
    the rows: A = alpha I + beta F^T F, m = beta A^-1 F^T y."""
    f = np.asarray(f, dtype=np.float64)
    n, d = f.shape
    ftf = f.T @ f
    sigma = np.linalg.eigvalsh(ftf).clip(min=0)
    out = []
    for c in np.unique(y):
        target = (y == c).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(10000):
            a = alpha * np.eye(d) + beta * ftf
            m = beta * np.linalg.solve(a, f.T @ target)
            gamma = (beta * sigma / (alpha + beta * sigma)).sum()
            new_alpha, new_beta = gamma / (m @ m), (n - gamma) / np.sum((target - f @ m) ** 2)
            done = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) <= 1e-13
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, f.T @ target)
        logdet = np.linalg.slogdet(a)[1]
        res2 = np.sum((target - f @ m) ** 2)
        out.append((d / 2 * math.log(alpha) + n / 2 * math.log(beta) - 0.5 * logdet - beta / 2 * res2
                    - alpha / 2 * (m @ m) - n / 2 * math.log(2 * math.pi)) / n)
    return float(np.mean(out))


def rhubarb_means(x, y):
    """rhubarbwu/neural-collapse's Accumulator.compute(weighted=False): class means and their
    plain mean (the global mean it centres on by default)."""
    classes, mu = class_means(x, y)
    return classes, mu, mu.mean(axis=0)


def rhubarb_nc1_pinv(x, y):
    """``covariance_pinv``: V_inter = M_c^T M_c / K, tr(pinv(V_inter) V_intra) / K, with
    V_intra = W / N (CovarAccumulator)."""
    classes, mu, m_g = rhubarb_means(x, y)
    centred = x - mu[np.searchsorted(classes, y)]
    v_intra = centred.T @ centred / len(x)
    m = mu - m_g
    v_inter = m.T @ m / len(classes)
    return float(np.trace(np.linalg.pinv(v_inter) @ v_intra) / len(classes))


def rhubarb_nc1_ratio(x, y):
    classes, mu, m_g = rhubarb_means(x, y)
    centred = x - mu[np.searchsorted(classes, y)]
    m = mu - m_g
    return float(np.trace(centred.T @ centred / len(x)) / np.trace(m.T @ m / len(classes)))


def rhubarb_etf_error(a, b):
    """``structure_error(A, B)``: || B A^T / ||B A^T||_F - (I - 11^T/K)/sqrt(K-1) ||_F."""
    k = a.shape[0]
    g = b @ a.T
    g = g / np.linalg.norm(g)
    return float(np.linalg.norm(g - (np.eye(k) - np.ones((k, k)) / k) / math.sqrt(k - 1)))


def rhubarb_cdnv(x, y, dist_exp=1.0):
    """``class_dist_norm_vars`` + ``symm_reduce``: mean over pairs i < j of
    ((v_i + v_j) / 2) / ||mu_i - mu_j||^(2 dist_exp)."""
    classes, mu = class_means(x, y)
    var = np.array([((x[y == c] - mu[i]) ** 2).sum(axis=1).mean() for i, c in enumerate(classes)])
    vals = [((var[i] + var[j]) / 2) / np.sum((mu[i] - mu[j]) ** 2) ** dist_exp
            for i in range(len(classes)) for j in range(i + 1, len(classes))]
    return float(np.mean(vals))


def rhubarb_kernel_stats(x, y, kernel, weighted=False):
    """``kernel_stats`` with ``log_kernel`` (log ||u_i - u_j||^-1) or ``riesz_kernel``
    (sign(s) ||u_i - u_j||^-s, s = D - 2) on the normalised centred means: (mean, variance)
    over pairs i < j."""
    classes, mu = class_means(x, y)
    centre = x.mean(axis=0) if weighted else mu.mean(axis=0)
    u = mu - centre
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    s = x.shape[1] - 2
    vals = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            dist = np.linalg.norm(u[i] - u[j])
            vals.append(-math.log(dist) if kernel == "log" else math.copysign(1, s) * dist ** (-s))
    vals = np.array(vals)
    return float(vals.mean()), float(((vals - vals.mean()) ** 2).mean())


def ledoit_wolf(x):
    """Ledoit & Wolf's shrinkage coefficient as scikit-learn computes it, written out."""
    n, d = x.shape
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    beta_ = np.sum(np.sum(xc**2, axis=1) ** 2)
    delta_ = np.sum(s**2)
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2 * mu * np.trace(s) + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def regularized_h_score(f, y, alpha=None):
    """tllib ``regularized_h_score``: Ledoit-Wolf covariance of the centred features (1/N),
    cov g with 1/(N-1), tr(pinv(cov_alpha, rcond=1e-15) (1 - alpha) cov g)."""
    f = np.asarray(f, dtype=np.float64)
    f = f - f.mean(axis=0)
    d = f.shape[1]
    alpha = ledoit_wolf(f) if alpha is None else alpha
    s = f.T @ f / len(f)
    cov_alpha = (1 - alpha) * s + alpha * np.trace(s) / d * np.eye(d)
    classes, mu = class_means(f, y)
    g = mu[np.searchsorted(classes, y)]
    cov_g = np.cov(g, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_alpha, rcond=1e-15) @ ((1 - alpha) * cov_g)))


def gbc_google(f, y, gaussian="diagonal"):
    """google-research stable_transfer ``get_gbc_score``: per-class ddof-0 variances floored at
    1e-4; spherical: their mean, with the log term counted once."""
    classes, mu = class_means(f, y)
    var = np.stack([np.maximum(f[y == c].var(axis=0), 1e-4) for c in classes])
    if gaussian == "spherical":
        var = var.mean(axis=1)
    total = 0.0
    for i in range(len(classes)):
        for j in range(len(classes)):
            if i == j:
                continue
            avg = (var[i] + var[j]) / 2
            first = np.sum((mu[i] - mu[j]) ** 2 / avg) / 8
            second = np.sum(np.log(avg)) - 0.5 * np.sum(np.log(var[i])) - 0.5 * np.sum(np.log(var[j]))
            total += math.exp(-(first + 0.5 * second))
    return -total


def transrate(f, y, eps=1e-4):
    """tllib ``transrate``: R(Z) - mean_c R(Z_c), Z centred on the global mean, R the coding
    rate 1/2 logdet(I + Z^T Z / (n eps))."""
    z = np.asarray(f, dtype=np.float64)
    z = z - z.mean(axis=0)

    def rate(rows):
        n, d = rows.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + rows.T @ rows / (n * eps))[1]

    classes = np.unique(y)
    return float(rate(z) - sum(rate(z[y == c]) for c in classes) / len(classes))


def sfda(x, y):
    """TencentARC/SFDA ``SFDA_Score``: regularised Fisher fit, ConfMix, second fit, mean true
    class probability; the Fisher directions from scipy's generalised eigh."""
    from scipy import linalg

    x = np.array(x, dtype=np.float64)
    classes, yi = np.unique(y, return_inverse=True)
    k, d = len(classes), x.shape[1]

    def shrunk(cov, s):
        return (1 - s) * cov + s * np.trace(cov) / d * np.eye(d)

    def fit(rows, shrinkage=None):
        priors = np.bincount(yi) / len(yi)
        means = np.stack([rows[yi == c].mean(axis=0) for c in range(k)])
        sw = sum(priors[c] * np.cov(rows[yi == c].T, bias=1) for c in range(k))
        if shrinkage is None:
            a = sw
            v = a.sum(axis=1)
            for _ in range(3):
                t = a @ v
                w = t / np.linalg.norm(t)
                t = a @ w
                v = t / np.linalg.norm(t)
            shrinkage = max(math.exp(-5 * (v @ a @ w)), 1e-10)
        st = shrunk(np.cov(rows.T, bias=1), shrinkage)
        sw_s = shrunk(sw, shrinkage)
        evals, evecs = linalg.eigh(st - sw_s, sw_s)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ evecs @ evecs.T
        intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        return coef, intercept, shrinkage

    def softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    coef, intercept, shrinkage = fit(x)
    prob = softmax(x @ coef.T + intercept)
    prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = np.stack([x[yi == c].mean(axis=0) for c in range(k)])
    others = (means.sum(axis=0) - means) / (k - 1)
    p = prob[np.arange(len(yi)), yi][:, None]
    mixed = p * x + (1 - p) * others[yi]
    coef2, intercept2, _ = fit(mixed, shrinkage)
    prob2 = softmax(mixed @ coef2.T + intercept2)
    return float(prob2[np.arange(len(yi)), yi].mean())
