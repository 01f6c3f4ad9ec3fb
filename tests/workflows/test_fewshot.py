"""Few-shot feature importance and soft mask (DESIGN.md section 5): importance against an
independent NumPy float64 implementation, mask properties, the leave-one-out tau selection
against a brute force, the classifiers, the episode sampler, and a small end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.workflows import fewshot
from ncfast.workflows.fewshot import (
    EpisodeSampler,
    feature_importance,
    fit_soft_mask,
    linear_probe,
    loo_ncc_accuracy,
    mean_ci95,
    nearest_centroid,
    select_tau,
    soft_mask,
)

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def numpy_fisher(x, y, prior=None, prior_rows=0.0):
    """r_j = sum_c n_c (mu_cj - mu_j)^2 / sum_i (x_ij - mu_{y_i j})^2, by loops over classes."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    between = np.zeros(x.shape[1])
    within = np.zeros(x.shape[1])
    for c in np.unique(y):
        rows = x[y == c]
        mc = rows.mean(axis=0)
        between += len(rows) * (mc - mu) ** 2
        within += ((rows - mc) ** 2).sum(axis=0)
    if prior is not None:
        within = within + prior_rows * np.asarray(prior)
    return between / within


def stats_of(x, y, per_class_diag=True):
    k = int(np.max(y)) + 1
    return ncfast.ClassStats(k, x.shape[1], per_class_diag=per_class_diag).update(
        torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.int64)
    )


def small_support(seed=0, ways=4, shots=5, dim=12):
    """Classes separated along the first 3 dimensions only; the rest is noise of varied scale."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((ways, dim))
    centres[:, :3] = 2.0 * rng.standard_normal((ways, 3))
    y = np.repeat(np.arange(ways), shots)
    x = centres[y] + rng.standard_normal((ways * shots, dim)) * np.linspace(0.5, 3.0, dim)
    return x, y


# ------------------------------------------------------------------------------ importance


@pytest.mark.parametrize("per_class_diag", [True, False])
def test_importance_matches_numpy_on_real_data(real_dataset, per_class_diag):
    name, x, y = real_dataset
    keep = x.std(axis=0) > 0  # digits has constant pixels; checked separately below
    got = feature_importance(stats_of(x[:, keep], y, per_class_diag))
    np.testing.assert_allclose(got.numpy(), numpy_fisher(x[:, keep], y), rtol=1e-9)


def test_constant_dimension_gets_zero_importance():
    x, y = small_support()
    x[:, 5] = 3.0
    got = feature_importance(stats_of(x, y))
    assert float(got[5]) == 0.0
    want = numpy_fisher(np.delete(x, 5, axis=1), y)
    np.testing.assert_allclose(np.delete(got.numpy(), 5), want, rtol=1e-10)


def test_within_prior_is_added_as_pseudo_rows():
    x, y = small_support()
    prior = np.linspace(1.0, 2.0, x.shape[1])
    got = feature_importance(stats_of(x, y), within_prior=prior, prior_rows=7.0)
    np.testing.assert_allclose(got.numpy(), numpy_fisher(x, y, prior, 7.0), rtol=1e-10)


def test_one_shot_needs_a_within_prior():
    x, y = small_support(shots=1)
    with pytest.raises(ValueError, match="within_prior"):
        feature_importance(stats_of(x, y))
    prior = np.full(x.shape[1], 2.0)
    got = feature_importance(stats_of(x, y), within_prior=prior, prior_rows=1.0)
    between = ((x - x.mean(axis=0)) ** 2).sum(axis=0)  # one row per class: its own mean
    np.testing.assert_allclose(got.numpy(), between / 2.0, rtol=1e-10)


def test_importance_ranks_the_discriminative_dimensions_first():
    x, y = small_support(shots=40)
    top = set(torch.argsort(feature_importance(stats_of(x, y)), descending=True)[:3].tolist())
    assert top == {0, 1, 2}


# ------------------------------------------------------------------------------ mask


def test_mask_properties():
    r = torch.tensor([0.0, 0.5, 1.0, 4.0, 10.0], dtype=torch.float64)
    torch.testing.assert_close(soft_mask(r, 0.0), torch.ones(5, dtype=torch.float64))
    full = soft_mask(r, 1.0)
    assert float(full.mean()) == pytest.approx(1.0)
    torch.testing.assert_close(full, r / r.mean())
    half = soft_mask(r, 0.5)
    torch.testing.assert_close(half, full.sqrt())  # m(tau) = m(1)^tau
    assert float(half[0]) == 0.0
    assert bool((half[1:].diff() > 0).all())  # order of importance kept
    torch.testing.assert_close(soft_mask(3.7 * r, 0.5), half)  # scale of r irrelevant


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_mask_rejects_tau_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="tau"):
        soft_mask(torch.ones(3), bad)


# ------------------------------------------------------------------------------ LOO selection


def brute_force_loo(x, y, taus, prior=None, prior_rows=0.0):
    """Refits everything without row i with the public functions, classifies row i."""
    acc = np.zeros(len(taus))
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        stats = stats_of(x[rest], y[rest])
        r = feature_importance(stats, within_prior=prior, prior_rows=prior_rows)
        for t, tau in enumerate(taus):
            pred = nearest_centroid(x[rest], y[rest], x[i : i + 1], mask=soft_mask(r, tau))
            acc[t] += int(pred[0]) == y[i]
    return acc / len(y)


@pytest.mark.parametrize("shots", [2, 4])
@pytest.mark.parametrize("with_prior", [False, True])
def test_loo_accuracy_matches_brute_force(shots, with_prior):
    x, y = small_support(seed=shots, shots=shots)
    prior = np.linspace(0.5, 4.0, x.shape[1]) if with_prior else None
    got = loo_ncc_accuracy(x, y, TAUS, within_prior=prior, prior_rows=3.0 if with_prior else 0.0)
    want = brute_force_loo(x, y, TAUS, prior, 3.0 if with_prior else 0.0)
    np.testing.assert_array_equal(got.numpy(), want)
    assert len(set(want.tolist())) > 1  # the taus are distinguishable here


def test_loo_matches_brute_force_on_digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.flatnonzero(data.target == c), 3, replace=False) for c in range(5, 10)])
    x, y = data.data[rows].astype(np.float64), data.target[rows] - 5
    np.testing.assert_array_equal(loo_ncc_accuracy(x, y, TAUS).numpy(), brute_force_loo(x, y, TAUS))


def test_select_tau_picks_best_loo_and_smallest_on_ties():
    for seed in range(6):
        x, y = small_support(seed=seed, shots=3)
        tau, acc = select_tau(x, y, TAUS)
        want = brute_force_loo(x, y, TAUS)
        np.testing.assert_array_equal(acc.numpy(), want)
        assert tau == TAUS[int(np.flatnonzero(want == want.max())[0])]


def test_loo_needs_two_rows_per_class():
    x, y = small_support(shots=1)
    with pytest.raises(ValueError, match="at least 2 rows"):
        loo_ncc_accuracy(x, y)
    with pytest.raises(ValueError, match="within_prior"):
        fit_soft_mask(x, y)
    prior = np.ones(x.shape[1])
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_soft_mask(x, y, within_prior=prior, prior_rows=1.0)
    assert fit_soft_mask(x, y, within_prior=prior, prior_rows=1.0, tau=0.5).tau == 0.5


def test_fit_soft_mask_combines_the_pieces():
    x, y = small_support(shots=6)
    fitted = fit_soft_mask(x, y, taus=TAUS)
    tau, acc = select_tau(x, y, TAUS)
    assert fitted.tau == tau
    torch.testing.assert_close(fitted.loo_accuracy, acc)
    torch.testing.assert_close(fitted.mask, soft_mask(feature_importance(stats_of(x, y)), tau))
    torch.testing.assert_close(fitted(x), torch.as_tensor(x) * fitted.mask)
    given = fit_soft_mask(x, y, tau=0.5)
    assert given.tau == 0.5 and given.loo_accuracy is None


# ------------------------------------------------------------------------------ classifiers


def test_nearest_centroid_matches_numpy_and_keeps_label_values():
    x, y = small_support(shots=5)
    labels = np.array([3, 7, 11, 20])[y]
    q = np.random.default_rng(5).standard_normal((30, x.shape[1])) * 2
    mask = np.linspace(0.1, 2.0, x.shape[1])
    got = nearest_centroid(x, torch.as_tensor(labels), q, mask=mask).numpy()
    means = np.stack([x[labels == c].mean(axis=0) for c in (3, 7, 11, 20)])
    dist = (((q[:, None, :] - means[None]) * mask) ** 2).sum(axis=2)
    np.testing.assert_array_equal(got, np.array([3, 7, 11, 20])[dist.argmin(axis=1)])


def reference_logistic(x, y, k, l2):
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=2000, line_search_fn="strong_wolfe", tolerance_grad=1e-13,
                            tolerance_change=1e-16)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


@pytest.mark.parametrize("shots, dim", [(1, 12), (5, 12), (3, 40)])
def test_logistic_solver_reaches_the_regularised_optimum(shots, dim):
    x, y = small_support(seed=1, shots=shots, dim=dim)
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    w, b = fewshot._logistic_newton(x, y, 4, 0.05, 50, 1e-14)
    w_ref, b_ref = reference_logistic(x, y, 4, 0.05)
    # optimality: the gradient of the objective vanishes
    w_var, b_var = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x @ w_var + b_var, y) + 0.025 * (w_var * w_var).sum()
    grads = torch.autograd.grad(loss, (w_var, b_var))
    assert max(float(g.abs().max()) for g in grads) < 1e-8
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=0)
    logits, logits_ref = x @ w + b, x @ w_ref + b_ref
    torch.testing.assert_close(logits - logits.mean(1, keepdim=True), logits_ref - logits_ref.mean(1, keepdim=True),
                               atol=1e-5, rtol=0)


def test_linear_probe_with_mask_equals_probe_on_scaled_features():
    x, y = small_support(shots=4)
    q = np.random.default_rng(2).standard_normal((40, x.shape[1]))
    mask = np.linspace(0.2, 1.5, x.shape[1])
    a = linear_probe(x, y, q, mask=mask)
    b = linear_probe(x * mask, y, q * mask)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, linear_probe(x, y, q))  # the mask changed the regularised fit here


def test_linear_probe_generalises_to_held_out_rows():
    x, y = small_support(seed=3, shots=60)
    train = (np.arange(len(y)) % 60) < 30
    pred = linear_probe(x[train], y[train], x[~train])
    assert float((pred.numpy() == y[~train]).mean()) > 0.8  # chance is 0.25


# ------------------------------------------------------------------------------ episodes


def test_episode_sampler_draws_disjoint_balanced_reproducible_episodes():
    labels = np.repeat(np.arange(8), 12)
    labels[:5] = 99  # class 99 has 5 rows: too few for 3 + 4, never drawn
    sampler = EpisodeSampler(labels, ways=5, shots=3, queries=4, episodes=20, seed=7)
    episodes = list(sampler)
    assert len(episodes) == len(sampler) == 20
    for ep in episodes:
        assert ep.support.shape == (15,) and ep.query.shape == (20,)
        assert not set(ep.support) & set(ep.query)
        assert len(set(ep.classes)) == 5 and 99 not in ep.classes
        np.testing.assert_array_equal(labels[ep.support], ep.classes[ep.support_y])
        np.testing.assert_array_equal(labels[ep.query], ep.classes[ep.query_y])
        np.testing.assert_array_equal(np.bincount(ep.support_y), [3] * 5)
    again = list(EpisodeSampler(labels, ways=5, shots=3, queries=4, episodes=20, seed=7))
    assert all(np.array_equal(a.support, b.support) for a, b in zip(episodes, again))
    assert len({tuple(ep.classes) for ep in episodes}) > 1


def test_episode_sampler_errors_name_the_argument():
    with pytest.raises(ValueError, match="ways"):
        EpisodeSampler(np.zeros(10, dtype=int), ways=1, shots=1, queries=1, episodes=1)
    with pytest.raises(ValueError, match="fewer than ways=3"):
        EpisodeSampler(np.repeat(np.arange(3), [5, 5, 1]), ways=3, shots=1, queries=1, episodes=1)


def test_mean_ci95():
    v = np.array([0.5, 0.7, 0.9, 0.6])
    mean, half = mean_ci95(v)
    assert mean == pytest.approx(0.675)
    assert half == pytest.approx(1.96 * np.std(v, ddof=1) / 2.0)


# ------------------------------------------------------------------------------ end to end


def test_mask_helps_five_shot_on_standardised_digits():
    """5-way 5-shot on digits 5-9, pixels standardised with digits 0-4: the near-constant
    border pixels become unit-variance noise that the mask turns down."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data.astype(np.float64), data.target
    base = y < 5
    sd = x[base].std(axis=0)
    z = (x - x[base].mean(axis=0)) / np.maximum(sd, 1e-3 * sd.max())
    zn, yn = z[~base], y[~base]
    plain, masked, taus = [], [], []
    for ep in EpisodeSampler(yn, ways=5, shots=5, queries=10, episodes=40, seed=0):
        sx, qx = zn[ep.support], zn[ep.query]
        fitted = fit_soft_mask(sx, ep.support_y)
        taus.append(fitted.tau)
        plain.append(float((nearest_centroid(sx, ep.support_y, qx).numpy() == ep.query_y).mean()))
        masked.append(float((nearest_centroid(sx, ep.support_y, qx, mask=fitted.mask).numpy() == ep.query_y).mean()))
    assert np.mean(plain) > 0.5  # far above chance (0.2)
    assert np.mean(masked) > np.mean(plain) + 0.02
    assert 0.0 < np.mean(taus) < 1.0
