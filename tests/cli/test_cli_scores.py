"""`ncfast score` turns on the statistics the named scores need, and writes per-class outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import reference_scores as ref
from reference_stats import clustered
from ncfast.cli import main


@pytest.fixture
def dump(tmp_path):
    x, y = clustered(rows=3000, dim=10, classes=5, seed=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def test_named_scores_get_their_statistics(dump):
    path, x, y = dump
    out = path / "s.json"
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--metrics",
                 "h_score_shrinkage,transrate,gbc,uniformity_log", "--json", str(out), "--quiet"]) == 0
    scores = json.loads(out.read_text())["scores"]
    assert scores["h_score_shrinkage"] == pytest.approx(ref.regularized_h_score(x, y), rel=1e-10)
    assert scores["transrate"] == pytest.approx(ref.transrate(x, y), rel=1e-10)
    assert scores["gbc"] == pytest.approx(ref.gbc_google(x, y), rel=1e-10)
    assert scores["uniformity_log"] == pytest.approx(ref.rhubarb_kernel_stats(x, y, "log", weighted=True)[0],
                                                     rel=1e-10)


def test_per_class_outputs_in_the_json(dump):
    path, x, y = dump
    classes, mu = ref.class_means(x, y)
    w = (mu - mu.mean(axis=0)) + 0.3 * np.random.default_rng(1).standard_normal(mu.shape)
    np.save(path / "w.npy", w)
    out = path / "s.json"
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--metrics", "nc1", "--classifier",
                 str(path / "w.npy"), "--per-class", "--json", str(out), "--quiet"]) == 0
    per_class = json.loads(out.read_text())["per_class"]
    var = [((x[y == c] - mu[i]) ** 2).sum(axis=1).mean() for i, c in enumerate(classes)]
    assert per_class["classes"] == classes.tolist()
    assert per_class["within_variance"] == pytest.approx(var, rel=1e-10)
    agree = ref.nearest_centre(x, mu) == (x @ w.T).argmax(axis=1)
    assert per_class["nc4_agreement"] == pytest.approx([agree[y == c].mean() for c in classes], rel=1e-12)
    assert np.array(per_class["interference"]).shape == (5, 5)


def test_per_class_needs_a_json_file(dump, capsys):
    path, _, _ = dump
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--per-class", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "ncfast: error: --per-class: the per-class outputs go to the JSON file; give --json too" in err
