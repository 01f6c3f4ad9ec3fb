"""Token (B, T, D) and channels-first pixel (B, D, *spatial) inputs, and rows labelled
ignore_index: the statistics equal those of the flattened rows with the ignored ones removed,
bit for bit, on every backend, eagerly and under torch.compile, from files and from the
command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from ncfast.cli import main

K, D = 5, 8
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def same_statistics(a: ncfast.ClassStats, b: ncfast.ClassStats) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        if key == "skipped_rows":  # the ignored rows are counted there: checked by each test
            continue
        if isinstance(value, torch.Tensor):
            assert torch.equal(value.cpu(), sb[key].cpu()), key
        else:
            assert value == sb[key], key


def tokens(seed=0, shape=(6, 11), ignore=-100, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, D, generator=g) * 3 + 1).to(device)
    y = torch.randint(0, K, shape, generator=g)
    y[torch.rand(shape, generator=g) < 0.3] = ignore
    return x, y.to(device)


def filtered(x, y, ignore=-100, channels_first=False):
    rows = x.movedim(1, -1).reshape(-1, D) if channels_first else x.reshape(-1, D)
    labels = y.reshape(-1)
    keep = labels != ignore
    return rows[keep], labels[keep], int((~keep).sum())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_tokens_equal_their_kept_rows(device, backend, dtype):
    x, y = tokens(seed=1, device=device)
    x = x.to(dtype)
    got = ncfast.ClassStats(K, D, device=device, backend=backend, per_class_diag=True).update(x, y)
    rows, labels, ignored = filtered(x, y)
    want = ncfast.ClassStats(K, D, device=device, backend=backend, per_class_diag=True).update(rows, labels)
    same_statistics(got, want)
    assert got.skipped_rows == ignored > 0 and got.num_samples == rows.shape[0]


@pytest.mark.parametrize("device", DEVICES)
def test_channels_first_maps_equal_their_kept_pixels(device):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, D, 4, 7, generator=g).to(device)
    y = torch.randint(0, K, (3, 4, 7), generator=g)
    y[1, 2:, :] = -100
    y = y.to(device)
    got = ncfast.ClassStats(K, D, device=device, fourth_moments=True).update(x, y)
    rows, labels, ignored = filtered(x, y, channels_first=True)
    want = ncfast.ClassStats(K, D, device=device, fourth_moments=True).update(rows, labels)
    same_statistics(got, want)
    assert got.skipped_rows == ignored == 14


def test_numpy_tokens_and_a_label_of_its_own_with_growing_classes():
    x, y = tokens(seed=3, shape=(4, 5, 6), ignore=255)
    got = ncfast.ClassStats(None, D).update(x.numpy(), y.numpy(), ignore_index=255)
    assert got.num_classes <= K  # 255 never grew the classes
    rows, labels, ignored = filtered(x, y, ignore=255)
    same_statistics(got, ncfast.ClassStats(None, D).update(rows, labels))
    assert got.skipped_rows == ignored


def test_floats_match_the_reference_in_float64():
    x, y = tokens(seed=4, shape=(50, 40))
    x = x.double()
    got = ncfast.ClassStats(K, D).update(x, y)
    rows, labels, _ = filtered(x, y)
    r, lab = rows.numpy(), labels.numpy()
    counts = np.bincount(lab, minlength=K)
    means = np.stack([r[lab == c].mean(axis=0) for c in range(K)])
    centred = r - means[lab]
    np.testing.assert_array_equal(got.counts.numpy(), counts)
    np.testing.assert_allclose(got.means.numpy(), means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.within_scatter.numpy(), centred.T @ centred, rtol=1e-10, atol=1e-9)


def test_every_row_ignored_counts_them_and_changes_nothing_else():
    x = torch.randn(2, 3, D)
    y = torch.full((2, 3), -100)
    stats = ncfast.ClassStats(K, D).update(x, y)
    assert stats.num_samples == 0 and stats.skipped_rows == 6


def test_without_ignore_index_a_padding_label_is_an_error_and_changes_nothing():
    x, y = tokens(seed=5)
    stats = ncfast.ClassStats(K, D)
    with pytest.raises(ValueError, match="value -100 at row"):
        stats.update(x, y, ignore_index=None)
    assert stats.num_samples == 0 and stats.skipped_rows == 0


def test_a_stray_label_names_its_row_in_the_batch_as_given():
    x, y = tokens(seed=6, shape=(2, 10))
    y[0, :] = -100
    y[1, 3] = 9  # row 13 of the flattened batch, row 3 of the kept ones
    stats = ncfast.ClassStats(K, D)
    with pytest.raises(ValueError, match=r"value 9 at row 13 is outside \[0, 5\)"):
        stats.update(x, y)
    assert stats.num_samples == 0 and stats.skipped_rows == 0


def test_shapes_that_fit_both_layouts_need_to_be_told():
    x = torch.randn(2, D, D)
    y = torch.randint(0, K, (2, D))
    with pytest.raises(ValueError, match="reads both as tokens"):
        ncfast.ClassStats(K, D).update(x, y)
    as_tokens = ncfast.ClassStats(K, D).update(x, y, channels_first=False)
    same_statistics(as_tokens, ncfast.ClassStats(K, D).update(x.reshape(-1, D), y.reshape(-1)))
    as_maps = ncfast.ClassStats(K, D).update(x, y, channels_first=True)
    same_statistics(as_maps, ncfast.ClassStats(K, D).update(x.movedim(1, -1).reshape(-1, D), y.reshape(-1)))


@pytest.mark.parametrize("features, labels, message", [
    ((2, 7, 9), (2, 7), r"does not fit labels of shape \(2, 7\)"),
    ((2, 3, D), (3, 2), r"does not fit labels of shape \(3, 2\)"),
    ((2, 3, D), (6,), r"expected \(rows, dim\), \(\.\.\., dim\) with labels"),
])
def test_shapes_that_fit_neither_layout_are_refused(features, labels, message):
    with pytest.raises(ValueError, match=message):
        ncfast.ClassStats(K, D).update(torch.randn(*features), torch.zeros(labels, dtype=torch.int64))


def test_ignore_index_must_be_an_int_or_none():
    with pytest.raises(TypeError, match="ignore_index: expected an int or None"):
        ncfast.ClassStats(K, D).update(torch.randn(3, D), torch.zeros(3, dtype=torch.int64), ignore_index=1.5)


def test_compiled_update_of_tokens_equals_the_eager_one():
    x, y = tokens(seed=7)
    compiled = ncfast.ClassStats(K, D)
    step = torch.compile(lambda a, b: compiled.update(a, b), fullgraph=True)
    step(x, y)
    step(*tokens(seed=8))
    eager = ncfast.ClassStats(K, D).update(x, y).update(*tokens(seed=8))
    same_statistics(compiled, eager)
    assert compiled.skipped_rows == eager.skipped_rows > 0


def test_the_operator_drops_and_counts_ignored_rows():
    x, y = tokens(seed=9)
    rows, labels = x.reshape(-1, D), y.reshape(-1)
    stats = ncfast.ClassStats(K, D)
    s = stats._state
    skipped = torch.zeros(1, dtype=torch.int64)
    empty = s.means.new_empty((0, D))
    ncfast.ops.class_stats_update_(s.counts, s.means, s.scatter, s.class_scatter, empty, skipped, rows, labels,
                                   "raise", -100)
    kept, kept_labels, ignored = filtered(x, y)
    want = ncfast.ClassStats(K, D).update(kept, kept_labels)
    assert int(skipped) == ignored
    assert torch.equal(s.scatter, want.within_scatter) and torch.equal(s.counts, want.counts)


def write_pair(tmp_path, ignore=-100):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3000, D)).astype(np.float32)
    y = rng.integers(0, K, 3000)
    y[rng.random(3000) < 0.2] = ignore
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    keep = y != ignore
    return x[keep], y[keep], int((~keep).sum())


def test_accumulate_over_files_equals_the_kept_rows(tmp_path):
    write_pair(tmp_path)
    x, y = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    got = ncfast.accumulate(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), num_classes=K, chunk_rows=700,
                            progress=False)
    want = ncfast.ClassStats(K, D)
    for start in range(0, len(y), 700):  # the same chunks, their ignored rows removed
        keep = y[start:start + 700] != -100
        want.update(x[start:start + 700][keep], y[start:start + 700][keep])
    same_statistics(got, want)
    assert got.skipped_rows == int((y == -100).sum()) > 0
    with pytest.raises(ValueError, match="value -100 at row .* is negative"):
        ncfast.accumulate(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), ignore_index=None, progress=False)


def test_the_command_takes_ignore_index(tmp_path, capsys):
    x, y, ignored = write_pair(tmp_path, ignore=7)
    np.save(tmp_path / "xk.npy", x)
    np.save(tmp_path / "yk.npy", y)
    assert main(["stats", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--ignore-index", "7",
                 "-o", str(tmp_path / "s.safetensors"), "--quiet"]) == 0
    stats, _ = ncfast.load_stats(str(tmp_path / "s.safetensors"))
    assert stats.skipped_rows == ignored and stats.num_classes == K
    capsys.readouterr()
    assert main(["score", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--ignore-index", "7", "--quiet",
                 "--metrics", "nc1,logme"]) == 0
    with_ignored = capsys.readouterr().out
    assert f"({ignored:,} labelled 7 skipped)" in with_ignored
    assert main(["score", str(tmp_path / "xk.npy"), str(tmp_path / "yk.npy"), "--quiet", "--metrics", "nc1,logme"]) == 0
    kept = capsys.readouterr().out
    assert with_ignored.splitlines()[1:] == kept.splitlines()[1:]
    assert main(["score", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--ignore-index", "none", "--quiet",
                 "--metrics", "nc1"]) == 0
    assert "labels up to 7" in capsys.readouterr().out  # 7 is then a label like any other
