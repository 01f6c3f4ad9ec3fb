"""Path specs: an existing path always wins over ``file:key``, formats are recognised by their
first bytes and not by the name, folders and globs are shards of one format in name order,
and a FIFO or device is refused at once instead of blocking."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ncfast.io import open_array

from dump_writers import write_dump
from test_io import write_safetensors


def _rows(seed=0, n=40, d=3):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_an_existing_path_with_colons_wins_over_the_key_syntax(tmp_path):
    x = _rows()
    (tmp_path / "run:1").mkdir()
    write_safetensors(tmp_path / "run:1" / "ok.safetensors", {"features": torch.from_numpy(x), "other": torch.ones(2)})
    src = open_array(str(tmp_path / "run:1" / "ok.safetensors:features"))
    np.testing.assert_array_equal(src.read(0, 40).numpy(), x)
    np.save(tmp_path / "a:b.npy", x)  # a file whose name holds a colon is itself, not a:KEY
    np.testing.assert_array_equal(open_array(str(tmp_path / "a:b.npy")).read(0, 40).numpy(), x)
    (tmp_path / "c.npy").write_bytes((tmp_path / "a:b.npy").read_bytes())
    with pytest.raises(ValueError, match="a .npy file holds one array; there is nothing to select with :k"):
        open_array(str(tmp_path / "c.npy:k"))


def test_formats_are_recognised_by_their_bytes_not_their_name(tmp_path):
    x = _rows(1)
    np.save(tmp_path / "my.safetensors.backup.npy", x)
    np.testing.assert_array_equal(open_array(str(tmp_path / "my.safetensors.backup.npy")).read(0, 40).numpy(), x)
    folder = tmp_path / "d.safetensors_dir"
    folder.mkdir()
    np.save(folder / "part-0.npy", x[:15])
    np.save(folder / "part-1.npy", x[15:])
    np.testing.assert_array_equal(open_array(str(folder) + "/").read(0, 40).numpy(), x)
    write_safetensors(tmp_path / "weights.npy", {"t": torch.from_numpy(x)})  # a safetensors file named .npy
    np.testing.assert_array_equal(open_array(str(tmp_path / "weights.npy")).read(0, 40).numpy(), x)
    torch.save(torch.from_numpy(x), tmp_path / "saved.bin")
    np.testing.assert_array_equal(open_array(str(tmp_path / "saved.bin")).read(0, 40).numpy(), x)


def test_folders_skip_hidden_and_metadata_files_and_keep_name_order(tmp_path):
    x = _rows(2, n=30)
    for i, (a, b) in enumerate([(0, 10), (10, 25), (25, 30)]):
        torch.save({"f": torch.from_numpy(x[a:b])}, tmp_path / f"shard-{i:02d}.pt")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".DS_Store").write_bytes(b"\x00" * 10)
    np.testing.assert_array_equal(open_array(f"{tmp_path}:f").read(0, 30).numpy(), x)
    np.testing.assert_array_equal(open_array(f"{tmp_path}/shard-*.pt:f").read(5, 28).numpy(), x[5:28])


def test_shards_of_several_formats_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", _rows())
    (tmp_path / "notes.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match=r"shards are of several formats: npy \(a.npy\), .txt \(notes.txt\)"):
        open_array(str(tmp_path))


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: .*dump.pt:features"):
        open_array(str(tmp_path / "dump.pt:features"))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        open_array(str(tmp_path / "*.npy"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no data files"):
        open_array(str(tmp_path / "empty"))


def test_a_datasetdict_folder_asks_for_a_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"e": [[1.0, 2.0]] * 4, "y": [0, 1, 0, 1]})
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"is a DatasetDict with the splits \['test', 'train'\]"):
        open_array(str(tmp_path / "dd:e"))
    assert open_array(str(tmp_path / "dd" / "train:e")).shape == (4, 2)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes; nothing ever writes to this one.
    The child process would hang forever on a blocking open: the timeout only guards the suite."""
    os.mkfifo(tmp_path / "feats.npy")
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    script = textwrap.dedent(f"""
        from ncfast.io import open_array
        try:
            open_array({str(tmp_path / 'feats.npy')!r})
        except ValueError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "is a FIFO (named pipe), not a regular file" in out.stdout, out.stderr
    cli = subprocess.run([sys.executable, "-m", "ncfast.cli", "score", str(tmp_path / "feats.npy"),
                          str(tmp_path / "y.npy"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2
    assert cli.stderr.strip().splitlines() == [f"ncfast: error: {tmp_path / 'feats.npy'}: is a FIFO (named pipe), "
                                               "not a regular file; ncfast reads files (save the data to a file first)"]


def test_a_device_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(ValueError, match="is a character device, not a regular file"):
        open_array("/dev/zero")


# ----------------------------------------------------------------------------- messages

def test_an_unrecognised_file_names_the_formats_and_how_to_convert(tmp_path):
    (tmp_path / "feats.bin").write_bytes(b"\x01\x02garbage" * 10)
    with pytest.raises(ValueError) as err:
        open_array(str(tmp_path / "feats.bin"))
    message = str(err.value)
    assert "\n" not in message
    assert "not a format ncfast recognises" in message and "np.save(" in message
    for fmt in (".npy", ".npz", ".pt", "safetensors", "HDF5", "Parquet", "Arrow", ".fbin", ".fvecs", ".txt/.csv"):
        assert fmt in message
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="junk.parquet: not a readable .parquet file .it does not start with the "
                                         "Parquet signature"):
        open_array(str(tmp_path / "junk.parquet"))


def test_torch_files_say_what_is_wrong(tmp_path):
    x = torch.from_numpy(_rows())
    torch.save(x, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"old.pt: written by torch.save in the legacy format .* re-save it once: "
                                         r"torch.save\(torch.load\("):
        open_array(str(tmp_path / "old.pt"))
    torch.save({"features": x, "labels": torch.zeros(40, dtype=torch.int64)}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match=r"d.pt: holds a dict with keys \['features', 'labels'\]; name the tensor as"):
        open_array(str(tmp_path / "d.pt"))
    with pytest.raises(ValueError, match=r"d.pt: has no 'logits'"):
        open_array(str(tmp_path / "d.pt:logits"))
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")
    with pytest.raises(ValueError, match="module.pt: holds objects other than tensors"):
        open_array(str(tmp_path / "module.pt:model"))
    torch.save({"n": 3}, tmp_path / "int.pt")
    with pytest.raises(ValueError, match="int.pt:n is a int, not a tensor"):
        open_array(str(tmp_path / "int.pt:n"))


def test_npz_and_zip_messages(tmp_path):
    np.savez(tmp_path / "d.npz", a=_rows(), b=_rows(1))
    with pytest.raises(ValueError, match=r"d.npz: holds \['a', 'b'\]; name one as"):
        open_array(str(tmp_path / "d.npz"))
    with pytest.raises(ValueError, match="has no member 'c'"):
        open_array(str(tmp_path / "d.npz:c"))
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.md", "hello")
    with pytest.raises(ValueError, match="neither .npz .np.savez. nor torch.save"):
        open_array(str(tmp_path / "other.zip"))


def test_arrow_messages_name_the_file_column_and_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"e": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]], type=pa.list_(pa.float32())),
                      "name": ["a", "b", "c"], "y": pa.array([0, None, 1])})
    pq.write_table(table, tmp_path / "t.parquet")
    path = str(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match=r"t.parquet: holds the columns \['e', 'name', 'y'\]; name one as"):
        open_array(path)
    with pytest.raises(ValueError, match="t.parquet:e: row 2 holds 1 values, the rows before it 2"):
        open_array(f"{path}:e").read(0, 3)
    with pytest.raises(ValueError, match="t.parquet:y: row 1 is null"):
        open_array(f"{path}:y", "labels").read(0, 3)
    with pytest.raises(ValueError, match="t.parquet:name: holds string values; labels must be integer class indices"):
        open_array(f"{path}:name", "labels")
    with pytest.raises(ValueError, match="has no column 'label'"):
        open_array(f"{path}:label")
    (tmp_path / "v1.feather").write_bytes(b"FEA1" + b"\x00" * 60 + b"FEA1")  # Feather v1's signature
    with pytest.raises(ValueError, match="Feather version 1.*re-save it as version 2"):
        open_array(str(tmp_path / "v1.feather"))


def test_hdf5_messages(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["g/a"] = np.ones((3, 2))
        f["g/b"] = np.ones(3)
        f["s"] = np.array([b"x", b"y"])
    with pytest.raises(ValueError, match=r"d.h5: holds the datasets \['g/a', 'g/b', 's'\]; name one as"):
        open_array(str(tmp_path / "d.h5"))
    with pytest.raises(ValueError, match="d.h5: 'g' is a group, not a dataset"):
        open_array(str(tmp_path / "d.h5:g"))
    with pytest.raises(ValueError, match="dataset 's' has dtype |S1, which ncfast cannot read"):
        open_array(str(tmp_path / "d.h5:s"))


def test_bigann_and_text_messages(tmp_path):
    x = _rows()
    write_dump("fbin", tmp_path, x, np.zeros(40, np.int64))
    data = (tmp_path / "base.fbin").read_bytes()
    (tmp_path / "short.fbin").write_bytes(data[:-4])
    with pytest.raises(ValueError, match=r"short.fbin: truncated its header says \(40 rows x 3 = 488 bytes, the file "
                                         r"has 484\)"):
        open_array(str(tmp_path / "short.fbin"))
    write_dump("fvecs", tmp_path, x, np.zeros(40, np.int64))
    raw = bytearray((tmp_path / "base.fvecs").read_bytes())
    raw[16 * 7: 16 * 7 + 4] = (5).to_bytes(4, "little")  # row 7 claims dimension 5
    (tmp_path / "bad.fvecs").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="bad.fvecs: row 7 says dimension 5, the first row 3"):
        open_array(str(tmp_path / "bad.fvecs")).read(0, 40)
    (tmp_path / "y.txt").write_text("1\n2\n\n3\n")
    with pytest.raises(ValueError, match="y.txt: line 3 is empty"):
        open_array(str(tmp_path / "y.txt"), "labels").read(0, 3)
    (tmp_path / "y.csv").write_text("label\n1\n2,5\n")
    with pytest.raises(ValueError, match="y.csv: line 3 has more than one column"):
        open_array(str(tmp_path / "y.csv"), "labels").read(0, 2)
    (tmp_path / "z.txt").write_text("1\n2.5\n")
    with pytest.raises(ValueError, match=r"z.txt: line 2: b'2.5' is not an integer label"):
        open_array(str(tmp_path / "z.txt"), "labels").read(0, 2)


def test_text_labels_with_trailing_blank_lines_and_no_final_newline(tmp_path):
    (tmp_path / "a.txt").write_text("3\n1\n2\n\n\n")
    (tmp_path / "b.txt").write_text("3\r\n1\r\n2")
    for name in ("a.txt", "b.txt"):
        src = open_array(str(tmp_path / name), "labels")
        assert src.shape == (3,) and src.dtype == torch.int64
        assert src.read(0, 3).tolist() == [3, 1, 2]


def test_a_missing_optional_dependency_names_the_extra(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = np.ones((3, 2), np.float32)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r"reading HDF5 files needs the h5py package: pip install 'ncfast\[hdf5\]'"):
        open_array(str(tmp_path / "d.h5"))
    pytest.importorskip("pyarrow")
    (tmp_path / "t.parquet").write_bytes(b"PAR1" + b"\x00" * 20 + b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"needs the pyarrow package: pip install 'ncfast\[arrow\]'"):
        open_array(str(tmp_path / "t.parquet"))
