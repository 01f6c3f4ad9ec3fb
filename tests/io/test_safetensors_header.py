"""Crafted safetensors headers: each is refused before any data is read or allocated, with one
message that names the file and says what is wrong (the command line: one line, exit 2)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from ncfast.io import open_array
from ncfast.io.safetensors import read_header

ROWS, DIM = 50, 4


def crafted(path, header, data: bytes) -> str:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


def _valid():
    x = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM)
    y = np.arange(ROWS, dtype=np.int64) % 3
    header = {"features": {"dtype": "F32", "shape": [ROWS, DIM], "data_offsets": [0, x.nbytes]},
              "labels": {"dtype": "I64", "shape": [ROWS], "data_offsets": [x.nbytes, x.nbytes + y.nbytes]}}
    return header, x.tobytes() + y.tobytes()


def _with(change):
    header, data = _valid()
    change(header)
    return header


CASES = {
    # A shape that claims fewer or more bytes than the entry's span: the next tensor's bytes
    # must never be read as features.
    "shape smaller than span": (_with(lambda h: h["features"].update(shape=[ROWS - 10, DIM])),
                                "tensor 'features' has shape [40, 4] of F32 (640 bytes) but its data_offsets span 800"),
    "shape larger than span": (_with(lambda h: h["features"].update(shape=[ROWS + 25, DIM])),
                               "has shape [75, 4] of F32 (1200 bytes) but its data_offsets span 800"),
    "offsets outside the data": (_with(lambda h: h["labels"].update(data_offsets=[800, 5000])),
                                 "truncated or corrupt (tensor 'labels' ends at byte 5000 of a 1200-byte data section)"),
    "negative offset": (_with(lambda h: h["features"].update(data_offsets=[-8, 792])),
                        "tensor 'features': data_offsets must be two non-negative integers [begin, end], got [-8, 792]"),
    "reversed offsets": (_with(lambda h: h["features"].update(data_offsets=[800, 0])),
                         "data_offsets [800, 0] end before they begin"),
    "missing dtype": (_with(lambda h: h["features"].pop("dtype")), "tensor 'features': its entry has no dtype"),
    "missing data_offsets": (_with(lambda h: h["labels"].pop("data_offsets")),
                             "tensor 'labels': its entry has no data_offsets"),
    "dimension of 2^62": (_with(lambda h: h["features"].update(shape=[2 ** 62, DIM])),
                          "has shape [4611686018427387904, 4] of F32"),
    "entry that is a string": (_with(lambda h: h.update(features="F32")),
                               "tensor 'features': its entry is a str, not an object with dtype, shape and data_offsets"),
    "shape that is a string": (_with(lambda h: h["features"].update(shape="50,4")),
                               "tensor 'features': shape must be a list of non-negative integers, got '50,4'"),
    "shape with a bool": (_with(lambda h: h["features"].update(shape=[True, 4])), "shape must be a list"),
    "unknown dtype": (_with(lambda h: h["features"].update(dtype="F31")), "has unsupported dtype 'F31'"),
    "overlapping tensors": (_with(lambda h: h.update(copy={"dtype": "F32", "shape": [DIM], "data_offsets": [16, 32]})),
                            "overlap in the data section"),
    "header that is a JSON list": ([["features", "F32"]], "the header is a JSON list, not an object of tensors"),
    "metadata that is not strings": (_with(lambda h: h.update(__metadata__={"a": 1})),
                                     "__metadata__ must be an object of strings"),
    "JSON nested 100k deep": (b"{\"x\": " + b"[" * 100_000 + b"]" * 100_000 + b"}",
                              "the JSON header is nested too deeply"),
    "duplicate key": (b'{"features": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "features": {}}',
                      "the key 'features' appears twice"),
    "not JSON": (b"{this is not json}", "the header is not valid JSON"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_header_is_one_clear_error(tmp_path, case):
    header, message = CASES[case]
    _, data = _valid()
    path = crafted(tmp_path / "d.safetensors", header, data)
    with pytest.raises(ValueError) as err:
        open_array(f"{path}:features")
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_header_length_past_the_end_of_the_file(tmp_path):
    path = tmp_path / "d.safetensors"
    path.write_bytes(struct.pack("<Q", 10 ** 12) + b"{}" + b" " * 20)
    with pytest.raises(ValueError, match="header length 1000000000000 runs past the end of the 30-byte file"):
        read_header(str(path))


def test_a_valid_file_reads_after_the_checks(tmp_path):
    header, data = _valid()
    path = crafted(tmp_path / "d.safetensors", header, data)
    x = open_array(f"{path}:features").read(0, ROWS)
    assert torch.equal(x, torch.arange(ROWS * DIM, dtype=torch.float32).reshape(ROWS, DIM))
    assert open_array(f"{path}:labels", "labels").read(0, ROWS).tolist() == [i % 3 for i in range(ROWS)]


def test_cli_prints_one_line_and_exits_2_for_every_crafted_header(tmp_path):
    paths = []
    for i, (header, _) in enumerate(CASES.values()):
        paths.append(crafted(tmp_path / f"c{i}.safetensors", header, _valid()[1]))
    # One process for all cases: each score call reports its own error and exit status.
    script = (
        "import contextlib, io, sys\n"
        "from ncfast.cli import main\n"
        "for path in sys.argv[1:]:\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        code = main(['score', path + ':features', path + ':labels', '--quiet'])\n"
        "    print(code, repr(err.getvalue()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(CASES)
    for line, path, (_, message) in zip(lines, paths, CASES.values()):
        code, stderr = line.split(" ", 1)
        stderr = eval(stderr)
        assert code == "2", line
        assert stderr.count("\n") == 1 and stderr.startswith(f"ncfast: error: {path}: "), stderr
        assert message in stderr and "Traceback" not in stderr
