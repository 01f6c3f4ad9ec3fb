"""Fuzz tests of every reader's header parser: seeded random mutations of a valid file (bit
flips, bytes set to 0 / 0xff / random, truncation, insertions and deletions, planted
integers, digits changed in text headers), mostly in the header where the parser works.

Each mutated file gives either rows equal to what the format's own tool reads from that
same file (np.load, torch.load, the safetensors package, h5py, pyarrow, np.loadtxt, or a
few lines of NumPy for the headerless big-ann formats), or one ValueError of one line that
names the file: never another exception, a crash or a hang, and for byte-range formats
never more rows than the file's bytes hold (so no allocation the file does not imply).
Bounded: a few hundred small files per format, a few seconds in all."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import sys

import numpy as np
import pytest
import torch

from ncfast.io import open_array
from ncfast.io.segment import Segment

MUTATIONS = int(os.environ.get("NCFAST_FUZZ_MUTATIONS", "150"))  # more for a deeper run
GUARD_S = 30  # a hang guard for the suite only, far above any attempt's time


# ----------------------------------------------------------------------------- valid files

def _x(rows=24, dim=3):
    return (np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) - 7) / 4


def _y(rows=24):
    return np.arange(rows, dtype=np.int64) % 5


def build_npy(folder):
    np.save(os.path.join(folder, "x.npy"), _x())
    return "x.npy", [("", lambda p, k: np.load(p))]


def build_safetensors(folder):
    x, y = _x(), _y()
    header = {"features": {"dtype": "F32", "shape": list(x.shape), "data_offsets": [0, x.nbytes]},
              "labels": {"dtype": "I64", "shape": list(y.shape), "data_offsets": [x.nbytes, x.nbytes + y.nbytes]},
              "__metadata__": {"format": "pt"}}
    text = json.dumps(header).encode()
    with open(os.path.join(folder, "d.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + x.tobytes() + y.tobytes())
    try:
        from safetensors.numpy import load_file
    except ImportError:
        load_file = None

    def reference(path, key):
        if load_file is None:
            raise _NoReference
        return load_file(path)[key]

    return "d.safetensors", [(":features", reference), (":labels", reference)]


def build_npz(folder, compressed=False):
    (np.savez_compressed if compressed else np.savez)(os.path.join(folder, "d.npz"), features=_x(), labels=_y())

    def reference(path, key):
        with np.load(path) as archive:
            return archive[key]

    return "d.npz", [(":features", reference), (":labels", reference)]


def build_pt(folder):
    torch.save({"features": torch.from_numpy(_x()), "labels": [torch.from_numpy(_y())]},
               os.path.join(folder, "d.pt"))

    def reference(path, key):
        obj = torch.load(path, weights_only=True)
        return (obj["features"] if key == "features" else obj["labels"][0]).numpy()

    return "d.pt", [(":features", reference), (":labels/0", reference)]


def build_hdf5(folder):
    h5py = pytest.importorskip("h5py")
    with h5py.File(os.path.join(folder, "d.h5"), "w") as f:
        f["features"] = _x()
        f.create_dataset("labels", data=_y(), chunks=(8,), compression="gzip")

    def reference(path, key):
        with h5py.File(path, "r") as f:
            return f[key][()]

    return "d.h5", [(":features", reference), (":labels", reference)]


def _arrow_table():
    import pyarrow as pa

    x = _x()
    return pa.table({"embedding": pa.array(list(x), type=pa.list_(pa.float32())),
                     "fixed": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1]),
                     "label": _y()})


def _column(table, key):
    from ncfast.io.arrow_arrays import to_numpy

    return to_numpy(table.column(key), key)


def build_parquet(folder):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(_arrow_table(), os.path.join(folder, "d.parquet"), row_group_size=10, compression="none")
    return "d.parquet", [(":embedding", lambda p, k: _column(pq.read_table(p), k)),
                         (":label", lambda p, k: _column(pq.read_table(p), k))]


def build_arrow_stream(folder):
    pa = pytest.importorskip("pyarrow")
    table = _arrow_table()
    with pa.ipc.new_stream(os.path.join(folder, "d.arrow"), table.schema) as w:
        w.write_table(table, max_chunksize=9)

    def reference(path, key):
        with pa.memory_map(path) as m:
            return _column(pa.ipc.open_stream(m).read_all(), key)

    return "d.arrow", [(":fixed", reference), (":label", reference)]


def build_feather(folder):
    pytest.importorskip("pyarrow")
    import pyarrow.feather as feather

    feather.write_feather(_arrow_table(), os.path.join(folder, "d.feather"), chunksize=7, compression="uncompressed")
    return "d.feather", [(":embedding", lambda p, k: _column(feather.read_table(p), k))]


def _bin_reference(dtype, labels=False):
    def reference(path, key):
        raw = open(path, "rb").read()
        n, d = struct.unpack("<II", raw[:8])
        values = np.frombuffer(raw[8:], dtype=dtype)
        if values.size != n * d:
            raise _NoReference
        out = values.reshape(n, d).astype(np.float32 if dtype in (np.uint8, np.int8) else dtype)
        return out[:, 0] if labels and d == 1 else out

    return reference


def build_fbin(folder):
    x = _x()
    with open(os.path.join(folder, "base.fbin"), "wb") as f:
        f.write(struct.pack("<II", *x.shape) + x.tobytes())
    return "base.fbin", [("", _bin_reference(np.float32))]


def build_ibin(folder):
    y = _y().astype(np.int32)
    with open(os.path.join(folder, "labels.ibin"), "wb") as f:
        f.write(struct.pack("<II", len(y), 1) + y.tobytes())
    return "labels.ibin", [("", _bin_reference(np.int32, labels=True))]


def build_fvecs(folder):
    x = _x()
    rows = np.empty(len(x), np.dtype([("d", "<i4"), ("v", "<f4", (x.shape[1],))]))
    rows["d"], rows["v"] = x.shape[1], x
    rows.tofile(os.path.join(folder, "base.fvecs"))

    def reference(path, key):
        raw = np.fromfile(path, dtype=np.uint8)
        d = int(raw[:4].view("<i4")[0]) if raw.size >= 4 else 0
        if d <= 0 or raw.size % (4 + 4 * d):
            raise _NoReference
        table = raw.view("<i4").reshape(-1, d + 1)
        if (table[:, 0] != d).any():
            raise _NoReference
        return table[:, 1:].view("<f4")

    return "base.fvecs", [("", reference)]


def build_text(folder):
    with open(os.path.join(folder, "labels.csv"), "w") as f:
        f.write("label\n" + "".join(f"{v}\n" for v in _y()))

    def reference(path, key):
        lines = open(path, "rb").read().split(b"\n")
        body = lines[1:] if lines and lines[0].strip().isalpha() else lines
        while body and not body[-1].strip():
            body.pop()
        try:
            return np.array([int(line) for line in body], dtype=np.int64)
        except ValueError:
            raise _NoReference from None

    return "labels.csv", [("", reference)]


BUILDERS = {
    "npy": build_npy, "safetensors": build_safetensors, "npz": build_npz,
    "npz-compressed": lambda folder: build_npz(folder, compressed=True), "pt": build_pt, "hdf5": build_hdf5,
    "parquet": build_parquet, "arrow-stream": build_arrow_stream, "feather": build_feather, "fbin": build_fbin,
    "ibin": build_ibin, "fvecs": build_fvecs, "text": build_text,
}


# ----------------------------------------------------------------------------- mutations

class _NoReference(Exception):
    """The format's own tool refuses the mutated file too (or there is none)."""


class _Hang(Exception):
    pass


def mutate(data: bytes, rng: random.Random) -> tuple:
    """One random mutation, mostly in the first 256 bytes (the header), and its description."""
    b = bytearray(data)
    head = min(len(b), 256) if rng.random() < 0.8 else len(b)
    at = rng.randrange(max(1, head))
    kind = rng.choice(["flip", "byte", "truncate", "insert", "delete", "integer", "digit"])
    if kind == "flip" and b:
        b[at] ^= 1 << rng.randrange(8)
    elif kind == "byte" and b:
        b[at] = rng.choice([0, 0xFF, rng.randrange(256)])
    elif kind == "truncate":
        del b[rng.randrange(len(b) + 1):]
    elif kind == "insert":
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "delete":
        del b[at: at + rng.randint(1, 8)]
    elif kind == "integer" and len(b) >= at + 8:
        value = rng.choice([0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 62, 2 ** 64 - 1, rng.randrange(2 ** 64)])
        b[at: at + 8] = struct.pack("<Q", value)
    elif kind == "digit":
        digits = [i for i in range(min(len(b), 512)) if 48 <= b[i] <= 57]
        if digits:
            i = rng.choice(digits)
            b[i: i + 1] = rng.choice([b"9", b"0", b"-", b"99999999999", b"1e9", b" "])
    return bytes(b), f"{kind} at {at}"


def _on_alarm(signum, frame):
    raise _Hang()


def attempt(spec: str, path: str, name: str):
    """Rows read through ncfast in small chunks, or the ValueError message."""
    try:
        src = open_array(spec, name)
        if any(isinstance(p, Segment) for p in src.parts):
            implied = sum(p.nbytes for p in src.parts)
            assert implied <= os.path.getsize(path), f"{implied} bytes of rows in a {os.path.getsize(path)}-byte file"
        row_bytes = max(1, int(np.prod(src.shape[1:], dtype=np.int64))) * torch.empty((), dtype=src.dtype).element_size()
        if row_bytes > 1 << 24:
            return None  # a sparse or compressed layout may legally declare more than it stores
        step = max(1, min(64, (1 << 20) // row_bytes))
        buffer = torch.empty((step,) + src.shape[1:], dtype=src.dtype)
        pieces = [src.read(a, min(src.rows, a + step), buffer).clone() for a in range(0, src.rows, step)]
        if not pieces:
            return np.empty((0,) + src.shape[1:], dtype=torch.empty(0, dtype=src.dtype).numpy().dtype)
        return torch.cat(pieces).numpy()
    except ValueError as err:
        return str(err)


@pytest.mark.parametrize("fmt", list(BUILDERS))
def test_mutated_files_read_correctly_or_fail_with_one_clear_error(tmp_path, fmt):
    base = tmp_path / "valid"
    base.mkdir()
    filename, specs = BUILDERS[fmt](str(base))
    original = (base / filename).read_bytes()
    rng = random.Random(f"ncfast-fuzz-{fmt}-{os.environ.get('NCFAST_FUZZ_SEED', '')}")
    previous = signal.signal(signal.SIGALRM, _on_alarm) if hasattr(signal, "SIGALRM") else None
    outcomes = {"rows": 0, "error": 0}
    try:
        for i in range(MUTATIONS):
            data, what = mutate(original, rng)
            folder = tmp_path / f"m{i}"
            folder.mkdir()
            path = str(folder / filename)
            with open(path, "wb") as f:
                f.write(data)
            for key, reference in specs:
                if previous is not None:
                    signal.alarm(GUARD_S)
                try:
                    result = attempt(path + key, path, "labels" if "label" in key else "features")
                except _Hang:
                    pytest.fail(f"{fmt}: mutation {i} ({what}) hung reading {key}")
                except Exception as err:  # anything but one ValueError is a reader bug
                    pytest.fail(f"{fmt}: mutation {i} ({what}) raised {type(err).__name__}: {err}")
                finally:
                    if previous is not None:
                        signal.alarm(0)
                if isinstance(result, str):
                    outcomes["error"] += 1
                    assert "\n" not in result and path in result, f"{fmt} mutation {i} ({what}): {result!r}"
                    continue
                if result is None:
                    continue
                outcomes["rows"] += 1
                try:
                    expected = reference(path, key.lstrip(":"))
                except Exception:  # the format's own tool refuses it: there is nothing to compare
                    continue
                np.testing.assert_array_equal(result, expected, strict=True,
                                              err_msg=f"{fmt} mutation {i} ({what}) read {key} wrongly")
    finally:
        if previous is not None:
            signal.signal(signal.SIGALRM, previous)
    assert outcomes["error"] > 0  # the mutations did reach the parser
    print(f"{fmt}: {outcomes}", file=sys.stderr)
