"""Readers and the streaming pipeline: every format gives back exactly the stored rows, and a
pass over a dump equals the float64 reference with memory bounded by the chunk size."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ncfast.io import check_pair, open_array, stream
from ncfast.pipeline import accumulate

from reference_stats import numpy_stats, offset_data, rel_err


def write_safetensors(path, tensors: dict) -> None:
    """A minimal safetensors writer, independent of ncfast's: JSON header, then raw bytes."""
    codes = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_npy_rows_read_back_exactly(tmp_path, dtype):
    x = np.random.default_rng(0).standard_normal((1003, 7)).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    src = open_array(str(tmp_path / "x.npy"))
    assert src.shape == x.shape and src.rows == 1003
    for start, stop in [(0, 1003), (0, 1), (17, 400), (1002, 1003)]:
        np.testing.assert_array_equal(src.read(start, stop).numpy(), x[start:stop])


def test_shards_folder_and_glob_concatenate_in_name_order(tmp_path):
    x = np.random.default_rng(1).standard_normal((250, 5)).astype(np.float32)
    for i, (a, b) in enumerate([(0, 100), (100, 101), (101, 250)]):
        np.save(tmp_path / f"part-{i:03d}.npy", x[a:b])
    for spec in (str(tmp_path), str(tmp_path / "part-*.npy")):
        src = open_array(spec)
        assert src.shape == (250, 5)
        np.testing.assert_array_equal(src.read(0, 250).numpy(), x)
        np.testing.assert_array_equal(src.read(95, 180).numpy(), x[95:180])  # spans all three shards


def test_shards_that_disagree_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4), np.float32))
    np.save(tmp_path / "b.npy", np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="shards disagree"):
        open_array(str(tmp_path))


def test_safetensors_named_tensors_including_bf16(tmp_path):
    gen = torch.Generator().manual_seed(2)
    feats = (torch.randn(301, 6, generator=gen) * 3 + 1).to(torch.bfloat16)
    labels = torch.randint(0, 4, (301,), generator=gen)
    path = tmp_path / "dump.safetensors"
    write_safetensors(path, {"features": feats, "labels": labels})
    src = open_array(f"{path}:features")
    assert src.dtype == torch.bfloat16 and src.shape == (301, 6)
    assert torch.equal(src.read(10, 200), feats[10:200])
    assert torch.equal(open_array(f"{path}:labels").read(0, 301), labels)
    with pytest.raises(ValueError, match="name one"):
        open_array(str(path))
    with pytest.raises(ValueError, match="no tensor 'logits'"):
        open_array(f"{path}:logits")


def test_bf16_dump_statistics_match_float64_of_the_stored_values(tmp_path):
    x, y = offset_data(2000, 12, 5, seed=3, offset=4.0)
    feats = torch.from_numpy(x).to(torch.bfloat16)
    path = tmp_path / "d.safetensors"
    write_safetensors(path, {"x": feats, "y": torch.from_numpy(y)})
    stats = accumulate(open_array(f"{path}:x"), open_array(f"{path}:y", "labels"), chunk_rows=333, progress=False)
    ref = numpy_stats(feats.double().numpy(), y, 5)
    assert rel_err(stats.means, ref.means) < 1e-12
    assert rel_err(stats.within_scatter, ref.scatter) < 1e-6


def test_in_memory_sources(tmp_path):
    x, y = offset_data(500, 4, 3, seed=4)
    for feats in (x, torch.from_numpy(x)):
        src = open_array(feats)
        assert src.shape == (500, 4)
        np.testing.assert_array_equal(np.asarray(src.read(20, 40)), x[20:40])
    stats = accumulate(open_array(x), open_array(y, "labels"), chunk_rows=64, progress=False)
    assert rel_err(stats.within_scatter, numpy_stats(x, y, 3).scatter) < 1e-12


@pytest.mark.parametrize("chunk_rows", [1, 97, 5000])
def test_pass_over_npy_dump_equals_reference(tmp_path, chunk_rows):
    x, y = offset_data(3001 if chunk_rows > 1 else 300, 16, 7, seed=5)
    x = x.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y.astype(np.int32))
    stats = accumulate(open_array(str(tmp_path / "x.npy")), open_array(str(tmp_path / "y.npy"), "labels"),
                       chunk_rows=chunk_rows, progress=False)
    ref = numpy_stats(x, y, 7)
    np.testing.assert_array_equal(stats.counts.numpy(), ref.counts)
    assert rel_err(stats.means, ref.means) < 1e-12
    assert rel_err(stats.within_scatter, ref.scatter) < 1e-6


def test_stream_yields_every_row_once_in_order_and_stops_cleanly():
    x = torch.arange(1000 * 3, dtype=torch.float32).reshape(1000, 3)
    y = torch.arange(1000) % 4
    seen = [(first, a.clone(), b.clone()) for first, a, b in stream(open_array(x), open_array(y, "labels"), chunk_rows=128)]
    assert [s[0] for s in seen] == list(range(0, 1000, 128))
    assert torch.equal(torch.cat([s[1] for s in seen]), x)
    assert torch.equal(torch.cat([s[2] for s in seen]), y)
    # Leaving early must not leave the reader thread blocked on a full queue.
    it = stream(open_array(x), open_array(y, "labels"), chunk_rows=10, prefetch=1)
    next(it)
    it.close()


def test_stream_hands_reader_errors_to_the_consumer(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((100, 3), np.float32))
    src = open_array(str(tmp_path / "x.npy"))
    with open(tmp_path / "x.npy", "r+b") as f:  # shrinks after the header was checked
        f.truncate(os.path.getsize(tmp_path / "x.npy") - 40)
    with pytest.raises(ValueError, match="truncated"):
        list(stream(src, open_array(np.zeros(100, np.int64), "labels"), chunk_rows=30))


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_array(str(tmp_path / "missing.npy"))
    (tmp_path / "junk.npy").write_bytes(b"this is not numpy" * 10)
    with pytest.raises(ValueError, match="not a readable .npy"):
        open_array(str(tmp_path / "junk.npy"))
    np.save(tmp_path / "t.npy", np.ones((50, 8), np.float32))
    with open(tmp_path / "t.npy", "r+b") as f:
        f.truncate(300)
    with pytest.raises(ValueError, match="truncated"):
        open_array(str(tmp_path / "t.npy"))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((5, 3), np.float32)))
    with pytest.raises(ValueError, match="Fortran"):
        open_array(str(tmp_path / "f.npy"))
    np.save(tmp_path / "c.npy", np.ones((5, 3), np.complex64))
    feats = open_array(str(tmp_path / "c.npy"))
    with pytest.raises(ValueError, match="features: dtype"):
        check_pair(feats, open_array(np.zeros(5, np.int64), "labels"))
    with pytest.raises(ValueError, match="5 labels for 4"):
        check_pair(open_array(np.ones((4, 3), np.float32)), open_array(np.zeros(5, np.int64), "labels"))
    with pytest.raises(ValueError, match="labels: dtype"):
        check_pair(open_array(np.ones((4, 3), np.float32)), open_array(np.zeros(4, np.float32), "labels"))


def _write_dump(tmp_path, kind, rows, dim):
    """A float32 dump of `rows` x `dim` as one .npy, a folder of .npy shards or a
    .safetensors file (built in this process; only the reading process is measured);
    returns the features spec."""
    rng = np.random.default_rng(6)
    step = 65536
    if kind == "npy":
        x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
        for a in range(0, rows, step):
            x[a : a + step] = rng.standard_normal((min(step, rows - a), dim), dtype=np.float32) + 5
        x.flush()
        return str(tmp_path / "x.npy")
    if kind == "shards":
        (tmp_path / "shards").mkdir()
        for i, a in enumerate(range(0, rows, step)):
            part = rng.standard_normal((min(step, rows - a), dim), dtype=np.float32) + 5
            np.save(tmp_path / "shards" / f"part-{i:03d}.npy", part)
        return str(tmp_path / "shards")
    from ncfast.io import safetensors as _safetensors

    x = torch.empty(rows, dim)
    for a in range(0, rows, step):
        x[a : a + step] = torch.from_numpy(rng.standard_normal((min(step, rows - a), dim), dtype=np.float32) + 5)
    _safetensors.save(str(tmp_path / "x.safetensors"), {"features": x})
    return f"{tmp_path / 'x.safetensors'}:features"


@pytest.mark.parametrize("kind", ["npy", "shards", "safetensors"])
def test_streaming_memory_is_bounded_by_the_chunk_not_the_file(tmp_path, kind):
    """Peak RSS while scoring a 192 MiB dump with 4 MiB chunks stays under a few chunks plus
    a constant, for every reader: the file is never held in memory (plain reads by byte
    range, no memory map)."""
    rows, dim = 393_216, 128  # 192 MiB of float32
    features = _write_dump(tmp_path, kind, rows, dim)
    np.save(tmp_path / "y.npy", np.random.default_rng(7).integers(0, 10, rows))
    script = textwrap.dedent(f"""
        import ncfast, torch
        from ncfast.io import open_array
        from ncfast.pipeline import accumulate
        from ncfast.metrics import nc1
        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024
        feats, labels = open_array({features!r}), open_array({str(tmp_path / 'y.npy')!r}, "labels")
        warm = accumulate(open_array(torch.randn(8192, {dim}) + 5), open_array(torch.arange(8192) % 10, "labels"),
                          chunk_rows=8192, progress=False)  # loads kernels, BLAS and thread pools
        nc1(warm)
        before = hwm()
        stats = accumulate(feats, labels, chunk_rows=8192, progress=False)
        nc1(stats)
        print(stats.num_samples, hwm() - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, growth = map(int, out.stdout.split())
    assert n == rows
    chunk = 8192 * dim * 4  # 4 MiB
    assert growth < 4 * chunk + (32 << 20), f"peak RSS grew by {growth / 2**20:.1f} MiB for a 192 MiB file"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stream_to_gpu_through_pinned_buffers_and_a_copy_stream(tmp_path):
    x, y = offset_data(5000, 24, 5, seed=7, offset=3.0)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    seen = []
    for first, xc, yc in stream(open_array(str(tmp_path / "x.npy")), open_array(str(tmp_path / "y.npy"), "labels"),
                                chunk_rows=700, device="cuda"):
        assert xc.is_cuda and yc.is_cuda
        seen.append(xc.double().cpu())  # on the current stream, after the copy
    np.testing.assert_array_equal(torch.cat(seen).numpy(), x.astype(np.float32).astype(np.float64))
    stats = accumulate(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), device="cuda", chunk_rows=700, progress=False)
    assert rel_err(stats.within_scatter.cpu(), numpy_stats(x.astype(np.float32), y, 5).scatter) < 1e-5
