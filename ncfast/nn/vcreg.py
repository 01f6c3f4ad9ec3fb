"""VCReg: variance-covariance regularisation of a layer's output, applied in the backward pass
(DESIGN.md section 6; Zhu et al., "Variance-Covariance Regularization Improves Representation
Learning", arXiv 2306.13292).

For a batch of rows X (N x d; a conv map (B, C, H, W) gives N = B*H*W rows of d = C channels),
Xc the centred batch and C = Xc^T Xc / (N - 1):

    l_var = (1/d) sum_j relu(gamma - sqrt(C_jj + eps))
    l_cov = (1/d) sum_{i != j} rho(C_ij),   rho(c) = c^2 ("square") or smooth-L1 ("smooth_l1")

:class:`VCReg` is the identity in forward; its backward returns grad_out plus the gradient of
alpha * l_var + beta * l_cov. With Gamma the d x d matrix of partial derivatives of that loss
in the entries of C (Gamma_ij = beta rho'(C_ij) / d off the diagonal,
Gamma_jj = -alpha [sqrt(C_jj + eps) < gamma] / (2 d sqrt(C_jj + eps))), the chain rule through
C = Xc^T Xc / (N - 1) gives

    dL/dX = 2/(N - 1) Xc Gamma

(the columns of Xc Gamma already sum to zero, so the centring adds nothing). For "square" that
is 4/(d(N-1)) Xc C_off for l_cov and -1/(d(N-1)) [.] Xc_ij / sqrt(C_jj + eps) for l_var, the
two formulas of DESIGN.md section 6. Cost in backward: one symmetric Gram (N d^2 flops, the
ncfast syrk kernel on the CPU) and one N x d x d product; nothing in forward.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..backend.core import _C
from .._dtypes import FLOAT_CODES

COV_LOSSES = ("square", "smooth_l1")
BACKENDS = ("auto", "native", "reference")
_NATIVE_DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------------------------- checks


def _check_options(alpha, beta, gamma, eps, cov_loss, smooth_l1_delta) -> None:
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    for name, value in (("gamma", gamma), ("eps", eps), ("smooth_l1_delta", smooth_l1_delta)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if cov_loss not in COV_LOSSES:
        raise ValueError(f"cov_loss: expected one of {COV_LOSSES}, got {cov_loss!r}")


def _check_input(x: Tensor, channel_dim: int) -> int:
    """Validates a batch and returns the normalised channel dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input: expected a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input: expected a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"input: expected at least 2 dimensions (N, C, ...), got shape {tuple(x.shape)}")
    if not -x.ndim <= channel_dim < x.ndim:
        raise ValueError(f"channel_dim: {channel_dim} is out of range for a {x.ndim}-D input")
    channel_dim %= x.ndim
    rows = x.numel() // max(x.shape[channel_dim], 1)
    if rows < 2:
        raise ValueError(
            f"input: shape {tuple(x.shape)} gives {rows} row(s) per channel; the batch covariance "
            "needs at least 2 (every position other than channel_dim is a sample)"
        )
    return channel_dim


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------- explicit loss


def vcreg_loss(
    x: Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    *,
    cov_loss: str = "square",
    smooth_l1_delta: float = 1.0,
    channel_dim: int = 1,
) -> Tensor:
    """alpha * l_var + beta * l_cov of a batch, differentiable (DESIGN.md section 6).

    The same loss whose gradient :class:`VCReg` adds in backward; use it for logging, or to
    regularise through autograd instead (slower: autograd differentiates both operands of the
    Gram and keeps the graph alive).

    Parameters
    ----------
    x : Tensor, shape (N, C, *)
        Floating point. Every position other than ``channel_dim`` is a sample: a (B, C, H, W)
        conv map gives B*H*W rows of C channels. float16/bfloat16 are computed in float32.
    alpha, beta : float
        Weights of the variance and covariance terms.
    gamma : float
        Target standard deviation of every channel.
    eps : float
        Added to each variance before the square root.
    cov_loss : {"square", "smooth_l1"}
        rho(c) = c^2, or smooth-L1: 0.5 c^2 / delta for |c| < delta, |c| - 0.5 delta otherwise
        (``torch.nn.SmoothL1Loss(beta=delta)``).
    smooth_l1_delta : float
        delta of the smooth-L1 penalty.
    channel_dim : int
        The feature dimension (1 for (N, C, ...) layouts, -1 for (B, L, C) token sequences).

    Returns
    -------
    Tensor, shape ()
        float32 (float64 for float64 input).
    """
    _check_options(alpha, beta, gamma, eps, cov_loss, smooth_l1_delta)
    channel_dim = _check_input(x, channel_dim)
    d = x.shape[channel_dim]
    rows = x.movedim(channel_dim, -1).reshape(-1, d).to(_compute_dtype(x.dtype))
    n = rows.shape[0]
    xc = rows - rows.mean(dim=0)
    cov = (xc.T @ xc) / (n - 1)
    std = torch.sqrt(torch.diagonal(cov) + eps)
    l_var = torch.relu(gamma - std).sum() / d
    off = cov - torch.diag_embed(torch.diagonal(cov))
    if cov_loss == "square":
        l_cov = off.square().sum() / d
    else:
        l_cov = nn.functional.smooth_l1_loss(off, torch.zeros_like(off), reduction="sum", beta=smooth_l1_delta) / d
    return alpha * l_var + beta * l_cov


# ---------------------------------------------------------------------------------- backward


def _covariance(xc: Tensor, native: bool) -> Tensor:
    """C = Xc^T Xc / (N - 1) of a contiguous (N, d) float32/float64 batch, full and symmetric."""
    n, d = xc.shape
    if not native:
        return (xc.T @ xc) / (n - 1)
    cov = torch.empty(d, d, dtype=xc.dtype)
    # one triangle by the threaded syrk, then mirrored into the other
    _C.sym_gram(xc.data_ptr(), n, d, xc.stride(0), FLOAT_CODES[xc.dtype], 1.0 / (n - 1), 0.0, cov.data_ptr(), True)
    return cov


def _loss_derivative(cov: Tensor, cfg: dict) -> Tuple[Tensor, Tensor, Tensor]:
    """Gamma = d(alpha l_var + beta l_cov)/dC (d x d) and the two loss terms (0-d tensors)."""
    d = cov.shape[0]
    std = torch.sqrt(torch.diagonal(cov) + cfg["eps"])
    l_var = torch.relu(cfg["gamma"] - std).sum() / d
    off = cov.clone()
    off.diagonal().zero_()
    if cfg["cov_loss"] == "square":
        flat = off.view(-1)
        l_cov = torch.dot(flat, flat) / d
        gamma_cov = off.mul_(2.0 * cfg["beta"] / d)
    else:
        delta = cfg["smooth_l1_delta"]
        small = off.abs() < delta
        l_cov = torch.where(small, 0.5 * off.square() / delta, off.abs() - 0.5 * delta).sum() / d
        gamma_cov = torch.where(small, off / delta, off.sign()) * (cfg["beta"] / d)
    active = std < cfg["gamma"]
    gamma_var = torch.where(active, -cfg["alpha"] / (2.0 * d * std), torch.zeros_like(std))
    gamma_cov.diagonal().copy_(gamma_var)
    return gamma_cov, l_var, l_cov


def _vcreg_backward(x: Tensor, grad_out: Tensor, cfg: dict, native: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """grad_out + d(alpha l_var + beta l_cov)/dx, and the two loss terms (detached)."""
    channel_dim = cfg["channel_dim"]
    d = x.shape[channel_dim]
    dtype = _compute_dtype(x.dtype)
    moved = x.detach().movedim(channel_dim, -1)
    sample_dims = tuple(range(moved.ndim - 1))
    mean = moved.mean(dim=sample_dims, dtype=dtype)
    # Xc is written straight into a contiguous (N, d) buffer: one pass, whatever x's layout.
    xc = torch.empty(moved.shape, dtype=dtype, device=x.device)
    torch.sub(moved, mean, out=xc)
    xc = xc.view(-1, d)
    n = xc.shape[0]
    cov = _covariance(xc, native)
    phi, l_var, l_cov = _loss_derivative(cov, cfg)
    scale = 2.0 / (n - 1)
    if x.ndim == 2 and channel_dim == 1 and grad_out.dtype == dtype:
        grad = torch.addmm(grad_out, xc, phi, alpha=scale)  # the add fused into the product
    else:
        reg = (xc @ phi).view(moved.shape).movedim(-1, channel_dim)
        grad = torch.add(grad_out.to(dtype), reg, alpha=scale).to(grad_out.dtype)
    return grad, l_var, l_cov


class _VCRegFunction(torch.autograd.Function):
    """Identity forward; backward adds the VCReg gradient (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, cfg: dict, native: bool, owner: Optional["VCReg"]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.cfg, ctx.native, ctx.owner = cfg, native, owner
        return x.view_as(x)

    @staticmethod
    @once_differentiable  # the added gradient is not itself differentiated (no double backward)
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        grad, l_var, l_cov = _vcreg_backward(x, grad_out, ctx.cfg, ctx.native)
        if ctx.owner is not None:
            ctx.owner._record(l_var, l_cov)
        return grad, None, None, None


# ---------------------------------------------------------------------------------- module


class VCReg(nn.Module):
    """Variance-covariance regularisation of the tensor passing through (Zhu et al. 2023).

    Forward returns its input unchanged (a view: free). Backward adds the gradient of
    ``alpha * l_var + beta * l_cov`` of that tensor's batch (module docstring,
    DESIGN.md section 6) to the incoming gradient, so no extra loss term or graph is needed:
    put it after the blocks to regularise, train with the task loss alone.

    Parameters
    ----------
    alpha, beta : float
        Weights of the variance and covariance terms (>= 0).
    gamma : float
        Target standard deviation of every channel (default 1).
    eps : float
        Added to each variance before the square root (default 1e-4).
    cov_loss : {"square", "smooth_l1"}
        Penalty on the off-diagonal covariances (see :func:`vcreg_loss`).
    smooth_l1_delta : float
        Threshold of the smooth-L1 penalty.
    channel_dim : int
        Feature dimension: 1 for (N, C) and (N, C, H, W) (every spatial position is a sample),
        -1 for (B, L, C) token sequences.
    backend : {"auto", "native", "reference"}
        "native": the covariance with ncfast's threaded symmetric Gram (CPU float32/float64);
        "reference": plain torch matmuls (any device, any dtype); "auto": native where it applies.

    Attributes
    ----------
    last_loss, last_var_loss, last_cov_loss : Tensor or None
        ``alpha * l_var + beta * l_cov``, l_var and l_cov of the last batch, detached 0-d
        tensors set during backward (nothing is computed in forward).

    Notes
    -----
    Only active in training mode and when the input requires grad. The output is a view of
    the input: an in-place operation on it (``nn.ReLU(inplace=True)`` right after) raises
    autograd's view error instead of silently corrupting the saved batch; use an
    out-of-place op there. float16/bfloat16 inputs are regularised in float32.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), VCReg(alpha=1.0, beta=0.04), nn.Linear(128, 10))
    >>> loss = nn.functional.cross_entropy(net(torch.randn(32, 64)), torch.randint(0, 10, (32,)))
    >>> loss.backward()
    >>> float(net[2].last_loss) > 0
    True
    """

    def __init__(
        self,
        alpha: float,
        beta: float,
        gamma: float = 1.0,
        eps: float = 1e-4,
        *,
        cov_loss: str = "square",
        smooth_l1_delta: float = 1.0,
        channel_dim: int = 1,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_options(alpha, beta, gamma, eps, cov_loss, smooth_l1_delta)
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        if not isinstance(channel_dim, int):
            raise TypeError(f"channel_dim: expected an int, got {type(channel_dim).__name__}")
        self.alpha, self.beta, self.gamma, self.eps = float(alpha), float(beta), float(gamma), float(eps)
        self.cov_loss, self.smooth_l1_delta = cov_loss, float(smooth_l1_delta)
        self.channel_dim, self.backend = channel_dim, backend
        self.last_loss: Optional[Tensor] = None
        self.last_var_loss: Optional[Tensor] = None
        self.last_cov_loss: Optional[Tensor] = None

    def _uses_native(self, x: Tensor) -> bool:
        native_ok = x.device.type == "cpu" and x.dtype in _NATIVE_DTYPES
        if self.backend == "native" and not native_ok:
            raise ValueError(
                f"backend: 'native' needs a CPU float32/float64 input, got {x.dtype} on {x.device} "
                "(use backend='auto')"
            )
        return native_ok and self.backend != "reference"

    def _record(self, l_var: Tensor, l_cov: Tensor) -> None:
        self.last_var_loss, self.last_cov_loss = l_var.detach(), l_cov.detach()
        self.last_loss = self.alpha * self.last_var_loss + self.beta * self.last_cov_loss

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and torch.is_grad_enabled() and x.requires_grad):
            return x
        channel_dim = _check_input(x, self.channel_dim)
        cfg = {
            "alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "eps": self.eps,
            "cov_loss": self.cov_loss, "smooth_l1_delta": self.smooth_l1_delta, "channel_dim": channel_dim,
        }
        return _VCRegFunction.apply(x, cfg, self._uses_native(x), self)

    def extra_repr(self) -> str:
        text = f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, eps={self.eps}"
        if self.cov_loss != "square":
            text += f", cov_loss={self.cov_loss!r}, smooth_l1_delta={self.smooth_l1_delta}"
        if self.channel_dim != 1:
            text += f", channel_dim={self.channel_dim}"
        return text
