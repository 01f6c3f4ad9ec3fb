"""Invariances every score must have, degenerate inputs, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast import metrics
import reference_scores
from reference_stats import clustered, stats_of


def rotation(dim, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


def scores(s, which):
    table = {
        "nc1": lambda: metrics.nc1(s),
        "nc1_trace": lambda: metrics.nc1_trace(s),
        "cdnv": lambda: metrics.cdnv(s),
        "logme": lambda: metrics.logme(s),
        "h_score": lambda: metrics.h_score(s),
        "h_score_shrinkage": lambda: metrics.h_score_shrinkage(s),
        "face": lambda: metrics.face(s).score,
        "gbc": lambda: metrics.gbc(s),
        "nc2": lambda: tuple(vars(metrics.nc2(s.centred_means())).values()),
    }
    return table[which]()


def assert_same(a, b, rtol=1e-8):
    np.testing.assert_allclose(np.atleast_1d(a), np.atleast_1d(b), rtol=rtol, atol=1e-12)


X, Y = clustered(rows=2500, dim=9, classes=5, seed=11)


@pytest.mark.parametrize("which", ["nc1", "nc1_trace", "cdnv", "logme", "h_score", "face", "nc2"])
def test_rotation_invariance(which):
    q = rotation(X.shape[1])
    assert_same(scores(stats_of(X @ q, Y), which), scores(stats_of(X, Y), which))


@pytest.mark.parametrize("which", ["nc1", "nc1_trace", "cdnv", "logme", "h_score", "h_score_shrinkage", "face", "gbc", "nc2"])
def test_label_permutation_invariance(which):
    perm = np.random.default_rng(1).permutation(5)
    assert_same(scores(stats_of(X, perm[Y]), which), scores(stats_of(X, Y), which))


@pytest.mark.parametrize("which", ["nc1", "nc1_trace", "cdnv", "h_score", "h_score_shrinkage", "face", "gbc", "nc2"])
def test_scale_and_translation_invariance(which):
    moved = 7.5 * X + np.random.default_rng(2).standard_normal(X.shape[1]) * 100
    assert_same(scores(stats_of(moved, Y), which), scores(stats_of(X, Y), which), rtol=1e-7)


def test_label_permutation_invariance_of_classifier_and_source_scores():
    """NC3 and NC4 with the classifier's rows permuted like the labels; LEEP and NCE with the
    target labels permuted (a relabelling of the target task)."""
    perm = np.random.default_rng(12).permutation(5)
    w = np.random.default_rng(13).standard_normal((5, X.shape[1]))
    w_perm = np.empty_like(w)
    w_perm[perm] = w  # class perm[c] of the relabelled task is class c of the original

    def classifier_scores(labels, weights):
        s = stats_of(X, labels)
        second = ncfast.NCCStats.from_stats(s, classifier=weights).update(X, labels)
        return metrics.nc3(s, torch.from_numpy(weights)), second.nc4, second.ncc_accuracy

    assert_same(classifier_scores(perm[Y], w_perm), classifier_scores(Y, w))

    probs = np.random.default_rng(14).dirichlet(np.ones(7), size=len(Y))

    def source_scores(labels):
        joint = ncfast.JointStats(7, 5).update(probs, labels)
        second = joint.leep_pass().update(probs, labels)
        return joint.nce(), second.value

    assert_same(source_scores(perm[Y]), source_scores(Y), rtol=1e-12)


def test_perfect_collapse():
    centres = np.random.default_rng(3).standard_normal((4, 6))
    y = np.arange(400) % 4
    s = stats_of(centres[y], y)
    assert metrics.nc1(s) == pytest.approx(0.0, abs=1e-20)
    assert metrics.cdnv(s) == pytest.approx(0.0, abs=1e-20)
    assert metrics.nc1_trace(s) == pytest.approx(0.0, abs=1e-20)


def test_simplex_etf_has_zero_nc2():
    k = 5
    etf = np.eye(k) - 1.0 / k  # rows form a simplex ETF in R^k
    report = metrics.nc2(torch.from_numpy(etf))
    for value in vars(report).values():
        assert value == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_identical_class_means_raise(offset):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 3)) + offset
    y = np.arange(200) % 2
    x[y == 1] = x[y == 0]  # the two classes have the same rows, so the same mean up to rounding
    s = stats_of(x, y)
    with pytest.raises(ValueError, match="nc1: all class means coincide"):
        metrics.nc1(s)
    with pytest.raises(ValueError, match="nc1_trace: all class means coincide"):
        metrics.nc1_trace(s)
    with pytest.raises(ValueError, match="cdnv: two classes have identical means"):
        metrics.cdnv(s)


def test_small_but_real_mean_differences_still_score():
    """The rounding floor must not swallow class means that differ in earnest: a separation
    of 1e-6 on an offset of 1e3 is far above float64 rounding."""
    rng = np.random.default_rng(41)
    x = rng.standard_normal((400, 3)) * 1e-5 + 1e3
    y = np.arange(400) % 2
    x[y == 1, 0] += 1e-6
    s = stats_of(x, y)
    # Two classes: Sigma_B = m0 m0^T is rank one, so NC1 = m0^T Sigma_W m0 / (2 |m0|^4)
    # (a pseudo-inverse of the D x D Sigma_B would keep its rounding-noise eigenvalues here).
    sw, _, m = reference_scores.sigma_w_b(x, y)
    ref = float(m[0] @ sw @ m[0]) / (2 * float(m[0] @ m[0]) ** 2)
    assert metrics.nc1(s) == pytest.approx(ref, rel=1e-5)
    assert np.isfinite(metrics.cdnv(s)) and np.isfinite(metrics.nc1_trace(s))


def test_one_dimensional_features():
    x, y = clustered(rows=500, dim=1, classes=3, seed=5)
    s = stats_of(x, y)
    sw = float(s.sigma_w())
    sb = float(s.sigma_b())
    assert metrics.nc1(s) == pytest.approx(sw / sb / 3, rel=1e-10)
    assert metrics.h_score(s) == pytest.approx(float(s.between_scatter()) / float(s.sigma_t() * s.num_samples), rel=1e-10)
    assert np.isfinite(metrics.logme(s))


def test_class_with_one_row():
    x, y = clustered(rows=300, dim=4, classes=3, seed=6)
    x = np.vstack([x, np.full((1, 4), 9.0)])
    y = np.append(y, 3)
    s = stats_of(x, y)
    # that class's variance is 0: CDNV and NC1 are still defined, GBC floors the variance
    assert metrics.cdnv(s) == pytest.approx(reference_scores.cdnv(x, y), rel=1e-9)
    assert metrics.nc1(s) == pytest.approx(reference_scores.nc1(x, y), rel=1e-9)
    assert metrics.gbc(s) == pytest.approx(reference_scores.gbc_google(x, y), rel=1e-10)


def test_errors_are_clear():
    one_class = stats_of(np.random.default_rng(7).standard_normal((50, 4)), np.zeros(50, dtype=np.int64))
    for fn in (metrics.nc1, metrics.cdnv, metrics.logme, metrics.h_score, metrics.face, ncfast.nc_report):
        with pytest.raises(ValueError, match="needs at least 2 classes with rows"):
            fn(one_class)
    no_diag = ncfast.ClassStats(5, 9).update(X, Y)
    with pytest.raises(ValueError, match="per_class_diag=True"):
        metrics.gbc(no_diag)
    with pytest.raises(ValueError, match=r"h_score_shrinkage: ledoit_wolf: .*fourth_moments=True.*shrinkage='oas'"):
        metrics.h_score_shrinkage(no_diag)
    assert np.isfinite(metrics.h_score_shrinkage(no_diag, "oas"))
    with pytest.raises(ValueError, match="transrate: .*per_class_gram=True"):
        metrics.transrate(no_diag)
    for bad in ("lw", -0.1, 1.5, True):
        with pytest.raises(ValueError, match="shrinkage: expected one of"):
            metrics.h_score_shrinkage(stats_of(X, Y), bad)
    with pytest.raises(ValueError, match="variant: expected one of"):
        metrics.logme(no_diag, variant="paper")
    with pytest.raises(ValueError, match="global_mean: expected one of"):
        metrics.nc1(no_diag, global_mean="median")
    with pytest.raises(ValueError, match="classifier: expected shape"):
        ncfast.nc_report(no_diag, classifier=np.ones((4, 9)))
    sparse = ncfast.ClassStats(6, 9).update(X, Y)  # class 5 has no rows
    with pytest.raises(ValueError, match="nc3: class 5 has no rows"):
        metrics.nc3(sparse, np.ones((6, 9)))


def test_dense_decomposition_too_big_is_refused(monkeypatch):
    import os

    s = stats_of(X, Y)
    monkeypatch.setattr(os, "sysconf", lambda name: 1)  # pretend 1 byte is free
    with pytest.raises(MemoryError, match="logme: a 9 x 9 float64 eigendecomposition"):
        metrics.logme(s)


def test_large_k_pairwise_work_is_blocked(monkeypatch):
    """K x K never materialises: with a tiny block budget every pairwise score still matches."""
    from ncfast.metrics import _common

    x, y = clustered(rows=3000, dim=6, classes=300, seed=9)
    s = stats_of(x, y)
    whole = (metrics.cdnv(s), metrics.face(s).score, metrics.gbc(s))
    monkeypatch.setattr(_common, "PAIR_BLOCK_ENTRIES", 1000)
    assert_same((metrics.cdnv(s), metrics.face(s).score, metrics.gbc(s)), whole, rtol=1e-12)
