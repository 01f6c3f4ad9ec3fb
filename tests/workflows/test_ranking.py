"""rank_models: every input kind gives the scores of the same statistics; rankings and rank
correlations are right."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import ncfast
from ncfast import metrics
from ncfast.metrics.registry import score_stats
from ncfast.workflows.ranking import ModelRanking, kendall_tau, rank_models, weighted_tau

K = 4


def target(rows=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (rows,), generator=gen)
    x = torch.randn(rows, 12, generator=gen) + 2.0 * nn.functional.one_hot(y, 12).float()
    return x, y


def noisy_features(y, noise, dim=8, seed=1):
    """Class-separated features whose within-class noise grows with `noise`."""
    gen = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(K, dim, generator=gen)
    return (centres[y] + noise * torch.randn(len(y), dim, generator=gen)).double()


def direct_scores(features, labels):
    stats = ncfast.ClassStats(K, features.shape[1], per_class_diag=True, fourth_moments=True).update(features, labels)
    return score_stats(stats)[0]


# ---------------------------------------------------------------------------------- rank correlations


def test_kendall_tau_known_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair of 6: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def test_weighted_tau_counts_top_swaps_more():
    top_swap = weighted_tau([4, 3, 2, 1], [3, 4, 2, 1])
    bottom_swap = weighted_tau([4, 3, 2, 1], [4, 3, 1, 2])
    assert weighted_tau([4, 3, 2, 1], [4, 3, 2, 1]) == pytest.approx(1.0)
    assert top_swap < bottom_swap < 1.0
    assert kendall_tau([4, 3, 2, 1], [3, 4, 2, 1]) == pytest.approx(kendall_tau([4, 3, 2, 1], [4, 3, 1, 2]))


@pytest.mark.parametrize("ties", [False, True])
def test_taus_match_scipy(ties):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(3, 14))
        x = rng.integers(0, 4, n).astype(float) if ties else rng.standard_normal(n)
        y = rng.integers(0, 4, n).astype(float) if ties else rng.standard_normal(n)
        if len(set(x)) < 2 or len(set(y)) < 2:
            continue
        assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
        assert weighted_tau(x, y) == pytest.approx(stats.weightedtau(x, y).statistic, abs=1e-12)


def test_tau_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])


# ---------------------------------------------------------------------------------- inputs


def test_arrays_give_the_scores_of_their_statistics():
    x, y = target()
    a, b = noisy_features(y, 0.5), noisy_features(y, 2.0, dim=10)
    ranking = rank_models({"a": a.numpy(), "b": b}, target_labels=y)
    assert ranking.scores["a"] == pytest.approx(direct_scores(a, y), rel=1e-12)
    assert ranking.scores["b"] == pytest.approx(direct_scores(b, y), rel=1e-12)
    stats = ncfast.ClassStats(K, 8, per_class_diag=True).update(a, y)
    assert ranking.scores["a"]["logme"] == pytest.approx(metrics.logme(stats), rel=1e-12)
    assert ranking.scores["a"]["gbc"] == pytest.approx(metrics.gbc(stats), rel=1e-12)
    assert ranking.dims == {"a": 8, "b": 10} and ranking.num_samples == {"a": 300, "b": 300}


def test_module_callable_and_features_agree():
    x, y = target()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 6), nn.Tanh())
    with torch.no_grad():
        feats = net(x)
    ranking = rank_models({"module": net, "lambda": lambda t: net(t), "array": feats.numpy()}, x, y, batch_size=64)
    for score, value in ranking.scores["array"].items():
        assert ranking.scores["module"][score] == pytest.approx(value, rel=1e-5), score
        assert ranking.scores["lambda"][score] == pytest.approx(value, rel=1e-5), score


def test_feature_maps_are_average_pooled():
    gen = torch.Generator().manual_seed(5)
    y = torch.randint(0, K, (200,), generator=gen)
    images = torch.randn(200, 1, 6, 6, generator=gen) + y[:, None, None, None].float()
    conv = nn.Conv2d(1, 5, 3)
    with torch.no_grad():
        pooled = conv(images).mean(dim=(2, 3))
    ranking = rank_models({"conv": conv, "pooled": pooled}, images, y, batch_size=50)
    assert ranking.dims["conv"] == 5
    assert ranking.scores["conv"]["nc1"] == pytest.approx(ranking.scores["pooled"]["nc1"], rel=1e-5)


def test_loader_of_batches_equals_tensor_inputs():
    x, y = target()
    net = nn.Linear(12, 5)
    loader = [(x[i : i + 70], y[i : i + 70]) for i in range(0, len(y), 70)]
    from_loader = rank_models({"a": net, "b": lambda t: t[:, :6]}, loader, num_classes=K)
    from_tensor = rank_models({"a": net, "b": lambda t: t[:, :6]}, x, y)
    for m in ("a", "b"):
        assert from_loader.scores[m] == pytest.approx(from_tensor.scores[m], rel=1e-6)


def test_dump_paths(tmp_path):
    x, y = target()
    feats = noisy_features(y, 1.0).float().numpy()
    np.save(tmp_path / "f.npy", feats)
    np.save(tmp_path / "y.npy", y.numpy())
    from_path = rank_models({"m": str(tmp_path / "f.npy")}, target_labels=str(tmp_path / "y.npy"))
    from_array = rank_models({"m": feats}, target_labels=y)
    assert from_path.scores["m"] == pytest.approx(from_array.scores["m"], rel=1e-12)


def test_module_mode_is_restored_and_no_grad_kept():
    x, y = target()
    net = nn.Sequential(nn.Linear(12, 6), nn.Dropout(0.5)).train()
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append((m.training, o.requires_grad)))
    a = rank_models({"n": net}, x, y).scores["n"]
    b = rank_models({"n": net}, x, y).scores["n"]
    assert net.training and all(not training and not grad for training, grad in seen)
    assert a == b  # eval mode: dropout off, deterministic


# ---------------------------------------------------------------------------------- ranking


def test_ranking_follows_noise_level_and_correlates_with_truth():
    _, y = target(600)
    noise = {"clean": 0.3, "mid": 1.0, "noisy": 2.5, "awful": 6.0}
    ranking = rank_models({n: noisy_features(y, s) for n, s in noise.items()}, target_labels=y)
    expected = ["clean", "mid", "noisy", "awful"]
    for score in ("nc1", "cdnv", "logme", "h_score", "gbc"):  # (FaCe adds a fairness term, not monotone here)
        assert ranking.ranking(score) == expected, score
    assert ranking.best("logme") == "clean"
    truth = {n: -s for n, s in noise.items()}  # an "accuracy" that falls with the noise
    for method in ("kendall", "weighted"):
        taus = ranking.correlation(truth, method)
        assert taus["nc1"] == pytest.approx(1.0) and taus["logme"] == pytest.approx(1.0)  # nc1 is lower-better
    reversed_truth = {n: s for n, s in noise.items()}
    assert ranking.correlation(reversed_truth)["nc1"] == pytest.approx(-1.0)


def test_undefined_scores_are_none_with_a_reason():
    _, y = target(40)
    flat = torch.ones(40, 8, dtype=torch.float64)  # every class has the same mean: NC1 is undefined
    ranking = rank_models({"flat": flat, "good": noisy_features(y, 1.0)}, target_labels=y)
    assert ranking.scores["flat"]["nc1"] is None
    assert "all class means coincide" in ranking.notes["flat"]["nc1"]
    assert ranking.ranking("nc1") == ["good"]
    assert ranking.correlation({"flat": 1.0, "good": 0.0})["nc1"] is None
    assert "flat nc1" in str(ranking)


def test_logme_is_defined_with_fewer_rows_than_dimensions():
    import reference_scores as ref

    _, y = target(40)
    wide = noisy_features(y, 1.0, dim=60)  # N = 40 <= D = 60: the exact evidence over all 60 eigenvalues
    ranking = rank_models({"wide": wide}, target_labels=y, scores=["logme"])
    assert ranking.scores["wide"]["logme"] == pytest.approx(ref.logme_thuml(wide.numpy(), y.numpy())[0], rel=1e-10)


def test_table_and_dict():
    _, y = target()
    ranking = rank_models({"a": noisy_features(y, 0.5), "b": noisy_features(y, 3.0)}, target_labels=y,
                          scores=["nc1", "logme"])
    assert isinstance(ranking, ModelRanking) and ranking.score_names == ["nc1", "logme"]
    text = str(ranking)
    assert "nc1 v" in text and "logme ^" in text and "(1)" in text and "(2)" in text
    d = json.loads(json.dumps(ranking.to_dict()))
    assert d["rankings"]["logme"] == ["a", "b"] and set(d["scores"]["a"]) == {"nc1", "logme"}


# ---------------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    x, y = target()
    feats = noisy_features(y, 1.0)
    with pytest.raises(ValueError, match="models"):
        rank_models({}, x, y)
    with pytest.raises(ValueError, match="scores: unknown"):
        rank_models({"a": feats}, target_labels=y, scores=["accuracy"])
    with pytest.raises(ValueError, match="target_labels: needed"):
        rank_models({"a": feats})
    with pytest.raises(ValueError, match=r"models\['a'\]: 300 feature rows for 10 target labels"):
        rank_models({"a": feats}, target_labels=y[:10])
    with pytest.raises(ValueError, match="target_inputs: needed"):
        rank_models({"a": nn.Linear(12, 3)}, target_labels=y)
    with pytest.raises(ValueError, match="iterator"):
        rank_models({"a": nn.Linear(12, 3), "b": nn.Linear(12, 3)}, iter([(x, y)]))
    with pytest.raises(TypeError, match=r"models\['pair'\]: returned a tuple"):
        rank_models({"pair": lambda t: (t, t)}, x, y)
    with pytest.raises(ValueError, match=r"models\['a'\].*label"):
        rank_models({"a": nn.Linear(12, 3)}, x, y, num_classes=2)
    with pytest.raises(ValueError, match="score: unknown"):
        rank_models({"a": feats}, target_labels=y).ranking("acc")
    with pytest.raises(ValueError, match="truth: no value"):
        rank_models({"a": feats}, target_labels=y).correlation({})


# ---------------------------------------------------------------------------------- LEEP and NCE


def test_source_heads_add_leep_and_nce(tmp_path):
    import reference_scores as ref

    x, y = target(rows=500, seed=7)
    trunk = nn.Sequential(nn.Linear(12, 6), nn.Tanh())
    head = nn.Linear(6, 5)  # a 5-class source classifier
    torch.manual_seed(0)
    for p in list(trunk.parameters()) + list(head.parameters()):
        nn.init.normal_(p, std=0.8)
    with torch.no_grad():
        probs = torch.softmax(head(trunk(x)).double(), dim=1).float()
    np.save(tmp_path / "probs.npy", probs.numpy())
    np.save(tmp_path / "feats.npy", trunk(x).detach().numpy())
    models = {"net": trunk, "dump": str(tmp_path / "feats.npy"), "given": trunk, "bare": trunk}
    heads = {"net": head, "dump": head, "given": str(tmp_path / "probs.npy")}
    ranking = rank_models(models, x, y, source_heads=heads, batch_size=64)
    p64, y_np = probs.double().numpy(), y.numpy()
    want_leep = ref.leep(p64, y_np, K)
    want_nce = ref.nce(p64.argmax(axis=1), y_np, 5, K)
    for name in ("net", "dump", "given"):
        assert ranking.scores[name]["leep"] == pytest.approx(want_leep, rel=1e-6), name
        assert ranking.scores[name]["nce"] == pytest.approx(want_nce, rel=1e-6), name
    assert ranking.scores["bare"]["leep"] is None and "no source head" in ranking.notes["bare"]["leep"]
    assert ranking.higher_is_better["leep"] and ranking.higher_is_better["nce"]
    assert ranking.scores["net"]["logme"] == pytest.approx(ranking.scores["bare"]["logme"])


def test_module_head_runs_in_eval_mode_and_keeps_its_state():
    x, y = target(rows=200, seed=8)
    trunk = nn.Linear(12, 6)
    head = nn.Sequential(nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3)).train()
    with torch.no_grad():
        head[0].running_mean.fill_(0.3)  # eval mode uses these; train mode would update them
    before = {k: v.clone() for k, v in head.state_dict().items()}
    first = rank_models({"a": trunk}, x, y, source_heads={"a": head}, scores=["leep", "nce"])
    second = rank_models({"a": trunk}, x, y, source_heads={"a": head}, scores=["leep", "nce"])
    assert first.scores == second.scores  # no dropout noise, no running-stat drift
    assert head.training
    for key, value in head.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_source_head_errors():
    x, y = target()
    trunk = nn.Linear(12, 6)
    with pytest.raises(ValueError, match="source_heads: no model named"):
        rank_models({"a": trunk}, x, y, source_heads={"b": nn.Linear(6, 3)})
    with pytest.raises(ValueError, match="leep and nce need source_heads"):
        rank_models({"a": trunk}, x, y, scores=["leep"])
    with pytest.raises(ValueError, match="rows must be probabilities"):
        rank_models({"a": x.numpy()}, target_labels=y, source_heads={"a": np.ones((len(y), 3), np.float32)})
    with pytest.raises(ValueError, match=r"source_heads\['a'\]: expected \(B, K_source\) logits"):
        rank_models({"a": trunk}, x, y, source_heads={"a": lambda f: f.sum(dim=1)})
