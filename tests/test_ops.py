"""torch.library operators: opcheck, values against the float64 references, torch.compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ncfast
import reference_scores as ref
from reference_stats import numpy_stats, offset_data, rel_err
from ncfast import ops


def state_args(k, d, per_class_diag=False, seed=0):
    """Non-trivial state tensors (from a first batch) and a second batch."""
    x, y = offset_data(400, d, k, seed=seed, offset=5.0)
    stats = ncfast.ClassStats(k, d, per_class_diag=per_class_diag).update(torch.from_numpy(x).float(), torch.from_numpy(y))
    s = stats._state
    diag = s.class_diag if per_class_diag else torch.zeros(0, d, dtype=torch.float64)
    x2, y2 = offset_data(300, d, k, seed=seed + 1, offset=5.0)
    return (s.counts.clone(), s.means.clone(), s.scatter.clone(), s.class_scatter.clone(), diag.clone(),
            torch.zeros(1, dtype=torch.int64), torch.from_numpy(x2).float(), torch.from_numpy(y2)), (x, y, x2, y2)


@pytest.mark.parametrize("per_class_diag", [False, True])
def test_update_op_passes_opcheck(per_class_diag):
    args, _ = state_args(5, 7, per_class_diag)
    torch.library.opcheck(torch.ops.ncfast.class_stats_update_.default, args + ("raise",))


def test_update_op_updates_in_place_like_one_stream():
    args, (x, y, x2, y2) = state_args(4, 6, per_class_diag=True)
    counts, means, scatter, class_scatter, diag, skipped, f, l = args
    torch.ops.ncfast.class_stats_update_(*args, "raise")
    expected = numpy_stats(np.vstack([x.astype(np.float32), x2.astype(np.float32)]), np.concatenate([y, y2]), 4)
    np.testing.assert_array_equal(counts.numpy(), expected.counts)
    assert rel_err(means, expected.means) < 1e-12
    assert rel_err(scatter, expected.scatter) < 1e-6
    assert rel_err(class_scatter, expected.class_scatter) < 1e-6
    assert rel_err(diag, expected.class_diag) < 1e-6
    assert int(skipped) == 0


def test_update_op_counts_skipped_rows():
    args, _ = state_args(3, 4)
    args = list(args)
    args[6] = args[6].clone()
    args[6][[5, 9], 2] = float("nan")
    torch.ops.ncfast.class_stats_update_(*args, "skip")
    assert int(args[5]) == 2


@pytest.mark.parametrize("name", sorted(ops.SCORE_OPS))
def test_score_ops_pass_opcheck_and_match_references(name):
    x, y = offset_data(600, 6, 4, seed=3, offset=2.0)
    stats = ncfast.ClassStats(4, 6).update(torch.from_numpy(x), torch.from_numpy(y))
    s = stats._state
    args = (s.counts, s.means, s.scatter) + ((s.class_scatter,) if name == "cdnv" else ())
    op = getattr(torch.ops.ncfast, name).default
    torch.library.opcheck(op, args)
    value = op(*args)
    assert value.dtype == torch.float64 and value.shape == ()
    expected = getattr(ref, name)(x, y)
    assert float(value) == pytest.approx(expected, rel=1e-8)


def _training_step(model, stats):
    def step(x, y):
        h = model[:2](x)
        stats.update(h.detach(), y)
        return model[2](h).square().mean()

    return step


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_update_inside_fullgraph_compiled_step(backend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    stats = ncfast.ClassStats(3, 16)
    compiled = torch.compile(_training_step(model, stats), fullgraph=True, backend=backend)
    batches = [(torch.randn(32, 10) + 1, torch.randint(0, 3, (32,))) for _ in range(3)]
    for x, y in batches:
        loss = compiled(x, y)
        loss.backward()
    with torch.no_grad():
        h = torch.cat([model[:2](x) for x, _ in batches]).double().numpy()
    expected = numpy_stats(h, torch.cat([y for _, y in batches]).numpy(), 3)
    np.testing.assert_array_equal(stats.counts.numpy(), expected.counts)
    assert rel_err(stats.means, expected.means) < 1e-6
    assert rel_err(stats.within_scatter, expected.scatter) < 1e-5


def test_compiled_update_counts_skips_and_needs_fixed_classes():
    stats = ncfast.ClassStats(2, 3, nan_policy="skip")

    def update(x, y):
        stats.update(x, y)

    x = torch.randn(10, 3)
    x[4, 1] = float("inf")
    torch.compile(update, fullgraph=True, backend="aot_eager")(x, torch.arange(10) % 2)
    assert stats.skipped_rows == 1 and stats.num_samples == 9
    state = stats.state_dict()
    assert state["skipped_rows"] == 1

    growing = ncfast.ClassStats(None, 3)
    with pytest.raises(Exception, match="fixed number of classes"):
        torch.compile(lambda x, y: growing.update(x, y), fullgraph=True, backend="aot_eager")(x, torch.arange(10) % 2)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
def test_update_op_on_cuda_passes_opcheck_and_compiles():
    args, _ = state_args(5, 7, per_class_diag=True)
    args = tuple(a.cuda() for a in args)
    torch.library.opcheck(torch.ops.ncfast.class_stats_update_.default, args + ("raise",))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).cuda()
    stats = ncfast.ClassStats(3, 16, device="cuda")
    compiled = torch.compile(_training_step(model, stats), fullgraph=True, backend="aot_eager")
    batches = [(torch.randn(32, 10, device="cuda") + 1, torch.randint(0, 3, (32,), device="cuda")) for _ in range(3)]
    for x, y in batches:
        compiled(x, y).backward()
    with torch.no_grad():
        h = torch.cat([model[:2](x) for x, _ in batches]).double().cpu().numpy()
    expected = numpy_stats(h, torch.cat([y for _, y in batches]).cpu().numpy(), 3)
    np.testing.assert_array_equal(stats.counts.cpu().numpy(), expected.counts)
    assert rel_err(stats.within_scatter, expected.scatter) < 1e-5


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", sorted(ops.SCORE_OPS))
def test_score_ops_on_cuda(name):
    x, y = offset_data(600, 6, 4, seed=3, offset=2.0)
    stats = ncfast.ClassStats(4, 6, device="cuda").update(torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda())
    s = stats._state
    args = (s.counts, s.means, s.scatter) + ((s.class_scatter,) if name == "cdnv" else ())
    op = getattr(torch.ops.ncfast, name).default
    torch.library.opcheck(op, args)
    value = op(*args)
    assert value.is_cuda and float(value) == pytest.approx(getattr(ref, name)(x, y), rel=1e-6)


@pytest.mark.cuda
@needs_cuda
def test_training_step_with_update_captured_in_a_cuda_graph():
    """Forward, statistics update and backward of a whole step, captured once and replayed on
    new batches copied into the static inputs (PyTorch's whole-network capture recipe)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).cuda()
    stats = ncfast.ClassStats(3, 16, device="cuda")
    step = _training_step(model, stats)
    static_x = torch.randn(32, 10, device="cuda") + 1
    static_y = torch.randint(0, 3, (32,), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the capture: scratch, plan and autograd state
            step(static_x, static_y).backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static_x, static_y).backward()
    seen_x, seen_y = [static_x.clone()] * 3, [static_y.clone()] * 3
    for seed in range(4):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        static_x.copy_(torch.randn(32, 10, device="cuda", generator=gen) + 1)
        static_y.copy_(torch.randint(0, 3, (32,), device="cuda", generator=gen))
        graph.replay()
        seen_x.append(static_x.clone())
        seen_y.append(static_y.clone())
    with torch.no_grad():
        h = torch.cat([model[:2](x) for x in seen_x]).double().cpu().numpy()
    expected = numpy_stats(h, torch.cat(seen_y).cpu().numpy(), 3)
    np.testing.assert_array_equal(stats.counts.cpu().numpy(), expected.counts)
    assert rel_err(stats.means, expected.means) < 1e-6
    assert rel_err(stats.within_scatter, expected.scatter) < 1e-5
