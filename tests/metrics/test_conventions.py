"""Each peer's convention, by its named option, against an independent float64 NumPy
re-derivation of that peer's published formula (tests/reference_scores.py), on random data and
on scikit-learn's real data sets. docs/CONVENTIONS.md reports the agreement measured here."""

from __future__ import annotations

import numpy as np
import pytest

import ncfast
from ncfast import metrics
import reference_scores as ref
from reference_stats import clustered, stats_of


def real(name):
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    x = data.data.astype(np.float64)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3), data.target.astype(np.int64)


@pytest.fixture(params=["random", "digits", "wine", "breast_cancer"])
def dataset(request):
    return clustered() if request.param == "random" else real(request.param)


def unbalanced(seed=0):
    """Class sizes 10:1, where the weighted and unweighted global means differ."""
    x, y = clustered(rows=4000, dim=10, classes=5, seed=seed)
    keep = np.concatenate([np.flatnonzero(y == c)[: 800 // (1 + 3 * c)] for c in range(5)])
    return x[keep], y[keep]


def close(a, b, rtol=1e-10):
    assert a == pytest.approx(b, rel=rtol, abs=1e-13), (a, b)


# ---------------------------------------------------------------------------------------- LogME


@pytest.mark.parametrize("variant", ["thuml", "icml", "tllib", "converged"])
def test_logme_variants_reproduce_their_code(dataset, variant):
    x, y = dataset
    s = stats_of(x, y)
    want = {
        "thuml": lambda: ref.logme_thuml(x, y)[0],
        "icml": lambda: ref.logme_each_evidence(x, y)[0],
        "tllib": lambda: ref.logme_each_evidence(x, y, eps=0.0)[0],
        "converged": lambda: ref.logme_exact(x, y),
    }[variant]()
    close(metrics.logme(s, variant=variant), want)


def test_logme_variants_differ_where_the_issue_says():
    x, y = real("breast_cancer")
    s = stats_of(x, y)
    values = {v: metrics.logme(s, variant=v) for v in metrics.evidence.VARIANTS}
    assert len(set(values.values())) == 4  # four distinct conventions on real data
    assert abs(values["thuml"] - values["converged"]) < 1e-3 * abs(values["converged"])


def subset_with_every_class(x, y, rows, seed=0):
    """`rows` rows of (x, y) holding every class at least once."""
    rng = np.random.default_rng(seed)
    first = np.array([rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), first))[: rows - len(first)]
    keep = np.concatenate([first, rest])
    return x[keep], y[keep]


@pytest.mark.parametrize("name", ["random", "digits", "breast_cancer"])
@pytest.mark.parametrize("shape", ["N < D", "N = D - 1", "N = D", "N = D + 1"])
def test_logme_with_few_rows_is_the_exact_evidence(name, shape):
    x, y = clustered(rows=400, dim=30, classes=4, seed=3) if name == "random" else real(name)
    d = x.shape[1]
    n = {"N < D": d // 2, "N = D - 1": d - 1, "N = D": d, "N = D + 1": d + 1}[shape]
    xs, ys = subset_with_every_class(x, y, n)
    s = ncfast.ClassStats(int(y.max()) + 1, d).update(xs, ys)
    close(metrics.logme(s), ref.logme_thuml(xs, ys, pad=True)[0])  # thuml PR #24: sigma padded to D
    close(metrics.logme(s, logdet="nonzero"), ref.logme_thuml(xs, ys, pad=False)[0])  # their released code
    close(metrics.logme(s, variant="icml"), ref.logme_each_evidence(xs, ys)[0])  # all D eigenvalues there
    if n < d:
        assert metrics.logme(s) != pytest.approx(metrics.logme(s, logdet="nonzero"), rel=1e-3)


def test_logme_weights_and_predict_are_thuml_s(dataset):
    x, y = dataset
    fit = metrics.logme_fit(stats_of(x, y))
    score, alphas, betas, ms = ref.logme_thuml(x, y)
    close(fit.score, score)
    np.testing.assert_allclose(fit.alpha.numpy(), alphas, rtol=1e-10)
    np.testing.assert_allclose(fit.beta.numpy(), betas, rtol=1e-10)
    np.testing.assert_allclose(fit.weights.numpy(), ms, rtol=1e-9, atol=1e-12 * np.abs(ms).max())
    np.testing.assert_array_equal(fit.predict(x).numpy(), (x @ ms.T).argmax(axis=1))


def regression_data():
    from sklearn import datasets

    data = datasets.load_diabetes()
    x = data.data
    t = np.stack([data.target, np.sqrt(data.target), 3.0 * x[:, 0] + 1.0], axis=1)
    return x, t


def test_logme_regression_with_target_stats_is_thuml_regression():
    x, t = regression_data()
    ts = ncfast.TargetStats(x.shape[1], 3)
    for start in range(0, len(t), 97):
        ts.update(x[start : start + 97], t[start : start + 97])
    fit = metrics.logme_fit(ts)
    score, alphas, _, ms = ref.logme_thuml(x, t, regression=True)
    close(fit.score, score)
    np.testing.assert_allclose(fit.alpha.numpy(), alphas, rtol=1e-10)
    np.testing.assert_allclose(fit.predict(x).numpy(), x @ ms.T, rtol=1e-9, atol=1e-9 * np.abs(x @ ms.T).max())
    close(metrics.logme(ts, variant="icml"), ref.logme_each_evidence(x, t, regression=True)[0])
    close(metrics.logme(ts, variant="tllib"), ref.logme_each_evidence(x, t, eps=0.0, regression=True)[0])


def test_logme_multi_label_is_one_regression_per_label():
    x, y = real("wine")
    rng = np.random.default_rng(4)
    labels = np.stack([(y == 0), (y != 1), rng.random(len(y)) < 0.3], axis=1).astype(np.float64)
    ts = ncfast.TargetStats(x.shape[1], 3).update(x, labels)
    close(metrics.logme(ts), ref.logme_thuml(x, labels, regression=True)[0])
    # one-hot targets give the classification score
    onehot = np.eye(3)[y]
    close(metrics.logme(ncfast.TargetStats(x.shape[1], 3).update(x, onehot)), metrics.logme(stats_of(x, y)), 1e-12)


# ---------------------------------------------------------------------------------------- NC


def test_nc_scores_unweighted_are_rhubarbwu_s(dataset):
    x, y = dataset
    s = stats_of(x, y)
    close(metrics.nc1(s, global_mean="unweighted"), ref.rhubarb_nc1_pinv(x, y), 1e-9)
    close(metrics.nc1_trace(s, global_mean="unweighted"), ref.rhubarb_nc1_ratio(x, y))
    _, mu, m_g = ref.rhubarb_means(x, y)
    report = ncfast.nc_report(s, global_mean="unweighted")
    close(report.nc2_means.etf_distance, ref.rhubarb_etf_error(mu - m_g, mu - m_g))
    for exp in (1.0, 2.0, 0.5):
        close(metrics.cdnv(s, dist_exp=exp), ref.rhubarb_cdnv(x, y, exp))


def test_weighted_and_unweighted_global_means_differ_on_unbalanced_data():
    x, y = unbalanced()
    s = stats_of(x, y)
    weighted, unweighted = metrics.nc1(s), metrics.nc1(s, global_mean="unweighted")
    close(weighted, ref.nc1(x, y), 1e-9)
    close(unweighted, ref.rhubarb_nc1_pinv(x, y), 1e-9)
    assert abs(weighted - unweighted) > 1e-3 * weighted


@pytest.mark.parametrize("classes, dim", [(6, 12), (12, 5)])  # K <= D (cross Gram) and K > D (no K x K)
def test_nc3_kothapalli_is_rhubarbwu_self_duality(classes, dim):
    x, y = clustered(rows=3000, dim=dim, classes=classes, seed=5)
    s = stats_of(x, y)
    w = np.random.default_rng(6).standard_normal((classes, dim))
    for mean in ("weighted", "unweighted"):
        _, mu = ref.class_means(x, y)
        centre = x.mean(axis=0) if mean == "weighted" else mu.mean(axis=0)
        close(metrics.nc3(s, w, variant="kothapalli", global_mean=mean), ref.rhubarb_etf_error(mu - centre, w))
    close(metrics.nc3(s, w), ref.nc3(x, y, w))


@pytest.mark.parametrize("kernel", ["log", "riesz"])
@pytest.mark.parametrize("mean", ["weighted", "unweighted"])
def test_hyperspherical_uniformity_is_rhubarbwu_kernel_stats(dataset, kernel, mean):
    x, y = dataset
    if kernel == "riesz" and x.shape[1] > 16:
        x = x[:, :16]  # s = D - 2: keep the energies within float64 range
    got = metrics.hyperspherical_uniformity(stats_of(x, y), kernel, global_mean=mean)
    want_mean, want_var = ref.rhubarb_kernel_stats(x, y, kernel, weighted=mean == "weighted")
    close(got.mean, want_mean)
    close(got.variance, want_var, 1e-9)


def test_per_class_outputs(dataset):
    x, y = dataset
    s = stats_of(x, y)
    k = s.num_classes
    w = np.random.default_rng(7).standard_normal((k, x.shape[1]))
    b = np.random.default_rng(8).standard_normal(k)
    second = ncfast.NCCStats.from_stats(s, classifier=w, bias=b).update(x, y)
    report = ncfast.nc_report(s, classifier=w, per_class=True, ncc=second)
    out = report.per_class
    classes, mu = ref.class_means(x, y)
    m = mu - x.mean(axis=0)
    var = np.array([((x[y == c] - mu[i]) ** 2).sum(axis=1).mean() for i, c in enumerate(classes)])
    dist2 = ((mu[:, None] - mu[None]) ** 2).sum(axis=2)
    np.fill_diagonal(dist2, np.inf)
    cdnv_rows = ((var[:, None] + var[None]) / (2 * dist2)).sum(axis=1) / (k - 1)
    unit = m / np.linalg.norm(m, axis=1, keepdims=True)
    np.testing.assert_array_equal(out.classes.numpy(), classes)
    np.testing.assert_allclose(out.within_variance.numpy(), var, rtol=1e-10)
    np.testing.assert_allclose(out.cdnv_row_mean.numpy(), cdnv_rows, rtol=1e-9)
    np.testing.assert_allclose(out.mean_norms.numpy(), np.linalg.norm(m, axis=1), rtol=1e-10)
    np.testing.assert_allclose(out.interference.numpy(), unit @ unit.T, rtol=1e-10, atol=1e-12)
    cos = (w * unit).sum(axis=1) / np.linalg.norm(w, axis=1)
    np.testing.assert_allclose(out.classifier_cosine.numpy(), cos, rtol=1e-10, atol=1e-12)
    agree = ref.nearest_centre(x, mu) == (x @ w.T + b).argmax(axis=1)
    np.testing.assert_allclose(out.nc4_agreement.numpy(), [agree[y == c].mean() for c in classes], rtol=1e-12)
    assert report.as_dict()["per_class"]["within_variance"] == pytest.approx(var.tolist(), rel=1e-10)
    close(float(np.mean(cdnv_rows)), metrics.cdnv(s), 1e-9)  # the row means average to CDNV


# ---------------------------------------------------------------------------------------- H-score


def test_shrinkage_h_score_default_is_tllib_ledoit_wolf(dataset):
    from sklearn.covariance import LedoitWolf

    x, y = dataset
    s = stats_of(x, y)
    close(metrics.ledoit_wolf_shrinkage(s), ref.ledoit_wolf(x), 1e-10)
    close(metrics.ledoit_wolf_shrinkage(s), LedoitWolf().fit(x).shrinkage_, 1e-10)
    close(metrics.h_score_shrinkage(s), ref.regularized_h_score(x, y), 1e-10)
    close(metrics.h_score_shrinkage(s, 0.25), ref.regularized_h_score(x, y, alpha=0.25), 1e-10)


def test_ledoit_wolf_of_one_dimension_is_zero():
    x, y = clustered(rows=500, dim=1, classes=3, seed=9)
    assert metrics.ledoit_wolf_shrinkage(stats_of(x, y)) == 0.0


# ---------------------------------------------------------------------------------------- GBC


@pytest.mark.parametrize("gaussian", ["diagonal", "spherical"])
def test_gbc_is_google_stable_transfer(dataset, gaussian):
    x, y = dataset
    close(metrics.gbc(stats_of(x, y), gaussian=gaussian), ref.gbc_google(x, y, gaussian))


def test_gbc_floor_matters_on_constant_features():
    """digits has constant pixels: Google's absolute 1e-4 floor and a relative 1e-12 one give
    scores orders of magnitude apart."""
    from sklearn import datasets

    data = datasets.load_digits()
    s = stats_of(data.data.astype(np.float64), data.target)
    absolute, relative = metrics.gbc(s), metrics.gbc(s, floor="relative", var_floor=1e-12)
    close(absolute, ref.gbc_google(data.data.astype(np.float64), data.target))
    close(relative, ref.gbc(data.data.astype(np.float64), data.target), 1e-8)
    assert abs(absolute) > 100 * abs(relative)


# ---------------------------------------------------------------------------------------- TransRate, SFDA


def test_transrate_is_tllib_s(dataset):
    x, y = dataset
    s = stats_of(x, y, per_class_gram=True)
    close(metrics.transrate(s), ref.transrate(x, y))
    close(metrics.transrate(s, eps=1e-2), ref.transrate(x, y, eps=1e-2))


def test_transrate_streamed_equals_in_memory():
    x, y = clustered(rows=3000, dim=10, classes=6, seed=10, offset=20.0)
    s = ncfast.ClassStats(6, 10, per_class_gram=True)
    for start in range(0, 3000, 211):
        s.update(x[start : start + 211], y[start : start + 211])
    close(metrics.transrate(s), ref.transrate(x, y))


def test_sfda_is_tencentarc_s(dataset):
    x, y = dataset
    close(metrics.sfda_score(x, y, chunk_rows=257), ref.sfda(x, y))


def test_sfda_passes_by_hand_and_their_errors():
    x, y = clustered(rows=900, dim=8, classes=4, seed=11)
    first = metrics.SFDAFit.from_stats(stats_of(x, y))
    mixing = first.confmix_pass()
    with pytest.raises(ValueError, match="ConfMix pass saw no rows"):
        mixing.score_pass()
    for start in range(0, 900, 100):
        mixing.update(x[start : start + 100], y[start : start + 100])
    scoring = mixing.score_pass()
    with pytest.raises(ValueError, match="no rows seen in the third pass"):
        scoring.value
    scoring.update(x, y)
    close(scoring.value, ref.sfda(x, y))
    assert scoring.second.shrinkage == first.shrinkage
    bad = y.copy()
    bad[5] = 9
    with pytest.raises(ValueError, match=r"labels: value 9 at row 5 is outside \[0, 4\)"):
        mixing.update(x, bad)


def test_h_score_with_tllib_s_pseudo_inverse_cut(dataset):
    x, y = dataset
    classes, mu = ref.class_means(x, y)
    g = mu[np.searchsorted(classes, y)]
    want = np.trace(np.linalg.pinv(np.cov(x, rowvar=False), rcond=1e-15) @ np.cov(g, rowvar=False))
    close(metrics.h_score(stats_of(x, y), rcond=1e-15), float(want), 1e-7)
