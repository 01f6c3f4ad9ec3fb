"""VCReg's backward pass vs torch.autograd of the explicit loss (N=4096 rows, d=512, float32, CPU),
with 1 and with 2 threads (both torch's and ncfast's).

    python -m pytest benchmarks/test_bench_vcreg.py --benchmark-only

Both compute the gradient reaching the layer's input, grad_out + d(alpha l_var + beta l_cov)/dx,
for one batch, including whatever forward work each needs: none for VCReg (its forward is a
view); the loss (mean, centring, one Xc^T Xc matmul) for the autograd baseline, whose backward
then differentiates both matmul operands. Work: VCReg does one symmetric Gram (N d^2 flops) and
one N x d x d product (2 N d^2); the baseline 6 N d^2. The summary's GFLOP/s column counts
N d^2 (the Gram), as for the other benchmarks.
"""

from __future__ import annotations

import pytest
import torch

import ncfast
from conftest import PeakMemory, record, scale
from ncfast.nn import VCReg, vcreg_loss

ROWS, DIM = 4096, 512
ALPHA, BETA = 1.0, 0.04
ROUNDS = 30


@pytest.fixture(params=[1, 2], ids=lambda t: f"{t}thr")
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    ncfast.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
    ncfast.set_num_threads(before)


def case(threads):
    return f"VCReg backward N=4096 d=512 {threads}thr"


@pytest.fixture(scope="module")
def batch():
    rows = max(64, int(ROWS * scale()))
    gen = torch.Generator().manual_seed(0)
    mix = torch.eye(DIM) + 0.05 * torch.randn(DIM, DIM, generator=gen)
    x = (torch.randn(rows, DIM, generator=gen) @ mix) * 0.6 + 0.3  # correlated; std 0.83-0.99 < gamma
    # an incoming gradient as large as the regulariser's, so neither hides the other's errors
    reg = autograd_input_grad(x.double(), torch.zeros(rows, DIM, dtype=torch.float64))
    grad_out = torch.randn(rows, DIM, generator=gen)
    grad_out *= float(reg.norm() / grad_out.norm())
    return x, grad_out


def vcreg_input_grad(x, grad_out, module):
    leaf = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(module(leaf), leaf, grad_out)
    return grad


def autograd_input_grad(x, grad_out):
    leaf = x.detach().requires_grad_()
    out = leaf.view_as(leaf)  # the layer output, also fed to the explicit loss
    loss = vcreg_loss(out, ALPHA, BETA)
    (grad,) = torch.autograd.grad((out, loss), leaf, (grad_out, torch.ones(())))
    return grad


def work(x):
    rows = x.shape[0]
    return {"flops": rows * DIM * DIM, "bytes": 2 * rows * DIM * 4}


def test_vcreg_backward(benchmark, batch, threads):
    x, grad_out = batch
    module = VCReg(ALPHA, BETA)
    benchmark.group = case(threads)
    with PeakMemory() as mem:
        got = benchmark.pedantic(vcreg_input_grad, args=(x, grad_out, module), rounds=ROUNDS, iterations=1,
                                 warmup_rounds=3)
    record(case(threads), "ncfast", benchmark, work(x), mem.peak_mib)
    # float32 error of the regulariser's gradient against float64, no worse than the baseline's
    want = autograd_input_grad(x.double(), grad_out.double())
    reg = want - grad_out.double()
    assert float(reg.norm()) > 0.5 * float(grad_out.norm())
    err = float((got.double() - want).norm() / reg.norm())
    err_baseline = float((autograd_input_grad(x, grad_out).double() - want).norm() / reg.norm())
    assert err < max(2 * err_baseline, 1e-5), (err, err_baseline)


def test_autograd_of_explicit_loss(benchmark, batch, threads):
    x, grad_out = batch
    benchmark.group = case(threads)
    with PeakMemory() as mem:
        got = benchmark.pedantic(autograd_input_grad, args=(x, grad_out), rounds=ROUNDS, iterations=1,
                                 warmup_rounds=3)
    record(case(threads), "reference", benchmark, work(x), mem.peak_mib)
    assert torch.isfinite(got).all()
