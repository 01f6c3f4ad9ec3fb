"""PyTorch-side tools: forward-hook monitors of neural collapse in chosen layers, and VCReg."""

from .monitor import NCMonitor
from .vcreg import VCReg, vcreg_loss

__all__ = ["NCMonitor", "VCReg", "vcreg_loss"]
