"""Properties over generated inputs (hypothesis): any split of a stream into batches, any
merge order (and tree of merges), any input dtype and memory layout give the statistics of the
float64 two-pass reference, within the README's precision for the dtype.

Bounded: a fixed number of examples per property, derandomised (the same examples on every run)
and small arrays, so the file runs in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
from reference_stats import numpy_stats

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# normwise error of W (relative to the total scatter, so that classes of one row, whose W is
# exactly zero, still compare): README "Precision", against the values the dtype holds
TOLERANCE = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-5, "bfloat16": 1e-5}
LAYOUTS = ["tensor", "numpy", "row-strided", "column-strided", "fortran"]


@st.composite
def streams(draw):
    """(x rounded to its dtype as float64, y, K, dtype name): class centres N(0, 9) plus an
    offset common to all classes, spread 1."""
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    rows = draw(st.integers(1, 160))
    dim = draw(st.integers(1, 7))
    k = draw(st.integers(1, 5))
    offset = draw(st.sampled_from([0.0, 100.0, 1e4] if dtype in ("float32", "float64") else [0.0, 50.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, rows)
    x = offset + 3.0 * rng.standard_normal((k, dim))[y] + rng.standard_normal((rows, dim))
    x = torch.from_numpy(x).to(DTYPES[dtype]).to(torch.float64).numpy()  # the values the dtype holds
    return x, y, k, dtype


def cuts(draw, rows):
    points = draw(st.lists(st.integers(0, rows), max_size=6))
    return [0] + sorted(points) + [rows]


def laid_out(x64: np.ndarray, dtype: str, layout: str):
    """The same values in `layout`: a tensor, a NumPy array (for the dtypes NumPy has), a view
    with a row stride, a view with a column stride, a Fortran-ordered array."""
    t = torch.from_numpy(x64).to(DTYPES[dtype])
    if layout == "numpy" and dtype != "bfloat16":
        return t.numpy()
    if layout == "row-strided":
        wide = torch.zeros((2 * t.shape[0], t.shape[1]), dtype=t.dtype)
        wide[::2] = t
        return wide[::2]
    if layout == "column-strided":
        wide = torch.zeros((t.shape[0], 2 * t.shape[1]), dtype=t.dtype)
        wide[:, ::2] = t
        return wide[:, ::2]
    if layout == "fortran" and dtype != "bfloat16":
        return np.asfortranarray(t.numpy())
    return t


def total_scatter(x: np.ndarray) -> np.ndarray:
    z = x - x.mean(axis=0)
    return z.T @ z


def assert_matches(stats, x, y, dtype):
    k = stats.num_classes  # with num_classes=None: the largest label + 1
    exp = numpy_stats(x, y, k)
    np.testing.assert_array_equal(stats.counts.numpy(), exp.counts)
    scale = max(np.linalg.norm(total_scatter(x)), np.linalg.norm(exp.scatter), 1e-300)
    err = np.linalg.norm(stats.within_scatter.numpy() - exp.scatter) / scale
    assert err <= TOLERANCE[dtype], (dtype, err)
    diag_err = np.abs(stats.class_diag.numpy() - exp.class_diag).sum() / max(np.trace(total_scatter(x)), 1e-300)
    assert diag_err <= TOLERANCE[dtype] * x.shape[1], (dtype, diag_err)
    spread = max(np.abs(x - x.mean(axis=0)).max(), 1e-300)
    present = exp.counts > 0
    mean_err = np.abs(stats.means.numpy()[present] - exp.means[present]).max() / spread
    assert mean_err <= max(TOLERANCE[dtype], 1e-12), (dtype, mean_err)


@BOUNDED
@given(data=st.data(), stream=streams(), layout=st.sampled_from(LAYOUTS),
       backend=st.sampled_from(["native", "reference"]), grow=st.booleans())
def test_any_split_into_batches_gives_the_same_statistics(data, stream, layout, backend, grow):
    x, y, k, dtype = stream
    stats = ncfast.ClassStats(None if grow else k, x.shape[1], per_class_diag=True, backend=backend)
    bounds = cuts(data.draw, x.shape[0])
    for a, b in zip(bounds[:-1], bounds[1:]):
        stats.update(laid_out(x[a:b], dtype, layout), torch.from_numpy(y[a:b]))
    assert_matches(stats, x, y, dtype)


@BOUNDED
@given(data=st.data(), stream=streams(), backend=st.sampled_from(["native", "reference"]))
def test_any_merge_order_and_tree_gives_the_same_statistics(data, stream, backend):
    x, y, k, dtype = stream
    bounds = cuts(data.draw, x.shape[0])
    parts = [ncfast.ClassStats(None, x.shape[1], per_class_diag=True, backend=backend)
             .update(laid_out(x[a:b], dtype, "tensor"), torch.from_numpy(y[a:b]))
             for a, b in zip(bounds[:-1], bounds[1:])]
    parts = data.draw(st.permutations(parts))
    while len(parts) > 1:  # merge two neighbours chosen by the example: any tree of merges
        i = data.draw(st.integers(0, len(parts) - 2))
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    assert_matches(parts[0], x, y, dtype)


@BOUNDED
@given(stream=streams(), backend=st.sampled_from(["native", "reference"]))
def test_a_saved_and_loaded_state_continues_the_same_stream(tmp_path_factory, stream, backend):
    x, y, k, dtype = stream
    half = x.shape[0] // 2
    first = ncfast.ClassStats(k, x.shape[1], per_class_diag=True, backend=backend)
    first.update(laid_out(x[:half], dtype, "tensor"), torch.from_numpy(y[:half]))
    path = tmp_path_factory.mktemp("state") / "s.safetensors"
    first.save(path)
    resumed = ncfast.load_stats(path)[0]
    resumed.update(laid_out(x[half:], dtype, "tensor"), torch.from_numpy(y[half:]))
    assert_matches(resumed, x, y, dtype)
