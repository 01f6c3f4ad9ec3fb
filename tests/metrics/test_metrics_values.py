"""Every score from the statistics against an independent in-memory float64 implementation
(tests/reference_scores.py), on random and real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast import metrics
import reference_scores as ref
from reference_stats import clustered, stats_of


@pytest.fixture(params=["random", "digits", "wine", "breast_cancer"])
def dataset(request):
    if request.param == "random":
        return clustered()
    from sklearn import datasets

    data = getattr(datasets, f"load_{request.param}")()
    x = data.data.astype(np.float64)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3)  # sklearn digits has constant pixels
    return x, data.target.astype(np.int64)


def close(a, b, rtol):
    assert a == pytest.approx(b, rel=rtol, abs=1e-12), (a, b)


def test_nc1_and_trace(dataset):
    x, y = dataset
    s = stats_of(x, y)
    close(metrics.nc1(s), ref.nc1(x, y), 1e-8)
    close(metrics.nc1_trace(s), ref.nc1_trace(x, y), 1e-10)


def test_nc2_nc3(dataset):
    x, y = dataset
    s = stats_of(x, y)
    rng = np.random.default_rng(1)
    w = rng.standard_normal((s.num_classes, x.shape[1]))
    report = ncfast.nc_report(s, classifier=w)
    _, _, m = ref.sigma_w_b(x, y)
    for got, want in ((report.nc2_means, ref.nc2(m)), (report.nc2_classifier, ref.nc2(w))):
        for key, value in want.items():
            close(getattr(got, key), value, 1e-9)
    close(report.nc3, ref.nc3(x, y, w), 1e-10)
    close(report.cdnv, ref.cdnv(x, y), 1e-9)
    assert report.nc1 == metrics.nc1(s)


def test_nc2_blocked_matches_unblocked(monkeypatch):
    from ncfast.metrics import _common

    a = np.random.default_rng(2).standard_normal((50, 7))
    whole = metrics.nc2(torch.from_numpy(a))
    monkeypatch.setattr(_common, "PAIR_BLOCK_ENTRIES", 120)  # blocks of 2 rows
    blocked = metrics.nc2(torch.from_numpy(a))
    for key in ("equinorm", "equiangularity", "max_angle", "etf_distance"):
        close(getattr(blocked, key), getattr(whole, key), 1e-12)


def test_nc4_and_ncc_accuracy(dataset):
    x, y = dataset
    s = stats_of(x, y)
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((s.num_classes, x.shape[1])), rng.standard_normal(s.num_classes)
    second = ncfast.NCCStats.from_stats(s, classifier=w, bias=b)
    for start in range(0, len(y), 333):
        second.update(x[start : start + 333], y[start : start + 333])
    nearest = ref.nearest_centre(x, s.means.numpy())
    predicted = (x @ w.T + b).argmax(axis=1)
    assert second.ncc_accuracy == pytest.approx(np.mean(nearest == y))
    assert second.nc4 == pytest.approx(np.mean(nearest != predicted))
    assert second.classifier_accuracy == pytest.approx(np.mean(predicted == y))


def test_logme_exact_from_statistics(dataset):
    x, y = dataset
    s = stats_of(x, y)
    close(metrics.logme(s), ref.logme(x, y), 1e-10)


def test_h_scores(dataset):
    x, y = dataset
    s = stats_of(x, y)
    close(metrics.h_score(s), ref.h_score(x, y), 1e-7)
    want, alpha = ref.h_score_shrinkage(x, y)
    close(metrics.oas_shrinkage(s.sigma_t(), s.num_samples), alpha, 1e-10)
    close(metrics.h_score_shrinkage(s, "oas"), want, 1e-8)


def test_gbc(dataset):
    x, y = dataset
    s = stats_of(x, y)
    close(metrics.gbc(s), ref.gbc_google(x, y), 1e-10)
    close(metrics.gbc(s, floor="relative", var_floor=1e-12), ref.gbc(x, y), 1e-8)


def test_face(dataset):
    x, y = dataset
    s = stats_of(x, y)
    got = metrics.face(s)
    c, f, total = ref.face(x, y)
    close(got.variance_collapse, c, 1e-8)
    close(got.class_fairness, f, 1e-7)
    close(got.score, total, 1e-7)


def test_face_blocked_matches_unblocked(monkeypatch):
    from ncfast.metrics import _common

    x, y = clustered(rows=2000, classes=40, seed=4)
    s = stats_of(x, y)
    whole = metrics.face(s)
    monkeypatch.setattr(_common, "PAIR_BLOCK_ENTRIES", 100)
    blocked = metrics.face(s)
    close(blocked.class_fairness, whole.class_fairness, 1e-12)
    close(metrics.gbc(s), ref.gbc_google(x, y), 1e-8)  # gbc blocked too


def test_spectrum():
    x, y = clustered(rows=4000, dim=10, seed=5)
    s = stats_of(x, y)
    cov = np.cov(x, rowvar=False, bias=True)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(metrics.eigenvalues(s).numpy(), eig, rtol=1e-9)
    sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = sv / sv.sum() + 1e-7
    close(metrics.rankme(s), float(np.exp(-(p * np.log(p)).sum())), 1e-9)
    slope = np.polyfit(np.log(np.arange(1, 11)), np.log(eig), 1)[0]
    close(metrics.alpha_req(s), -slope, 1e-9)


@pytest.mark.parametrize("which", ["within", "between"])
def test_eigenvalues_of_within_and_between(which):
    x, y = clustered(rows=3000, dim=9, classes=5, seed=8, offset=50.0)
    s = stats_of(x, y)
    sw, sb, _ = ref.sigma_w_b(x, y)
    want = np.sort(np.linalg.eigvalsh(sw if which == "within" else sb))[::-1].clip(min=0.0)
    np.testing.assert_allclose(metrics.eigenvalues(s, which).numpy(), want, rtol=1e-9, atol=1e-12 * want[0])


def test_gbc_on_pca_features_by_a_second_pass():
    from sklearn import datasets

    data = datasets.load_digits()
    x, y = data.data.astype(np.float64), data.target
    first = stats_of(x, y)
    origin, basis = metrics.pca_basis(first, 12)
    second = ncfast.ClassStats(10, 12, per_class_diag=True)
    for start in range(0, len(y), 500):  # the second pass, chunk by chunk
        rows = torch.from_numpy(x[start : start + 500])
        second.update((rows - origin) @ basis, torch.from_numpy(y[start : start + 500]))
    _, vecs = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    projected = (x - x.mean(axis=0)) @ vecs[:, ::-1][:, :12]  # eigenvector signs do not change GBC
    close(metrics.gbc(second), ref.gbc_google(projected, y), 1e-8)
    with pytest.raises(ValueError, match="components"):
        metrics.pca_basis(first, 65)


def test_ncc_stats_rejects_bad_rows_and_counts_nothing():
    x, y = clustered(rows=200, seed=9)
    second = ncfast.NCCStats.from_stats(stats_of(x, y))
    bad_y = y.copy()
    bad_y[17] = 6
    with pytest.raises(ValueError, match=r"labels: value 6 at row 17 is outside \[0, 6\)"):
        second.update(x, bad_y)
    bad_x = x.copy()
    bad_x[42, 3] = np.nan
    with pytest.raises(ValueError, match="features: row 42 holds NaN or Inf"):
        second.update(bad_x, y)
    assert second.num_samples == 0 and second.ncc_correct == 0


def test_leep_and_nce():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((500, 7)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, 500)
    joint = ncfast.JointStats(7, 4)
    for start in range(0, 500, 128):
        joint.update(probs[start : start + 128], y[start : start + 128])
    close(joint.nce(), ref.nce(probs.argmax(axis=1), y, 7, 4), 1e-12)
    with pytest.raises(ValueError, match="second pass"):
        joint.leep()
    second = joint.leep_pass()
    for start in range(0, 500, 128):
        second.update(probs[start : start + 128], y[start : start + 128])
    close(second.value, ref.leep(probs, y, 4), 1e-12)
    hard = ncfast.JointStats(7, 4).update(probs.argmax(axis=1), y)
    onehot = np.eye(7)[probs.argmax(axis=1)]
    close(hard.leep(), ref.leep(onehot + 0.0, y, 4), 1e-12)


def test_joint_stats_name_bad_labels():
    joint = ncfast.JointStats(3, 2)
    with pytest.raises(ValueError, match=r"source: value 3 at row 2 is outside \[0, 3\)"):
        joint.update(np.array([0, 1, 3]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"target: value -1 at row 1 is outside \[0, 2\)"):
        joint.update(np.array([0, 1, 2]), np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="no rows seen yet"):
        joint.nce()


def test_transferability_dict():
    x, y = clustered(seed=7)
    out = ncfast.transferability(stats_of(x, y, per_class_gram=True))
    assert set(out) == {"logme", "h_score", "h_score_shrinkage", "nc1", "face_c", "face_f", "face", "gbc", "transrate"}
    close(out["logme"], ref.logme(x, y), 1e-10)
    close(out["h_score_shrinkage"], ref.regularized_h_score(x, y), 1e-10)
    close(out["transrate"], ref.transrate(x, y), 1e-10)
    plain = ncfast.transferability(ncfast.ClassStats(6, x.shape[1]).update(x, y))
    assert set(plain) == {"logme", "h_score", "nc1", "face_c", "face_f", "face"}
    assert all(np.isfinite(v) for v in out.values())


def test_ncc_stats_follow_the_first_pass_nan_policy():
    x, y = clustered(rows=300, seed=10)
    dirty = x.copy()
    dirty[[4, 250], 1] = np.nan
    keep = np.setdiff1d(np.arange(300), [4, 250])
    first = ncfast.ClassStats(6, x.shape[1], nan_policy="skip").update(dirty, y)
    second = ncfast.NCCStats.from_stats(first).update(dirty, y)
    clean = ncfast.NCCStats.from_stats(first).update(x[keep], y[keep])
    assert second.skipped_rows == 2 and second.num_samples == 298
    assert second.ncc_accuracy == clean.ncc_accuracy
    with pytest.raises(ValueError, match="nan_policy"):
        ncfast.NCCStats(first.means, nan_policy="drop")
