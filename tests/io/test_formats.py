"""Every format ncfast reads, written by the field's own tools: the stored rows come back
exactly, and a pass gives bit-identical statistics to the .npy path for the same rows (same
chunks, same operations), on random and real data, from Python and from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ncfast
from ncfast.cli import main
from ncfast.io import open_array

from dump_writers import WRITERS, write_bytes_dump, write_dump
from reference_stats import numpy_stats, offset_data, rel_err

KINDS = [k for k in WRITERS if k != "npy"]
STATE = ("counts", "means", "scatter", "class_scatter", "class_diag")


def _data(which: str):
    if which == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data.astype(np.float32), d.target.astype(np.int64)
    x, y = offset_data(1003, 7, 5, seed=11, offset=30.0)
    return x.astype(np.float32), y.astype(np.int64)


def _state(stats) -> dict:
    return {k: v for k, v in stats.state_dict().items() if isinstance(v, torch.Tensor)}


def assert_same_state(a, b) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("kind", KINDS)
def test_stored_rows_come_back_exactly(tmp_path, kind):
    x, y = _data("random")
    fspec, lspec = write_dump(kind, tmp_path, x, y)
    feats, labels = open_array(fspec), open_array(lspec, "labels")
    assert feats.shape == x.shape and feats.dtype == torch.float32
    assert labels.shape == y.shape and labels.dtype in (torch.int32, torch.int64)
    # Out of order and overlapping, so sequential readers must restart correctly.
    for start, stop in [(0, 1003), (500, 1003), (17, 400), (0, 1), (1002, 1003), (399, 401), (0, 1003)]:
        np.testing.assert_array_equal(feats.read(start, stop).numpy(), x[start:stop])
        np.testing.assert_array_equal(labels.read(start, stop).numpy(), y[start:stop])


@pytest.mark.parametrize("which", ["random", "digits"])
@pytest.mark.parametrize("kind", KINDS)
def test_pass_is_bit_identical_to_the_npy_path(tmp_path, kind, which):
    x, y = _data(which)
    reference = accumulate_npy(tmp_path / "npy", x, y)
    fspec, lspec = write_dump(kind, tmp_path / kind, x, y)
    stats = ncfast.accumulate(fspec, lspec, chunk_rows=250, per_class_diag=True, progress=False)
    assert_same_state(stats, reference)
    expected = numpy_stats(x, y, int(y.max()) + 1)
    np.testing.assert_array_equal(stats.counts.numpy(), expected.counts)
    assert rel_err(stats.means, expected.means) < 1e-12
    assert rel_err(stats.within_scatter, expected.scatter) < 1e-6


def accumulate_npy(folder, x, y):
    fspec, lspec = write_dump("npy", folder, x, y)
    return ncfast.accumulate(fspec, lspec, chunk_rows=250, per_class_diag=True, progress=False)


@pytest.mark.parametrize("kind", ["u8bin", "bvecs"])
def test_uint8_vectors_are_widened_exactly(tmp_path, kind):
    rng = np.random.default_rng(12)
    y = rng.integers(0, 4, 900)
    x = np.clip(rng.normal(100 + 30 * y[:, None], 20, (900, 16)), 0, 255).astype(np.uint8)
    fspec, lspec = write_bytes_dump(kind, tmp_path / kind, x, y)
    src = open_array(fspec)
    assert src.dtype == torch.float32 and src.shape == (900, 16)
    np.testing.assert_array_equal(src.read(13, 777).numpy(), x[13:777].astype(np.float32))
    stats = ncfast.accumulate(fspec, lspec, chunk_rows=250, per_class_diag=True, progress=False)
    assert_same_state(stats, accumulate_npy(tmp_path / "npy", x.astype(np.float32), y))


@pytest.mark.parametrize("kind", ["npz", "pt", "hdf5-chunked", "parquet", "hf-folder", "fbin", "csv-labels"])
def test_cli_score_gives_the_npy_path_scores(tmp_path, kind):
    x, y = _data("digits")
    scores = {}
    for name in ("npy", kind):
        fspec, lspec = write_dump(name, tmp_path / name, x, y)
        out = tmp_path / f"{name}.json"
        assert main(["score", fspec, lspec, "--chunk-rows", "300", "--json", str(out), "--quiet"]) == 0
        scores[name] = json.loads(out.read_text())
    assert scores[kind]["rows"] == scores["npy"]["rows"] == len(y)
    assert scores[kind]["scores"] == scores["npy"]["scores"]


@pytest.fixture(scope="module")
def npy_stats_file(tmp_path_factory):
    """`ncfast stats` of the digits as .npy: what every other format must reproduce bit for bit."""
    folder = tmp_path_factory.mktemp("npy")
    x, y = _data("digits")
    fspec, lspec = write_dump("npy", folder, x, y)
    assert main(["stats", fspec, lspec, "-o", str(folder / "s.safetensors"), "--chunk-rows", "300", "--quiet"]) == 0
    return ncfast.load_stats(str(folder / "s.safetensors"))[0]


@pytest.mark.parametrize("kind", KINDS)
def test_cli_stats_of_every_format_equal_the_npy_statistics(tmp_path, kind, npy_stats_file):
    x, y = _data("digits")
    fspec, lspec = write_dump(kind, tmp_path, x, y)
    assert main(["stats", fspec, lspec, "-o", str(tmp_path / "s.safetensors"), "--chunk-rows", "300",
                 "--quiet"]) == 0
    stats, _ = ncfast.load_stats(str(tmp_path / "s.safetensors"))
    assert_same_state(stats, npy_stats_file)


# ----------------------------------------------------------------------------- in memory

def test_class_stats_update_takes_arrow_columns():
    pa = pytest.importorskip("pyarrow")
    x, y = _data("random")
    expected = ncfast.ClassStats(5, 7, per_class_diag=True).update(x[:600], y[:600]).update(x[600:], y[600:])
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 7)
    ragged = pa.array(list(x), type=pa.list_(pa.float32()))
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(x)
    for column in (fixed, ragged, tensor):
        table = pa.table({"e": column, "y": y})
        chunked = pa.chunked_array([column.slice(0, 100), column.slice(100, 500)])  # a table column of 2 chunks
        stats = ncfast.ClassStats(5, 7, per_class_diag=True)
        stats.update(chunked, table["y"].slice(0, 600))
        stats.update(table["e"].slice(600), pa.chunked_array([pa.array(y[600:])]))
        assert_same_state(stats, expected)


def test_arrow_columns_with_nulls_or_ragged_rows_are_refused_by_row():
    pa = pytest.importorskip("pyarrow")
    ragged = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]], type=pa.list_(pa.float32()))
    stats = ncfast.ClassStats(2, 2)
    with pytest.raises(ValueError, match="features: row 2 holds 1 values"):
        stats.update(ragged, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="labels: row 1 is null"):
        stats.update(np.ones((3, 2), np.float32), pa.array([0, None, 1]))
    with pytest.raises(TypeError, match="pass one column"):
        stats.update(pa.table({"a": [1.0]}), np.array([0]))
    assert stats.num_samples == 0


def test_accumulate_takes_datasets_columns_in_the_dataset_order():
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    x, y = _data("digits")
    ds = datasets.Dataset.from_dict({"embedding": list(x), "label": y, "id": np.arange(len(y))})
    shuffled = ds.shuffle(seed=3).filter(lambda row: row["id"] % 7 != 0)
    order = np.array(shuffled["id"])
    expected = ncfast.accumulate(x[order], y[order], chunk_rows=250, per_class_diag=True, progress=False)
    for feats, labels in ((shuffled["embedding"], shuffled["label"]),
                          (shuffled.select_columns("embedding"), shuffled.select_columns(["label"]))):
        stats = ncfast.accumulate(feats, labels, chunk_rows=250, per_class_diag=True, progress=False)
        assert_same_state(stats, expected)
    with pytest.raises(ValueError, match=r"the dataset has the columns \['embedding', 'label', 'id'\]"):
        ncfast.accumulate(ds, ds["label"], progress=False)
    update = ncfast.ClassStats(10, 64, per_class_diag=True).update(shuffled["embedding"], shuffled["label"])
    assert_same_state(update, ncfast.ClassStats(10, 64, per_class_diag=True).update(x[order], y[order]))


def test_pyarrow_column_as_an_accumulate_source_is_read_chunk_by_chunk():
    pa = pytest.importorskip("pyarrow")
    x, y = _data("random")
    table = pa.Table.from_batches(_table_batches(pa, x, y, 97))
    stats = ncfast.accumulate(table["e"], table["y"], chunk_rows=250, per_class_diag=True, progress=False)
    assert_same_state(stats, ncfast.accumulate(x, y, chunk_rows=250, per_class_diag=True, progress=False))


def _table_batches(pa, x, y, rows):
    for a in range(0, len(y), rows):
        e = pa.FixedSizeListArray.from_arrays(pa.array(x[a:a + rows].reshape(-1)), x.shape[1])
        yield pa.record_batch({"e": e, "y": pa.array(y[a:a + rows])})
