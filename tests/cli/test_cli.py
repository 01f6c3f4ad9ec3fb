"""The `ncfast` command: scores against independent references, ranking, statistics files,
resume after kill -9, and one clear line with exit status 2 for every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import reference_scores as ref
from reference_stats import numpy_stats, rel_err
import ncfast
from ncfast import load_stats, save_stats
from ncfast.cli import main


def run_cli(*args, timeout=300):
    """The command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "ncfast.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def clustered(rows, dim, classes, spread, seed):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, rows)
    x = centres[y] + spread * rng.standard_normal((rows, dim))
    return x.astype(np.float32), y


@pytest.fixture
def dump(tmp_path):
    x, y = clustered(4000, 12, 6, 1.0, seed=0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def test_score_matches_independent_scores(dump, capsys):
    path, x, y = dump
    out = path / "scores.json"
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--json", str(out), "--chunk-rows", "700"]) == 0
    printed = capsys.readouterr()
    assert "nc1" in printed.out and "logme" in printed.out
    assert "rows/s" in printed.err and "ETA" in printed.err  # the progress line
    result = json.loads(out.read_text())
    assert result["rows"] == 4000 and result["dim"] == 12 and result["classes"] == 6
    scores = result["scores"]
    xd = x.astype(np.float64)
    assert scores["nc1"] == pytest.approx(ref.nc1(xd, y), rel=1e-6)
    assert scores["cdnv"] == pytest.approx(ref.cdnv(xd, y), rel=1e-6)
    assert scores["logme"] == pytest.approx(ref.logme(xd, y), rel=1e-6)
    assert scores["h_score"] == pytest.approx(ref.h_score(xd, y), rel=1e-6)


def test_score_with_classifier_adds_nc3_and_nc4(dump, capsys):
    path, x, y = dump
    xd = x.astype(np.float64)
    _, means = ref.class_means(xd, y)
    w = (means - means.mean(0)) + 0.1 * np.random.default_rng(1).standard_normal(means.shape)
    np.save(path / "w.npy", w)
    out = path / "s.json"
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--classifier", str(path / "w.npy"),
                 "--metrics", "nc1", "--json", str(out), "--quiet"]) == 0
    scores = json.loads(out.read_text())["scores"]
    assert set(scores) >= {"nc1", "nc3", "nc4", "ncc_accuracy"}
    assert scores["nc3"] == pytest.approx(ref.nc3(xd, y, w), rel=1e-6)
    ncc = ref.nearest_centre(xd, means)
    assert scores["ncc_accuracy"] == pytest.approx(float((ncc == y).mean()), abs=1e-12)
    assert scores["nc4"] == pytest.approx(float((ncc != (xd @ w.T).argmax(1)).mean()), abs=1e-12)


def test_builtin_example_scores_in_a_fresh_process():
    done = run_cli("score", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "built-in example" in done.stderr
    assert "200,000 rows, 256 dims, 20 classes" in done.stdout
    for name in ("nc1", "logme", "nc3", "nc4"):
        assert name in done.stdout


def test_rank_orders_models_by_each_score(tmp_path, capsys):
    y = np.random.default_rng(2).integers(0, 5, 3000)
    for name, spread in (("sharp", 0.3), ("blurry", 3.0), ("middling", 1.0)):
        x, _ = clustered(3000, 10, 5, spread, seed=3)
        rng = np.random.default_rng(3)
        centres = 3.0 * rng.standard_normal((5, 10))
        np.save(tmp_path / f"{name}.npy", (centres[y] + spread * rng.standard_normal((3000, 10))).astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "rank.json"
    assert main(["rank", *(f"{m}={tmp_path / m}.npy" for m in ("blurry", "sharp", "middling")),
                 "--labels", str(tmp_path / "y.npy"), "--metrics", "nc1,logme,h_score", "--json", str(out), "--quiet"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for score in ("nc1", "logme", "h_score"):
        line = lines[score]
        assert line.index("sharp") < line.index("middling") < line.index("blurry"), line
    table = json.loads(out.read_text())["scores"]
    assert table["sharp"]["nc1"] < table["middling"]["nc1"] < table["blurry"]["nc1"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_stats_then_merge_equals_one_pass(tmp_path, dump, suffix):
    path, x, y = dump
    for part, rows in (("a", slice(0, 1500)), ("b", slice(1500, None))):
        np.save(tmp_path / f"x{part}.npy", x[rows])
        np.save(tmp_path / f"y{part}.npy", y[rows])
        assert main(["stats", str(tmp_path / f"x{part}.npy"), str(tmp_path / f"y{part}.npy"),
                     "--num-classes", "6", "-o", str(tmp_path / f"{part}{suffix}"), "--quiet"]) == 0
    assert main(["merge", str(tmp_path / f"a{suffix}"), str(tmp_path / f"b{suffix}"), "-o", str(tmp_path / f"all{suffix}")]) == 0
    merged, _ = load_stats(str(tmp_path / f"all{suffix}"))
    expected = numpy_stats(x, y, 6)
    np.testing.assert_array_equal(merged.counts.numpy(), expected.counts)
    assert rel_err(merged.means, expected.means) < 1e-12
    assert rel_err(merged.within_scatter, expected.scatter) < 1e-6
    assert rel_err(merged.class_diag, expected.class_diag) < 1e-6
    # Scores of saved statistics, no features needed.
    out = tmp_path / "from_stats.json"
    assert main(["score", "--stats", str(tmp_path / f"all{suffix}"), "--metrics", "nc1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["scores"]["nc1"] == pytest.approx(ref.nc1(x.astype(np.float64), y), rel=1e-6)


def test_checkpoint_resume_after_kill_gives_the_uninterrupted_result(tmp_path):
    rng = np.random.default_rng(4)
    rows, dim = 600_000, 32
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    x[:] = rng.standard_normal((rows, dim), dtype=np.float32) + 7
    x.flush()
    np.save(tmp_path / "y.npy", rng.integers(0, 20, rows))
    common = ["stats", tmp_path / "x.npy", tmp_path / "y.npy", "--chunk-rows", "2000"]
    whole = run_cli(*common, "-o", tmp_path / "whole.safetensors", "--quiet")
    assert whole.returncode == 0, whole.stderr

    ckpt = tmp_path / "run.ckpt.safetensors"
    # The victim stops itself (SIGSTOP) right after its second checkpoint is written and is
    # killed there: mid-run whatever the machine's load, with no timing involved.
    stop_after_two = ("import os, signal, sys\nimport ncfast.pipeline as p\nsave, saved = p.save_stats, []\n"
                      "def save_then_stop(*a, **k):\n    save(*a, **k)\n    saved.append(1)\n"
                      "    if len(saved) == 2:\n        os.kill(os.getpid(), signal.SIGSTOP)\n"
                      "p.save_stats = save_then_stop\nfrom ncfast.cli import main\nsys.exit(main(sys.argv[1:]))")
    args = [sys.executable, "-c", stop_after_two, *map(str, common), "-o", str(tmp_path / "resumed.safetensors"),
            "--checkpoint", str(ckpt), "--checkpoint-every", "20000"]
    victim = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status = os.waitpid(victim.pid, os.WUNTRACED)  # returns once it has stopped (or ended)
    assert os.WIFSTOPPED(status), "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    _, extra = load_stats(str(ckpt))  # the checkpoint on disk is whole, never half-written
    assert 0 < extra["rows_done"] < rows, "the run ended before it could be killed"

    resumed = run_cli(*common, "-o", tmp_path / "resumed.safetensors", "--checkpoint", ckpt, "--checkpoint-every", "20000")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {ckpt} at row {extra['rows_done']:,}" in resumed.stderr
    a, _ = load_stats(str(tmp_path / "whole.safetensors"))
    b, _ = load_stats(str(tmp_path / "resumed.safetensors"))
    for name in ("counts", "means", "within_scatter", "class_scatter", "class_diag"):
        assert np.array_equal(getattr(a, name).numpy(), getattr(b, name).numpy()), name


def test_checkpoint_of_other_data_is_not_used(dump):
    path, x, y = dump
    ckpt = path / "c.safetensors"
    assert main(["stats", str(path / "x.npy"), str(path / "y.npy"), "-o", str(path / "s1.safetensors"),
                 "--checkpoint", str(ckpt), "--quiet"]) == 0
    np.save(path / "x2.npy", x[:1000] + 1)
    np.save(path / "y2.npy", y[:1000])
    assert main(["stats", str(path / "x2.npy"), str(path / "y2.npy"), "-o", str(path / "s2.safetensors"),
                 "--checkpoint", str(ckpt)]) == 0
    stats, _ = load_stats(str(path / "s2.safetensors"))
    assert stats.num_samples == 1000
    assert rel_err(stats.means, numpy_stats(x[:1000] + 1, y[:1000], 6).means) < 1e-12


def _bad_inputs(tmp_path):
    x, y = clustered(300, 4, 3, 1.0, seed=5)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "short.npy", y[:299])
    np.save(tmp_path / "yfloat.npy", y.astype(np.float32))
    np.save(tmp_path / "ybig.npy", np.where(np.arange(300) == 123, 7, y))
    np.save(tmp_path / "xint.npy", (x * 10).astype(np.int16))
    np.save(tmp_path / "xnan.npy", np.where(np.arange(300)[:, None] == 50, np.nan, x).astype(np.float32))
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage" * 20)
    np.save(tmp_path / "trunc.npy", x)
    with open(tmp_path / "trunc.npy", "r+b") as f:
        f.truncate(2000)
    np.save(tmp_path / "empty_x.npy", x[:0])
    np.save(tmp_path / "empty_y.npy", y[:0])
    np.save(tmp_path / "w_narrow.npy", np.ones((3, 5), np.float32))
    np.save(tmp_path / "x1d.npy", x[:, 0])
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle" * 10)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    save_stats(ncfast.ClassStats(3, 4).update(x, y), tmp_path / "d4.safetensors")
    save_stats(ncfast.ClassStats(3, 5).update(np.ones((2, 5), np.float32), np.array([0, 1])), tmp_path / "d5.pt")
    t = tmp_path
    return {
        "missing file": (["score", t / "nope.npy", t / "y.npy"], "no such file"),
        "corrupt npy": (["score", t / "corrupt.npy", t / "y.npy"], "not a readable .npy"),
        "truncated npy": (["score", t / "trunc.npy", t / "y.npy"], "truncated"),
        "length mismatch": (["score", t / "x.npy", t / "short.npy"], "299 labels for 300"),
        "float labels": (["score", t / "x.npy", t / "yfloat.npy"], "labels: dtype"),
        "labels out of range": (["score", t / "x.npy", t / "ybig.npy", "--num-classes", "3"], "value 7 at row 123"),
        "unreadable dtype": (["score", t / "xint.npy", t / "y.npy"], "features: dtype"),
        "nan row": (["score", t / "xnan.npy", t / "y.npy"], "row 50 holds NaN or Inf (pass --nan-policy skip"),
        "unknown metric": (["score", t / "x.npy", t / "y.npy", "--metrics", "nc9"], "unknown nc9"),
        "bad model spec": (["rank", "justapath.npy", "--labels", t / "y.npy"], "NAME=FEATURES"),
        "missing stats file": (["merge", t / "a.safetensors", "-o", t / "m.safetensors"], "no such file"),
        "corrupt stats file": (["merge", t / "garbage.pt", "-o", t / "m.pt"], "not a readable ncfast statistics"),
        "foreign .pt file": (["score", "--stats", t / "other.pt"], "other.pt: not a readable ncfast statistics"),
        "merge of other dims": (["merge", t / "d4.safetensors", t / "d5.pt", "-o", t / "m.pt"], "d5.pt: cannot merge"),
        "corrupt checkpoint": (["score", t / "x.npy", t / "y.npy", "--checkpoint", t / "garbage.pt"], "cannot be read"),
        "classifier width": (["score", t / "x.npy", t / "y.npy", "--classifier", t / "w_narrow.npy"],
                             "has shape (3, 5), expected (K, 4)"),
        "output folder missing": (["score", t / "x.npy", t / "y.npy", "--plot", t / "no" / "g.png"],
                                  "--plot: folder"),
        "1-D features": (["score", t / "x1d.npy", t / "y.npy", "--classifier", t / "w_narrow.npy"],
                         "expected a 2-D"),
        "stats and features": (["score", t / "x.npy", t / "y.npy", "--stats", t / "d4.safetensors"], "--stats:"),
        "empty dump": (["score", t / "empty_x.npy", t / "empty_y.npy"], "holds no rows"),
    }


def test_bad_input_one_line_exit_2_and_outputs_untouched(tmp_path):
    (tmp_path / "out.json").write_text("previous results\n")
    for case, (args, message) in _bad_inputs(tmp_path).items():
        if args[0] == "score":
            args = args + ["--json", tmp_path / "out.json"]
        done = run_cli(*args, "--quiet") if args[0] != "merge" else run_cli(*args)
        assert done.returncode == 2, (case, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ncfast: error:"), (case, done.stderr)
        assert message in lines[0], (case, lines[0])
        assert "Traceback" not in done.stderr
    assert (tmp_path / "out.json").read_text() == "previous results\n"
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "--chunk-rows", "-5"], "--chunk-rows: must be positive, got -5"),
        (["stats", "x.npy", "y.npy", "-o", "s.pt", "--checkpoint-every", "0"], "must be positive"),
        (["score", "--num-classes", "two"], "expected a whole number"),
        (["score", "--device", "gpu"], "expected cpu, cuda or cuda:N"),
    ],
)
def test_bad_options_exit_2_before_any_work(args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_output_fails_before_the_pass(dump, capsys):
    path, _, _ = dump
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--json", str(path / "no" / "s.json")]) == 2
    printed = capsys.readouterr()
    assert "--json: folder" in printed.err and "rows/s" not in printed.err and printed.out == ""


def test_nan_policy_skip_drops_and_counts_rows(tmp_path, capsys):
    x, y = clustered(2000, 8, 4, 1.0, seed=3)
    bad = [0, 17, 1999]
    dirty = x.copy()
    dirty[bad, 2] = np.nan
    np.save(tmp_path / "x.npy", dirty)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "w.npy", np.random.default_rng(4).standard_normal((4, 8)))
    out = tmp_path / "s.json"
    assert main(["score", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--nan-policy", "skip",
                 "--classifier", str(tmp_path / "w.npy"), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    keep = np.setdiff1d(np.arange(2000), bad)
    xd, yk = x[keep].astype(np.float64), y[keep]
    assert result["rows"] == 1997 and result["skipped_rows"] == 3
    assert result["scores"]["nc1"] == pytest.approx(ref.nc1(xd, yk), rel=1e-6)
    nearest = ref.nearest_centre(xd, np.stack([xd[yk == c].mean(axis=0) for c in range(4)]))
    assert result["scores"]["ncc_accuracy"] == pytest.approx(np.mean(nearest == yk))
    assert "3 with NaN/Inf or label -100 skipped" in capsys.readouterr().out


def test_plot_without_matplotlib_is_one_clear_error(dump, tmp_path, monkeypatch, capsys):
    path, _, _ = dump
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--plot", str(tmp_path / "g.png"), "--quiet"]) == 2
    printed = capsys.readouterr()
    assert "--plot needs matplotlib: pip install 'ncfast[plot]'" in printed.err and "Traceback" not in printed.err
    assert printed.out == ""  # refused before the pass
    assert not (tmp_path / "g.png").exists()


def test_plot_writes_png_files(dump, tmp_path):
    pytest.importorskip("matplotlib")
    path, x, y = dump
    assert main(["score", str(path / "x.npy"), str(path / "y.npy"), "--plot", str(tmp_path / "g.png"), "--quiet"]) == 0
    assert main(["rank", f"a={path / 'x.npy'}", f"b={path / 'x.npy'}", "--labels", str(path / "y.npy"),
                 "--metrics", "nc1,logme", "--plot", str(tmp_path / "r.png"), "--quiet"]) == 0
    for name in ("g.png", "r.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
