"""Measures how closely each of ncfast's named conventions reproduces the peer's formula: the
largest relative difference between ncfast (from streamed statistics) and the float64 NumPy
re-derivation of the peer's published code in tests/reference_scores.py, over random data and
scikit-learn's digits, wine and breast_cancer (standardised), the numbers docs/CONVENTIONS.md
quotes.

    python benchmarks/conventions_agreement.py
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import ncfast  # noqa: E402
from ncfast import metrics  # noqa: E402
import reference_scores as ref  # noqa: E402
from reference_stats import clustered  # noqa: E402


def datasets():
    from sklearn import datasets as sk

    yield "random", clustered()
    for name in ("digits", "wine", "breast_cancer"):
        data = getattr(sk, f"load_{name}")()
        x = data.data.astype(np.float64)
        yield name, ((x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3), data.target.astype(np.int64))


def streamed(x, y, **options):
    s = ncfast.ClassStats(int(y.max()) + 1, x.shape[1], per_class_diag=True, fourth_moments=True,
                          per_class_gram=True, **options)
    for start in range(0, len(y), 257):
        s.update(x[start : start + 257], y[start : start + 257])
    return s


def few_rows(x, y, rows, seed=0):
    rng = np.random.default_rng(seed)
    first = np.array([rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), first))[: rows - len(first)]
    keep = np.concatenate([first, rest])
    return x[keep], y[keep]


def classifier_of(x, y):
    """A fixed classifier for NC3: the centred class means plus noise."""
    _, mu = ref.class_means(x, y)
    return mu - mu.mean(axis=0) + 0.3 * np.random.default_rng(0).standard_normal(mu.shape)


def classifier(s):
    mu = s.means.numpy()
    return mu - mu.mean(axis=0) + 0.3 * np.random.default_rng(0).standard_normal(mu.shape)


CASES = {
    "LogME thuml LogME().fit (default)": (lambda s, x, y: metrics.logme(s), lambda x, y: ref.logme_thuml(x, y)[0]),
    "LogME thuml ICML each_evidence (variant='icml')": (
        lambda s, x, y: metrics.logme(s, variant="icml"), lambda x, y: ref.logme_each_evidence(x, y)[0]),
    "LogME tllib log_maximum_evidence (variant='tllib')": (
        lambda s, x, y: metrics.logme(s, variant="tllib"), lambda x, y: ref.logme_each_evidence(x, y, eps=0.0)[0]),
    "LogME exact fixed point (variant='converged')": (
        lambda s, x, y: metrics.logme(s, variant="converged"), lambda x, y: ref.logme_exact(x, y)),
    "NC1 rhubarbwu covariance_pinv (global_mean='unweighted')": (
        lambda s, x, y: metrics.nc1(s, global_mean="unweighted"), ref.rhubarb_nc1_pinv),
    "NC1_tr rhubarbwu covariance_ratio (global_mean='unweighted')": (
        lambda s, x, y: metrics.nc1_trace(s, global_mean="unweighted"), ref.rhubarb_nc1_ratio),
    "CDNV rhubarbwu dist_exp=2 (dist_exp=2)": (
        lambda s, x, y: metrics.cdnv(s, dist_exp=2.0), lambda x, y: ref.rhubarb_cdnv(x, y, 2.0)),
    "uniformity rhubarbwu log_kernel (kernel='log', unweighted)": (
        lambda s, x, y: metrics.hyperspherical_uniformity(s, "log", global_mean="unweighted").mean,
        lambda x, y: ref.rhubarb_kernel_stats(x, y, "log")[0]),
    "Ledoit-Wolf coefficient, scikit-learn": (
        lambda s, x, y: metrics.ledoit_wolf_shrinkage(s), lambda x, y: ref.ledoit_wolf(x)),
    "H-score tllib regularized_h_score (default)": (
        lambda s, x, y: metrics.h_score_shrinkage(s), ref.regularized_h_score),
    "GBC google stable_transfer diagonal (default)": (lambda s, x, y: metrics.gbc(s), ref.gbc_google),
    "GBC google stable_transfer spherical (gaussian='spherical')": (
        lambda s, x, y: metrics.gbc(s, gaussian="spherical"), lambda x, y: ref.gbc_google(x, y, "spherical")),
    "TransRate tllib transrate (default)": (lambda s, x, y: metrics.transrate(s), ref.transrate),
    "NC3 rhubarbwu self_duality_error (variant='kothapalli')": (
        lambda s, x, y: metrics.nc3(s, classifier(s), variant="kothapalli", global_mean="unweighted"),
        lambda x, y: ref.rhubarb_etf_error(ref.class_means(x, y)[1] - ref.class_means(x, y)[1].mean(axis=0),
                                           classifier_of(x, y))),
    "SFDA TencentARC SFDA_Score (three passes)": (lambda s, x, y: metrics.sfda_score(x, y, chunk_rows=257, stats=s),
                                                    ref.sfda),
}


def main() -> None:
    worst = {name: 0.0 for name in CASES}
    for _, (x, y) in datasets():
        s = streamed(x, y)
        for name, (ours, theirs) in CASES.items():
            a, b = ours(s, x, y), theirs(x, y)
            worst[name] = max(worst[name], abs(a - b) / abs(b))
    few = {"LogME N <= D, padded sigma (thuml PR #24; default)": 0.0,
           "LogME N <= D, unpadded (thuml released; logdet='nonzero')": 0.0}
    for name, (x, y) in datasets():
        if name == "wine":
            continue
        d = x.shape[1]
        for rows in (d // 2, d - 1, d, d + 1):
            xs, ys = few_rows(x, y, rows)
            s = ncfast.ClassStats(int(y.max()) + 1, d).update(xs, ys)
            pairs = ((metrics.logme(s), ref.logme_thuml(xs, ys, pad=True)[0]),
                     (metrics.logme(s, logdet="nonzero"), ref.logme_thuml(xs, ys, pad=False)[0]))
            for key, (a, b) in zip(few, pairs):
                few[key] = max(few[key], abs(a - b) / abs(b))
    x, t = regression()
    ts = ncfast.TargetStats(x.shape[1], t.shape[1])
    for start in range(0, len(t), 97):
        ts.update(x[start : start + 97], t[start : start + 97])
    a, b = metrics.logme(ts), ref.logme_thuml(x, t, regression=True)[0]
    few["LogME regression, thuml LogME(regression=True) (TargetStats)"] = abs(a - b) / abs(b)
    print("| convention (ncfast option) | largest relative difference |")
    print("|---|---|")
    for name, value in {**worst, **few}.items():
        print(f"| {name} | {value:.1e} |")
    print()
    print("How far apart the conventions are (relative difference to ncfast's default):")
    print()
    print("| data | LogME icml | LogME tllib | LogME converged | NC1 unweighted | H-score OAS "
          "| GBC relative 1e-12 floor |")
    print("|---|---|---|---|---|---|---|")
    for name, (x, y) in datasets():
        s = streamed(x, y)
        base = {"logme": metrics.logme(s), "nc1": metrics.nc1(s), "h": metrics.h_score_shrinkage(s),
                "gbc": metrics.gbc(s)}
        gaps = [metrics.logme(s, variant=v) / base["logme"] - 1 for v in ("icml", "tllib", "converged")]
        gaps += [metrics.nc1(s, global_mean="unweighted") / base["nc1"] - 1,
                 metrics.h_score_shrinkage(s, "oas") / base["h"] - 1,
                 metrics.gbc(s, floor="relative", var_floor=1e-12) / base["gbc"] - 1]
        print(f"| {name} | " + " | ".join(f"{g:+.1e}" for g in gaps) + " |")


def regression():
    from sklearn import datasets as sk

    data = sk.load_diabetes()
    return data.data, np.stack([data.target, np.sqrt(data.target), 3.0 * data.data[:, 0] + 1.0], axis=1)


if __name__ == "__main__":
    main()
