"""The command on hostile or careless input: one line `ncfast: error: ...`, exit status 2, no
traceback, no partial output, and the error before the pass wherever it can be seen up front."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import ncfast
from ncfast import pipeline
from ncfast.cli import main
from ncfast.io import statsfile
from disk_faults import fill_disk


@pytest.fixture
def dump(tmp_path):
    rng = np.random.default_rng(60)
    y = rng.integers(0, 4, 600)
    x = (rng.standard_normal((600, 5)) + y[:, None]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path


def one_error_line(capsys, *expected):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncfast: error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def no_pass(monkeypatch):
    monkeypatch.setattr(ncfast.ClassStats, "update", lambda *a, **k: pytest.fail("the pass started"))


@pytest.mark.parametrize("option", ["-o", "--json"])
def test_an_output_that_is_a_folder_fails_before_the_pass(dump, capsys, monkeypatch, option):
    (dump / "out").mkdir()
    no_pass(monkeypatch)
    command = "stats" if option == "-o" else "score"
    args = [command, str(dump / "x.npy"), str(dump / "y.npy"), option, str(dump / "out"), "--quiet"]
    assert main(args) == 2
    one_error_line(capsys, f"{option}: {dump / 'out'} is a folder")


def test_merge_output_that_is_a_folder_fails_before_reading(dump, capsys):
    (dump / "out").mkdir()
    assert main(["merge", str(dump / "nope.safetensors"), "-o", str(dump / "out")]) == 2
    one_error_line(capsys, "is a folder")


def test_a_full_disk_is_one_line_and_leaves_no_file(dump, capsys, monkeypatch):
    fill_disk(monkeypatch, room=0)
    before = sorted(os.listdir(dump))
    assert main(["stats", str(dump / "x.npy"), str(dump / "y.npy"), "-o", str(dump / "x.pt"), "--quiet"]) == 2
    one_error_line(capsys, "No space left on device", str(dump / "x.pt"))
    assert sorted(os.listdir(dump)) == before


def test_a_million_columns_is_a_memory_error_naming_the_size(tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.ones((2, 1_000_000), np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    assert main(["stats", str(tmp_path / "wide.npy"), str(tmp_path / "y.npy"), "-o", str(tmp_path / "s.pt"),
                 "--quiet"]) == 2
    one_error_line(capsys, "1,000,000 x 1,000,000 float64 scatter", "needs 8.0 TB")


def test_zero_columns_is_one_line(tmp_path, capsys):
    np.save(tmp_path / "x0.npy", np.zeros((5, 0), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(5, np.int64))
    assert main(["score", str(tmp_path / "x0.npy"), str(tmp_path / "y.npy"), "--quiet"]) == 2
    one_error_line(capsys, "has 0 columns")


@pytest.mark.parametrize("value", [2**63 - 1, 10**9])
def test_a_stray_label_is_refused_before_the_pass(dump, capsys, monkeypatch, value):
    y = np.load(dump / "y.npy")
    y[321] = value
    np.save(dump / "stray.npy", y)
    no_pass(monkeypatch)
    assert main(["score", str(dump / "x.npy"), str(dump / "stray.npy"), "--quiet"]) == 2
    one_error_line(capsys, f"value {value} at row 321", "max_classes=1,048,576", "--num-classes")


def npy_claiming(path, shape, data: np.ndarray):
    """A .npy whose header claims `shape` but whose data is `data` (a crafted or truncated file)."""
    np.save(path, data)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + header_len].decode("latin1")
    new = header.replace(str(data.shape), str(shape)).rstrip()
    new = new + " " * (header_len - len(new) - 1) + "\n"
    assert len(new) == header_len
    path.write_bytes(raw[:10] + new.encode("latin1") + raw[10 + header_len :])


def test_a_classifier_claiming_1e15_rows_is_named(dump, capsys):
    npy_claiming(dump / "w.npy", (10**15, 5), np.ones((4, 5), np.float32))
    assert main(["score", str(dump / "x.npy"), str(dump / "y.npy"), "--classifier", str(dump / "w.npy"),
                 "--quiet"]) == 2
    one_error_line(capsys, "--classifier:", "claims shape (1000000000000000, 5)", "truncated or corrupt")


def test_a_classifier_npz_is_named(dump, capsys):
    np.savez(dump / "w.npz", weight=np.ones((4, 5)), bias=np.zeros(4))
    assert main(["score", str(dump / "x.npy"), str(dump / "y.npy"), "--classifier", str(dump / "w.npz"),
                 "--quiet"]) == 2
    one_error_line(capsys, "w.npz is a .npz archive (of weight, bias)", "np.save")


def test_a_classifier_that_still_loads(dump, capsys):
    centres = np.eye(4, 5, dtype=np.float32) + 0.1
    np.save(dump / "w.npy", centres)
    assert main(["score", str(dump / "x.npy"), str(dump / "y.npy"), "--classifier", str(dump / "w.npy"),
                 "--json", str(dump / "s.json"), "--quiet"]) == 0
    assert json.loads((dump / "s.json").read_text())["scores"]["nc4"] is not None


def saved(dump):
    main(["stats", str(dump / "x.npy"), str(dump / "y.npy"), "-o", str(dump / "s.safetensors"), "--quiet"])
    return dump / "s.safetensors"


def test_a_damaged_stats_file_is_one_line(dump, capsys):
    path = saved(dump)
    capsys.readouterr()
    tensors, _ = statsfile.read(str(path))
    raw = bytearray(path.read_bytes())
    at = raw.find(tensors["scatter"].numpy().tobytes())
    raw[at + 17] ^= 0x10
    path.write_bytes(bytes(raw))
    assert main(["score", "--stats", str(path), "--quiet"]) == 2
    one_error_line(capsys, "s.safetensors: integrity check failed")


def test_a_stats_file_with_a_negative_count_is_one_line(dump, capsys):
    path = saved(dump)
    capsys.readouterr()
    tensors, meta = statsfile.read(str(path))
    tensors["counts"][1] = -998_512
    statsfile.write(str(path), tensors, meta)
    assert main(["merge", str(path), "-o", str(dump / "m.safetensors")]) == 2
    one_error_line(capsys, "holds -998512 rows (negative)")
    assert not (dump / "m.safetensors").exists()


def test_an_edited_checkpoint_is_one_line(dump, capsys, monkeypatch):
    ckpt = dump / "run.ckpt"
    real = pipeline.save_stats

    def save_then_die(stats, where, extra):
        real(stats, where, extra)
        if extra["rows_done"] >= 200:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "save_stats", save_then_die)
    args = ["stats", str(dump / "x.npy"), str(dump / "y.npy"), "-o", str(dump / "s.pt"), "--quiet",
            "--chunk-rows", "100", "--checkpoint", str(ckpt), "--checkpoint-every", "200"]
    assert main(args) == 130
    monkeypatch.setattr(pipeline, "save_stats", real)
    tensors, meta = statsfile.read(str(ckpt))
    meta["extra"]["rows_done"] = 100
    statsfile.write(str(ckpt), tensors, meta)
    capsys.readouterr()
    assert main(args) == 2
    one_error_line(capsys, "run.ckpt is inconsistent", "delete it to start over")
    assert torch.equal(statsfile.read(str(ckpt))[0]["counts"], tensors["counts"])  # left for the user to see
