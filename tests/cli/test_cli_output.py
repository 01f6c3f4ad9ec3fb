"""What the `ncfast` command tells its reader: each score's meaning and direction (table, --help,
JSON, glossary), the version, what the JSON records, class counts, a closed pipe, the hint for
a statistics file given as features, rank correlations against measured accuracies, and
`python -m ncfast`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import reference_scores as ref
import ncfast
from ncfast._format import format_column
from ncfast.cli import main
from ncfast.cli.glossary import EXTRA, entries
from ncfast.cli.output import describe_classes
from ncfast.metrics.registry import REGISTRY, SCORES


def run_cli(*args, module="ncfast.cli", **kwargs):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)


def clustered(rows, dim, classes, spread, seed, labels=None):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, rows) if labels is None else labels
    return (centres[y] + spread * rng.standard_normal((rows, dim))).astype(np.float32), y


@pytest.fixture
def dump(tmp_path):
    x, y = clustered(3000, 10, 5, 1.0, seed=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def table_rows(out: str) -> dict:
    """{score: (value text, direction, meaning)} from the printed table."""
    rows = {}
    for line in out.splitlines()[2:]:
        name, value, direction, meaning = line.split(None, 3)
        rows[name] = (value, direction, meaning)
    return rows


def test_table_gives_each_score_its_direction_and_meaning(dump, capsys):
    path, x, y = dump
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["score", "value", "better", "meaning"]
    rows = table_rows(out)
    assert list(rows) == list(SCORES)
    for name, (_, direction, meaning) in rows.items():
        assert direction == REGISTRY[name].direction
        assert meaning == REGISTRY[name].meaning
    assert float(rows["nc1"][0]) == pytest.approx(ref.nc1(x.astype(np.float64), y), rel=1e-3)


def test_numbers_in_a_column_share_a_format():
    assert format_column([13.72134, -0.7186, 0.1732]) == ["13.7213", "-0.7186", "0.1732"]
    assert format_column([13.72134, -2.67e-81, None]) == ["1.3721e+01", "-2.6700e-81", "n/a"]
    assert format_column([0.0, 2.5e5]) == ["0.0000e+00", "2.5000e+05"]
    assert format_column([float("nan"), 1.0]) == ["nan", "1.0000"]


def test_a_score_that_cannot_be_computed_says_why_in_the_table_and_json(tmp_path, capsys):
    x, _ = clustered(40, 6, 3, 1.0, seed=1)
    y = np.zeros(len(x), dtype=np.int64)  # one class: no NC1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["score", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--quiet", "--metrics", "nc1,rankme",
                 "--json", str(tmp_path / "s.json")]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["nc1"][0] == "n/a" and rows["nc1"][2].startswith("not computed: nc1: needs at least 2 classes")
    assert rows["rankme"][0] != "n/a"
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["scores"]["nc1"] is None and "got 1" in result["notes"]["nc1"]


def test_json_records_version_input_options_and_directions(dump):
    path, x, y = dump
    out = path / "s.json"
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--json", str(out), "--metrics", "nc1,logme",
                 "--chunk-rows", "512", "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["ncfast"] == ncfast.__version__ and result["command"] == "score"
    feats, labels = result["input"]["features"], result["input"]["labels"]
    assert feats == [[str(path / "x.npy"), os.path.getsize(path / "x.npy"), os.stat(path / "x.npy").st_mtime_ns]]
    assert labels[0][0] == str(path / "y.npy")
    assert result["options"]["chunk_rows"] == 512 and result["options"]["metrics"] == "nc1,logme"
    assert result["options"]["quiet"] is True and "run" not in result["options"]
    assert result["direction"] == {"nc1": "lower", "logme": "higher"}
    assert result["meaning"]["logme"] == REGISTRY["logme"].meaning
    assert result["scores"]["logme"] == pytest.approx(ref.logme(x.astype(np.float64), y), rel=1e-6)


def test_glossary_covers_every_score_with_its_direction(capsys):
    assert main(["metrics"]) == 0
    text = capsys.readouterr().out
    for name, entry in entries().items():
        assert f"\n{name}  ({entry.direction} is better)\n" in f"\n{text}\n", name
    assert "-2.7e-81" in text  # GBC's scale is explained
    assert main(["score", "--list"]) == 0
    assert capsys.readouterr().out == text
    assert set(EXTRA) >= {"nc3", "nc4", "ncc_accuracy", "nc2_classifier_etf"}


@pytest.mark.parametrize("command, extra", [("score", ["nc3", "nc4", "ncc_accuracy"]), ("rank", [])])
def test_help_lists_each_score_with_direction_and_meaning(command, extra):
    done = run_cli(command, "--help")
    assert done.returncode == 0
    for name in list(SCORES) + extra:
        entry = entries()[name]
        line = next(l for l in done.stdout.splitlines() if l.split()[:1] == [name])
        assert f"{entry.direction} is better" in line and entry.meaning[:30] in line


def test_version():
    done = run_cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"ncfast {ncfast.__version__}"
    from importlib.metadata import version

    assert version("ncfast") == ncfast.__version__  # pyproject.toml reads the same string


def test_classes_with_rows_and_the_largest_label(tmp_path, capsys):
    present = np.array([0, 1, 2, 3, 5, 8, 9, 11, 12, 14, 17, 19, 20, 22, 25, 27, 29])  # 17 labels, up to 29
    y = np.random.default_rng(3).choice(present, 2000)
    y[: present.size] = present
    x, _ = clustered(2000, 6, 30, 1.0, seed=3, labels=y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["score", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--metrics", "nc1", "--quiet"]) == 0
    assert "17 classes with rows, labels up to 29," in capsys.readouterr().out
    assert main(["stats", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "-o", str(tmp_path / "s.pt"),
                 "--quiet"]) == 0
    assert "17 classes with rows, labels up to 29," in capsys.readouterr().out
    assert describe_classes(torch.tensor([3, 1, 2])) == "3 classes"
    assert describe_classes(torch.tensor([3, 0, 2, 0])) == "2 classes with rows, labels up to 2 (K = 4)"


def test_closed_pipe_is_not_an_error_and_the_json_is_still_written(dump):
    path, _, _ = dump
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line, like `| head -0`
    try:
        done = subprocess.run([sys.executable, "-m", "ncfast.cli", "score", str(path / "x.npy"), str(path / "y.npy"),
                               "--json", str(path / "s.json"), "--quiet"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads((path / "s.json").read_text())["rows"] == 3000


def test_statistics_file_given_as_features_points_to_stats(dump, tmp_path):
    path, x, y = dump
    ncfast.save_stats(ncfast.ClassStats(5, 10).update(x, y), tmp_path / "s.safetensors")
    ncfast.save_stats(ncfast.ClassStats(5, 10).update(x, y), tmp_path / "s.pt")
    for spec in ("s.safetensors", "s.safetensors:means", "s.pt"):
        done = run_cli("score", tmp_path / spec, path / "y.npy", "--quiet")
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        stats_path = tmp_path / spec.split(":")[0]
        assert lines[0] == (f"ncfast: error: features: {stats_path} holds ncfast statistics, not features; "
                            f"score them with: ncfast score --stats {stats_path}")


def _models(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 1500)
    centres = 3.0 * rng.standard_normal((4, 8))
    truth = {}
    for i, spread in enumerate((0.5, 1.0, 1.5, 2.5, 4.0)):
        name = f"m{i}"
        np.save(tmp_path / f"{name}.npy", (centres[y] + spread * rng.standard_normal((1500, 8))).astype(np.float32))
        truth[name] = [0.9, 0.7, 0.8, 0.5, 0.4][i]  # not the spread's order: taus below 1
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "acc.json").write_text(json.dumps(truth))
    return truth


def test_rank_prints_direction_and_correlates_with_truth(tmp_path, capsys):
    pytest.importorskip("scipy")
    from scipy.stats import kendalltau, weightedtau

    truth = _models(tmp_path)
    out = tmp_path / "r.json"
    assert main(["rank", *(f"{m}={tmp_path / m}.npy" for m in truth), "--labels", str(tmp_path / "y.npy"),
                 "--metrics", "nc1,logme,rankme", "--truth", str(tmp_path / "acc.json"), "--json", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    ranking_part, correlation_part = printed.split("agreement with --truth")
    lines = {line.split()[0]: line for line in ranking_part.splitlines()}
    assert lines["nc1"].split()[1] == "lower" and lines["logme"].split()[1] == "higher"
    result = json.loads(out.read_text())
    assert result["direction"] == {"nc1": "lower", "logme": "higher", "rankme": "higher"}
    assert result["ncfast"] == ncfast.__version__ and set(result["input"]) == set(truth) | {"labels"}
    models = list(truth)
    acc = [truth[m] for m in models]
    for score in ("nc1", "logme", "rankme"):
        sign = -1.0 if score == "nc1" else 1.0
        values = [sign * result["scores"][m][score] for m in models]
        assert result["rankings"][score] == sorted(models, key=lambda m: -sign * result["scores"][m][score])
        assert result["correlation"]["kendall"][score] == pytest.approx(kendalltau(values, acc)[0], abs=1e-12)
        assert result["correlation"]["weighted"][score] == pytest.approx(weightedtau(values, acc)[0], abs=1e-12)
        printed_k = float(re.search(rf"\n  {score}\s+([+-][0-9.]+)\s+([+-][0-9.]+)", correlation_part).group(1))
        assert printed_k == pytest.approx(result["correlation"]["kendall"][score], abs=5e-4)


def test_rank_truth_without_a_model_is_one_error_before_any_pass(tmp_path):
    truth = _models(tmp_path)
    (tmp_path / "short.json").write_text(json.dumps({"m0": 0.9}))
    (tmp_path / "bad.json").write_text("[1, 2]")
    models = [f"{m}={tmp_path / m}.npy" for m in truth]
    for file, message in (("short.json", "has no value for m1, m2, m3, m4"), ("bad.json", "one object of numbers"),
                          ("none.json", "no such file")):
        done = run_cli("rank", *models, "--labels", tmp_path / "y.npy", "--truth", tmp_path / file)
        assert done.returncode == 2 and done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ncfast: error: --truth:") and message in lines[0]


def test_transferability_gives_the_reason_for_each_score_left_out():
    x, y = clustered(30, 40, 3, 1.0, seed=6)  # no fourth moments: no shrinkage H-score; no per-class variances: no GBC
    stats = ncfast.ClassStats(3, 40).update(x, y)
    out = ncfast.transferability(stats)
    assert "h_score_shrinkage" not in out and "gbc" not in out and "logme" in out
    assert set(out.reasons) == {"h_score_shrinkage", "gbc"}
    assert "fourth_moments=True" in out.reasons["h_score_shrinkage"] and "per_class_diag=True" in out.reasons["gbc"]
    assert out["h_score"] == pytest.approx(ref.h_score(x.astype(np.float64), y), rel=1e-6)
    with pytest.raises(ValueError, match="h_score_shrinkage needs the fourth moments.*gbc needs per-class"):
        ncfast.transferability(stats, strict=True)
    tracked = ncfast.ClassStats(3, 4, per_class_diag=True, fourth_moments=True).update(*clustered(300, 4, 3, 1.0, 7))
    full = ncfast.transferability(tracked, strict=True)
    assert full.reasons == {} and {"logme", "gbc", "h_score_shrinkage"} <= set(full)


def test_demo_explains_what_it_prints_and_the_cuda_state():
    done = run_cli("--rows", "30000", "--dim", "12", "--classes", "6", module="ncfast")
    assert done.returncode == 0, done.stderr
    from ncfast.cli.demo import synthetic_features

    x, y = synthetic_features(30000, 12, 6)
    xd, yn = x.numpy().astype(np.float64), y.numpy()
    _, means = ref.class_means(xd, yn)
    counts = np.bincount(yn, minlength=6).astype(np.float64)
    tr_w = sum(((xd[yn == c] - means[c]) ** 2).sum() for c in range(6)) / len(xd)
    centred = means - (counts[:, None] * means).sum(0) / counts.sum()
    tr_b = (centred ** 2).sum() / 6
    printed_w = float(re.search(r"tr\(Sigma_W\) = +([0-9.]+)", done.stdout).group(1))
    printed_b = float(re.search(r"tr\(Sigma_B\) = +([0-9.]+)", done.stdout).group(1))
    assert printed_w == pytest.approx(tr_w, abs=0.006) and printed_b == pytest.approx(tr_b, abs=0.006)
    assert "within-class spread" in done.stdout and "lower = more neural collapse" in done.stdout
    cuda = next(l for l in done.stdout.splitlines() if l.startswith("CUDA:"))
    if ncfast.build_info()["cuda"] and not torch.cuda.is_available():
        assert "compiled in" in cuda and "no GPU visible" in cuda
    assert "generating" in done.stderr and "100.0% 30,000/30,000 rows" in done.stderr  # progress while it generates
