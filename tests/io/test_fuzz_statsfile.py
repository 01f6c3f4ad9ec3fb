"""Fuzzing the statistics file and checkpoint parsers: random mutations of valid files (bit
flips, overwritten runs, truncation, insertion, edits of the safetensors header's numbers)
give the original statistics exactly or one ValueError naming the file; never another
exception, and never an allocation larger than the file could hold. Seeded and bounded."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import ncfast
from ncfast import _state
from ncfast.io import statsfile

MUTATIONS_PER_FILE = 120


def original_stats():
    rng = np.random.default_rng(90)
    y = rng.integers(0, 5, 400)
    x = rng.standard_normal((400, 6)) + y[:, None]
    return ncfast.ClassStats(None, 6, per_class_diag=True).update(x, y), x, y


def mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    kind = rng.integers(0, 6)
    if kind == 0:  # one bit
        at = rng.integers(0, len(data))
        data[at] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # a run of random bytes
        at = rng.integers(0, len(data))
        run = int(rng.integers(1, 16))
        data[at : at + run] = rng.integers(0, 256, run, dtype=np.uint8).tobytes()
    elif kind == 2:  # truncated
        data = data[: rng.integers(0, len(data))]
    elif kind == 3:  # bytes inserted
        at = rng.integers(0, len(data))
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == 4:  # a number in the first kilobyte (the safetensors header) made large or negative
        head = bytes(data[:1024]).decode("latin1")
        numbers = list(re.finditer(r"\d+", head))
        if numbers:
            m = numbers[int(rng.integers(0, len(numbers)))]
            new = str(rng.choice([0, 1, 2**31, 2**62, 10**15, -1, 2**64 + 7, 20000]))
            data[m.start() : m.end()] = new.encode()
    else:  # the 8-byte header length
        data[:8] = int(rng.choice([0, 1, len(data), 2**40, 2**63])).to_bytes(8, "little")
    return bytes(data)


def same_state(a: ncfast.ClassStats, b: ncfast.ClassStats) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(v, sb[k]) if isinstance(v, torch.Tensor) else v == sb[k] for k, v in sa.items())


@pytest.fixture
def allocations(monkeypatch):
    """The largest statistics allocation asked for (every one goes through check_fits)."""
    asked = [0]
    real = _state.check_fits

    def recording(nbytes, device, what):
        asked[0] = max(asked[0], nbytes)
        return real(nbytes, device, what)

    monkeypatch.setattr(_state, "check_fits", recording)
    return asked


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_mutated_statistics_files_load_exactly_or_fail_with_one_clear_error(tmp_path, suffix, allocations):
    stats, _, _ = original_stats()
    good = tmp_path / f"good{suffix}"
    stats.save(good, extra={"note": "fuzz"})
    raw = good.read_bytes()
    rng = np.random.default_rng(91 if suffix == ".pt" else 92)
    outcomes = {"same": 0, "refused": 0}
    for i in range(MUTATIONS_PER_FILE):
        path = tmp_path / f"m{i}{suffix}"
        mutated = mutate(raw, rng)
        path.write_bytes(mutated)
        allocations[0] = 0
        try:
            loaded, extra = ncfast.load_stats(path)
        except ValueError as err:
            assert str(err).startswith(f"{path}: "), err
            assert "\n" not in str(err)
            outcomes["refused"] += 1
        else:
            assert same_state(loaded, stats) and extra == {"note": "fuzz"}, f"mutation {i} loaded other statistics"
            outcomes["same"] += 1
        assert allocations[0] <= 4 * len(mutated) + (64 << 10), (i, allocations[0], len(mutated))
        path.unlink()
    assert outcomes["refused"] > MUTATIONS_PER_FILE // 2  # the mutations do reach the parser's checks


def test_mutated_checkpoints_resume_exactly_start_over_or_fail_clearly(tmp_path, allocations):
    _, x, y = original_stats()
    x = x.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    def run(checkpoint):
        return ncfast.accumulate(tmp_path / "x.npy", tmp_path / "y.npy", chunk_rows=100, checkpoint=str(checkpoint),
                                 checkpoint_every=100, progress=False)

    whole = run(tmp_path / "whole.ckpt")
    # a checkpoint as a run killed after 200 rows leaves it
    tensors, meta = statsfile.read(str(tmp_path / "whole.ckpt"))
    partial = ncfast.accumulate(x[:200], y[:200], chunk_rows=100, progress=False)
    state = partial.state_dict()
    part_tensors = {n: state.pop(n) for n in statsfile.TENSORS if n in state}
    statsfile.write(str(tmp_path / "partial.ckpt"), part_tensors,
                    {**state, "options": meta["options"], "extra": {**meta["extra"], "rows_done": 200}})
    raw = (tmp_path / "partial.ckpt").read_bytes()
    rng = np.random.default_rng(93)
    for i in range(MUTATIONS_PER_FILE // 2):
        path = tmp_path / f"c{i}.ckpt"
        path.write_bytes(mutate(raw, rng))
        try:
            result = run(path)
        except ValueError as err:
            assert f"--checkpoint: {path}" in str(err), err
            continue
        assert same_state(result, whole), f"mutation {i} gave other statistics"
        assert allocations[0] <= 4 * len(raw) + (64 << 10)
