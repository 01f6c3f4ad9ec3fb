"""VCReg (DESIGN.md section 6): the explicit loss against an independent NumPy float64 version,
the backward-pass gradient against torch.autograd of that loss, the identity forward, and the
gradient reaching a network's parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ncfast.backend.core import _C
from ncfast._dtypes import FLOAT_CODES
from ncfast.nn import VCReg, vcreg_loss

OPTIONS = dict(alpha=0.7, beta=0.3, gamma=1.2, eps=1e-4)


def numpy_vcreg(rows: np.ndarray, alpha, beta, gamma, eps, cov_loss="square", delta=1.0):
    """alpha l_var + beta l_cov straight from the definitions, loops over matrix entries."""
    rows = np.asarray(rows, dtype=np.float64)
    n, d = rows.shape
    xc = rows - rows.mean(axis=0)
    cov = xc.T @ xc / (n - 1)
    l_var = sum(max(0.0, gamma - np.sqrt(cov[j, j] + eps)) for j in range(d)) / d
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i == j:
                continue
            c = cov[i, j]
            if cov_loss == "square":
                total += c * c
            else:
                total += 0.5 * c * c / delta if abs(c) < delta else abs(c) - 0.5 * delta
    return alpha * l_var + beta * total / d


def conv_rows(x: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> one row per (b, h, w) position, built by explicit loops."""
    b, c, h, w = x.shape
    return np.array([x[i, :, p, q] for i in range(b) for p in range(h) for q in range(w)])


def spread_batch(shape, channel_dim=1, seed=0, dtype=torch.float64):
    """Channels with standard deviations from 0.3 to 2 (some below gamma=1.2, some above) and
    correlated pairs, so both loss terms and both branches of the hinge are exercised."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    x = x.movedim(channel_dim, -1)
    d = x.shape[-1]
    mix = torch.eye(d, dtype=torch.float64) + 0.4 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    x = (x @ mix) * torch.linspace(0.3, 2.0, d, dtype=torch.float64) + 0.5
    return x.movedim(-1, channel_dim).contiguous().to(dtype)


def vcreg_grad(x, grad_out, **kwargs):
    x = x.detach().requires_grad_()
    module = VCReg(**kwargs)
    (grad,) = torch.autograd.grad(module(x), x, grad_out)
    return grad, module


def loss_grad(x, **kwargs):
    x = x.detach().requires_grad_()
    loss = vcreg_loss(x, **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    return grad, loss.detach()


# ------------------------------------------------------------------------------ explicit loss


@pytest.mark.parametrize("cov_loss", ["square", "smooth_l1"])
def test_explicit_loss_matches_numpy_definition(cov_loss):
    x = spread_batch((40, 6))
    got = vcreg_loss(x, **OPTIONS, cov_loss=cov_loss, smooth_l1_delta=0.2)
    want = numpy_vcreg(x.numpy(), **OPTIONS, cov_loss=cov_loss, delta=0.2)
    assert want > 0.05
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_explicit_loss_of_conv_map_uses_every_spatial_position():
    x = spread_batch((3, 5, 4, 2))
    got = vcreg_loss(x, **OPTIONS)
    assert float(got) == pytest.approx(numpy_vcreg(conv_rows(x.numpy()), **OPTIONS), rel=1e-12)
    # not the same as averaging spatially first
    pooled = numpy_vcreg(x.numpy().mean(axis=(2, 3)), **OPTIONS)
    assert abs(float(got) - pooled) > 1e-3


def test_explicit_loss_channel_last_tokens():
    x = spread_batch((3, 7, 5), channel_dim=-1)
    got = vcreg_loss(x, **OPTIONS, channel_dim=-1)
    assert float(got) == pytest.approx(numpy_vcreg(x.numpy().reshape(-1, 5), **OPTIONS), rel=1e-12)


@pytest.mark.parametrize("cov_loss", ["square", "smooth_l1"])
def test_explicit_loss_gradient_passes_finite_differences(cov_loss):
    x = spread_batch((12, 4)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: vcreg_loss(t, **OPTIONS, cov_loss=cov_loss, smooth_l1_delta=0.3), (x,), eps=1e-6, atol=1e-8
    )


# ------------------------------------------------------------------------------ backward pass

CASES = [
    pytest.param((64, 16), 1, id="rows"),
    pytest.param((3, 5), 1, id="three-rows"),
    pytest.param((4, 6, 5, 3), 1, id="conv-map"),
    pytest.param((2, 5, 7), 1, id="conv1d"),
    pytest.param((3, 7, 6), -1, id="tokens"),
]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("cov_loss", ["square", "smooth_l1"])
@pytest.mark.parametrize("shape, channel_dim", CASES)
def test_backward_adds_gradient_of_explicit_loss(shape, channel_dim, cov_loss, backend):
    x = spread_batch(shape, channel_dim)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kwargs = dict(OPTIONS, cov_loss=cov_loss, smooth_l1_delta=0.1, channel_dim=channel_dim)
    got, module = vcreg_grad(x, grad_out, backend=backend, **kwargs)
    want, loss = loss_grad(x, **kwargs)
    assert want.norm() > 1e-3 * grad_out.norm()  # the regulariser is not negligible here
    torch.testing.assert_close(got - grad_out, want, rtol=1e-10, atol=1e-12 * float(want.abs().max()))
    assert float(module.last_loss) == pytest.approx(float(loss), rel=1e-12)
    assert float(module.last_loss) == pytest.approx(
        OPTIONS["alpha"] * float(module.last_var_loss) + OPTIONS["beta"] * float(module.last_cov_loss), rel=1e-12
    )


@pytest.mark.parametrize("term", ["var", "cov"])
def test_each_term_matches_design_formula(term):
    """The closed forms of DESIGN.md section 6, written out separately."""
    x = spread_batch((50, 8))
    alpha, beta = (1.0, 0.0) if term == "var" else (0.0, 1.0)
    got, _ = vcreg_grad(x, torch.zeros_like(x), alpha=alpha, beta=beta, gamma=1.2)
    n, d = x.shape
    xc = x - x.mean(dim=0)
    cov = xc.T @ xc / (n - 1)
    if term == "cov":
        off = cov - torch.diag(torch.diagonal(cov))
        want = 4.0 / (d * (n - 1)) * xc @ off
    else:
        std = torch.sqrt(torch.diagonal(cov) + 1e-4)
        assert 0 < int((std < 1.2).sum()) < d  # both sides of the hinge present
        want = -xc / std * (std < 1.2).to(x.dtype) / (d * (n - 1))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


def test_float32_native_matches_float64():
    x = spread_batch((256, 32))
    want, _ = vcreg_grad(x, torch.zeros_like(x), **OPTIONS)
    got, _ = vcreg_grad(x.float(), torch.zeros_like(x.float()), **OPTIONS)
    assert got.dtype == torch.float32
    assert float((got.double() - want).norm() / want.norm()) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_regularised_in_float32(dtype):
    x = spread_batch((128, 8))
    want, _ = vcreg_grad(x.to(dtype).double(), torch.zeros_like(x), alpha=1.0, beta=1.0)
    got, _ = vcreg_grad(x.to(dtype), torch.zeros_like(x).to(dtype), alpha=1.0, beta=1.0)
    assert got.dtype == dtype
    assert float((got.double() - want).norm() / want.norm()) < 1e-2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape, channel_dim", [((256, 32), 1), ((8, 16, 6, 6), 1)])
def test_cuda_tensors_use_the_torch_path_and_match_cpu(shape, channel_dim):
    x = spread_batch(shape, channel_dim)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want, cpu = vcreg_grad(x, grad_out, **OPTIONS, channel_dim=channel_dim)
    got, gpu = vcreg_grad(x.cuda(), grad_out.cuda(), **OPTIONS, channel_dim=channel_dim)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-13)
    assert gpu.last_loss.device.type == "cuda"
    assert float(gpu.last_loss) == pytest.approx(float(cpu.last_loss), rel=1e-10)
    got32, _ = vcreg_grad(x.float().cuda(), grad_out.float().cuda(), **OPTIONS, channel_dim=channel_dim)
    assert float((got32.double().cpu() - want).norm() / (want - grad_out).norm()) < 1e-4


# ------------------------------------------------------------------------------ forward and module


def test_forward_is_identity_and_free():
    x = spread_batch((10, 4)).requires_grad_()
    y = VCReg(1.0, 1.0)(x)
    assert torch.equal(y, x)
    assert y.data_ptr() == x.data_ptr()
    assert y.grad_fn is not None


def test_inactive_in_eval_mode_and_without_grad():
    x = spread_batch((10, 4)).requires_grad_()
    module = VCReg(1.0, 1.0).eval()
    assert module(x) is x
    with torch.no_grad():
        assert VCReg(1.0, 1.0)(x) is x


def test_zero_weights_leave_gradient_unchanged():
    x = spread_batch((20, 5))
    grad_out = torch.randn_like(x)
    got, module = vcreg_grad(x, grad_out, alpha=0.0, beta=0.0)
    torch.testing.assert_close(got, grad_out, rtol=0, atol=0)
    assert float(module.last_var_loss) > 0 and float(module.last_cov_loss) > 0  # still logged


def make_net(with_vcreg: bool, **kwargs):
    torch.manual_seed(3)
    layers = [nn.Conv2d(2, 4, 3, padding=1), nn.Tanh()]
    if with_vcreg:
        layers.append(VCReg(**kwargs))
    layers += [nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.Tanh()]
    if with_vcreg:
        layers.append(VCReg(**kwargs))
    layers.append(nn.Linear(6, 3))
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("cov_loss", ["square", "smooth_l1"])
def test_network_parameter_gradients_match_explicit_regularised_loss(cov_loss):
    kwargs = dict(alpha=2.0, beta=5.0, gamma=1.0, cov_loss=cov_loss, smooth_l1_delta=0.05)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(16, 2, 5, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (16,), generator=gen)

    implicit = make_net(True, **kwargs)
    nn.functional.cross_entropy(implicit(images), labels).backward()

    explicit = make_net(False)
    conv_out = explicit[1](explicit[0](images))
    hidden = explicit[4](explicit[3](explicit[2](conv_out)))
    loss = nn.functional.cross_entropy(explicit[5](hidden), labels)
    loss = loss + vcreg_loss(conv_out, **kwargs) + vcreg_loss(hidden, **kwargs)
    loss.backward()

    plain = make_net(False)
    nn.functional.cross_entropy(plain(images), labels).backward()

    params = list(zip(implicit.parameters(), explicit.parameters(), plain.parameters()))
    assert len(params) == 6
    for p_imp, p_exp, _ in params:
        torch.testing.assert_close(p_imp.grad, p_exp.grad, rtol=1e-9, atol=1e-12)
    for p_imp, _, p_plain in params[:4]:  # every layer before the last VCReg feels the regulariser
        assert not torch.allclose(p_imp.grad, p_plain.grad, rtol=1e-3)


def test_inplace_op_on_output_is_an_error_not_a_silent_corruption():
    x = spread_batch((10, 4)).requires_grad_()
    with pytest.raises(RuntimeError, match="view"):
        torch.relu_(VCReg(1.0, 1.0)(x * 1.0))


def test_double_backward_is_refused_not_silently_wrong():
    x = spread_batch((8, 4)).requires_grad_()
    (grad,) = torch.autograd.grad((VCReg(1.0, 1.0)(x) ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=-1.0, beta=1.0), "alpha"),
        (dict(alpha=1.0, beta="x"), "beta"),
        (dict(alpha=1.0, beta=1.0, gamma=0.0), "gamma"),
        (dict(alpha=1.0, beta=1.0, cov_loss="l1"), "cov_loss"),
        (dict(alpha=1.0, beta=1.0, backend="gpu"), "backend"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VCReg(**kwargs)


def test_bad_inputs_are_named():
    module = VCReg(1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        module(torch.randn(1, 8, requires_grad=True))
    with pytest.raises(ValueError, match="input: expected at least 2 dimensions"):
        module(torch.randn(8, requires_grad=True))
    with pytest.raises(ValueError, match="channel_dim"):
        VCReg(1.0, 1.0, channel_dim=3)(torch.randn(4, 8, requires_grad=True))
    with pytest.raises(TypeError, match="input"):
        vcreg_loss(torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="native"):
        VCReg(1.0, 1.0, backend="native")(torch.randn(4, 8, dtype=torch.bfloat16, requires_grad=True))


# ------------------------------------------------------------------------------ the Gram binding


@pytest.mark.parametrize("fill_lower", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [5, 70, 300])  # one panel; several threaded panels; tiled mirror
def test_sym_gram_binding(dtype, dim, fill_lower):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(33, dim + 3, generator=gen, dtype=torch.float64)[:, :dim].to(dtype)  # ld > dim
    c = torch.full((dim, dim), 7.0, dtype=dtype)
    _C.sym_gram(z.data_ptr(), 33, dim, z.stride(0), FLOAT_CODES[dtype], 0.5, 2.0, c.data_ptr(), fill_lower)
    zz = z.double().numpy()
    want = 0.5 * zz.T @ zz + 14.0
    upper, lower = np.triu_indices(dim), np.tril_indices(dim, -1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    got = c.double().numpy()
    np.testing.assert_allclose(got[upper], want[upper], rtol=tol)
    if fill_lower:
        np.testing.assert_array_equal(got, got.T)
    else:
        assert np.all(got[lower] == 7.0)  # untouched


def test_sym_gram_binding_rejects_other_dtypes():
    c = torch.zeros(2, 2, dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype"):
        _C.sym_gram(c.data_ptr(), 2, 2, 2, FLOAT_CODES[torch.float16], 1.0, 0.0, c.data_ptr(), False)
