"""Statistics files: a digest refuses edits and damage; a crafted file (digest recomputed) is
refused when its metadata disagrees with its tensors, its counts are negative or wrap, or its
options are unknown, and nothing is allocated from what the metadata claims."""

from __future__ import annotations

import json

import pytest
import torch

import ncfast
from ncfast import stats as stats_module
from ncfast.io import safetensors, statsfile
from reference_stats import numpy_stats, offset_data, rel_err

SUFFIXES = [".safetensors", ".pt"]


def saved_parts(per_class_diag=True, fixed=True):
    """(tensors, meta) exactly as ClassStats.save writes them."""
    x, y = offset_data(500, 6, 4, seed=40)
    stats = ncfast.ClassStats(4 if fixed else None, 6, per_class_diag=per_class_diag).update(x, y)
    state = stats.state_dict()
    tensors = {name: state.pop(name) for name in statsfile.TENSORS if name in state}
    return tensors, {**state, "options": stats._options()}, (x, y)


def crafted(path, tensors, meta):
    """A file written with a correct digest over whatever it is given (a digest is no signature:
    these are the files someone who knows the format could make)."""
    statsfile.write(str(path), tensors, meta)
    return path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_is_exact_with_its_extra(tmp_path, suffix):
    x, y = offset_data(800, 7, 5, seed=41)
    stats = ncfast.ClassStats(None, 7, per_class_diag=True, nan_policy="skip").update(x, y)
    stats.save(tmp_path / f"s{suffix}", extra={"model": "resnet", "epoch": 3})
    loaded, extra = ncfast.load_stats(tmp_path / f"s{suffix}")
    assert extra == {"model": "resnet", "epoch": 3}
    for key, value in stats.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]) if isinstance(value, torch.Tensor) else value == \
            loaded.state_dict()[key], key
    exp = numpy_stats(x, y, 5)
    assert rel_err(loaded.within_scatter, exp.scatter) < 1e-10


def flip_one_bit_inside(path, tensor_bytes: bytes):
    raw = bytearray(path.read_bytes())
    at = raw.find(tensor_bytes)
    assert at > 0
    raw[at + len(tensor_bytes) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_flipped_bit_in_the_scatter_is_refused(tmp_path, suffix):
    tensors, meta, _ = saved_parts()
    path = crafted(tmp_path / f"s{suffix}", tensors, meta)
    flip_one_bit_inside(path, tensors["scatter"].numpy().tobytes())
    with pytest.raises(ValueError, match=r"s\.(pt|safetensors): integrity check failed"):
        ncfast.load_stats(path)


def test_edited_metadata_is_refused(tmp_path):
    tensors, meta, _ = saved_parts()
    path = crafted(tmp_path / "s.safetensors", tensors, meta)
    raw = path.read_bytes()
    edited = raw.replace(b'\\"skipped_rows\\": 0', b'\\"skipped_rows\\": 7')
    assert edited != raw and len(edited) == len(raw)
    path.write_bytes(edited)
    with pytest.raises(ValueError, match="integrity check failed"):
        ncfast.load_stats(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_negative_counts_are_refused(tmp_path, suffix):
    tensors, meta, _ = saved_parts()
    tensors["counts"][2] = -998_512
    path = crafted(tmp_path / f"neg{suffix}", tensors, meta)
    with pytest.raises(ValueError, match=r"neg\.(pt|safetensors): .*counts: class 2 holds -998512 rows \(negative\)"):
        ncfast.load_stats(path)


def test_counts_that_would_wrap_past_2_63_are_refused(tmp_path):
    tensors, meta, _ = saved_parts()
    tensors["counts"][:] = torch.tensor([2**62, 2**62, 1, 1])
    with pytest.raises(ValueError, match="more than a count holds"):
        ncfast.load_stats(crafted(tmp_path / "wrap.safetensors", tensors, meta))


def test_merged_counts_that_would_wrap_are_refused():
    tensors, meta, _ = saved_parts()
    big = {**meta, **tensors}
    big["counts"] = torch.tensor([2**61, 2**61, 2**61, 2**61 - 1])
    a = ncfast.ClassStats(4, 6, per_class_diag=True).load_state_dict(big)
    b = ncfast.ClassStats(4, 6, per_class_diag=True).load_state_dict(big)
    before = a.state_dict()
    with pytest.raises(ValueError, match=r"more than a count holds \(2\^63 - 1\)"):
        a.merge(b)
    assert torch.equal(a.counts, before["counts"]) and torch.equal(a.within_scatter, before["scatter"])


def test_counts_stored_as_float64_are_named(tmp_path):
    tensors, meta, _ = saved_parts()
    tensors["counts"] = tensors["counts"].double()
    with pytest.raises(ValueError, match="counts stored as float64, expected int64"):
        ncfast.load_stats(crafted(tmp_path / "f64.safetensors", tensors, meta))


def test_an_unknown_option_is_named(tmp_path):
    tensors, meta, _ = saved_parts()
    meta["options"]["colour"] = "blue"
    with pytest.raises(ValueError, match=r"unknown 'colour' \(known: device"):
        ncfast.load_stats(crafted(tmp_path / "opt.safetensors", tensors, meta))
    meta["options"].pop("colour")
    meta["options"]["precision"] = "extreme"
    with pytest.raises(ValueError, match="opt.safetensors: precision: expected one of"):
        ncfast.load_stats(crafted(tmp_path / "opt.safetensors", tensors, meta))


@pytest.mark.parametrize("claim", [{"dim": 20_000}, {"dim": 100_000}, {"num_classes": 10**9}, {"dim": 2**62}])
def test_sizes_claimed_by_the_metadata_allocate_nothing(tmp_path, monkeypatch, claim):
    tensors, meta, _ = saved_parts()
    meta.update(claim)
    path = crafted(tmp_path / "claim.safetensors", tensors, meta)
    assert path.stat().st_size < 4000
    allocated = []
    monkeypatch.setattr(stats_module, "empty_state", lambda *a, **k: allocated.append(a) or pytest.fail("allocated"))
    with pytest.raises(ValueError, match="claim.safetensors: state_dict: counts has shape|has shape"):
        ncfast.load_stats(path)
    assert allocated == []


def test_a_tensor_whose_shape_disagrees_with_its_bytes_is_refused_before_reading(tmp_path, monkeypatch):
    tensors, meta, _ = saved_parts()
    path = crafted(tmp_path / "shape.safetensors", tensors, meta)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    header["scatter"]["shape"] = [20_000, 20_000]
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + header_len :])
    monkeypatch.setattr(safetensors, "read_tensor", lambda e: pytest.fail(f"read {e.name} of shape {e.shape}"))
    with pytest.raises(ValueError, match=r"shape.safetensors: .*tensor 'scatter'.* \[20000, 20000\]"):
        ncfast.load_stats(path)


@pytest.mark.parametrize("stored_diag", [True, False])
def test_flipping_per_class_diag_in_the_options_is_refused_either_way(tmp_path, stored_diag):
    tensors, meta, _ = saved_parts(per_class_diag=stored_diag)
    meta["options"]["per_class_diag"] = not stored_diag
    with pytest.raises(ValueError, match="options: per_class_diag=.* but the file holds"):
        ncfast.load_stats(crafted(tmp_path / "diag.safetensors", tensors, meta))


def test_load_state_dict_never_drops_class_diag_silently():
    tensors, meta, _ = saved_parts(per_class_diag=True)
    with pytest.raises(ValueError, match="holds class_diag but per_class_diag=False here"):
        ncfast.ClassStats(4, 6).load_state_dict({**meta, **tensors})
    tensors.pop("class_diag")
    with pytest.raises(ValueError, match="has no class_diag but per_class_diag=True here"):
        ncfast.ClassStats(4, 6, per_class_diag=True).load_state_dict({**meta, **tensors})


def test_an_unexpected_tensor_is_refused(tmp_path):
    tensors, meta, _ = saved_parts()
    tensors["features"] = torch.ones(3, 6)
    with pytest.raises(ValueError, match="unexpected tensor 'features'"):
        ncfast.load_stats(crafted(tmp_path / "more.safetensors", tensors, meta))


def write_without_digest(path, tensors, meta):
    """A statistics file as ncfast wrote them before files carried a digest."""
    if str(path).endswith(".pt"):
        torch.save({"tensors": tensors, "meta": meta}, path)
    else:
        safetensors.save(str(path), tensors, {"ncfast": json.dumps(meta)})
    return path


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_files_without_a_digest_need_allow_unverified(tmp_path, suffix):
    tensors, meta, (x, y) = saved_parts()
    path = write_without_digest(tmp_path / f"old{suffix}", tensors, meta)
    with pytest.raises(ValueError, match="has no integrity digest .* allow_unverified=True"):
        ncfast.load_stats(path)
    stats, _ = ncfast.load_stats(path, allow_unverified=True)
    assert torch.equal(stats.within_scatter, tensors["scatter"])
    stats.save(path)  # saved again: now with a digest
    assert torch.equal(ncfast.load_stats(path)[0].within_scatter, tensors["scatter"])


def test_allow_unverified_still_checks_the_contents(tmp_path):
    tensors, meta, _ = saved_parts()
    tensors["counts"][0] = -1
    path = write_without_digest(tmp_path / "old.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="holds -1 rows"):
        ncfast.load_stats(path, allow_unverified=True)


@pytest.mark.parametrize("bad, match", [
    (float("nan"), "scatter holds NaN or Inf"),
    (float("inf"), "scatter holds NaN or Inf"),
])
def test_non_finite_values_are_refused(tmp_path, bad, match):
    tensors, meta, _ = saved_parts()
    tensors["scatter"][1, 2] = bad
    with pytest.raises(ValueError, match=match):
        ncfast.load_stats(crafted(tmp_path / "nan.safetensors", tensors, meta))
