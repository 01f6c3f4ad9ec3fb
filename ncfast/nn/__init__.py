"""PyTorch modules built on the ncfast kernels."""

from .vcreg import VCReg, vcreg_loss

__all__ = ["VCReg", "vcreg_loss"]
