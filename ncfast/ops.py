"""ncfast's PyTorch operators (``torch.ops.ncfast.*``), in one namespace.

``class_stats_update_`` (the chunk update, :mod:`ncfast.backend.ops`) and the scores ``nc1``,
``nc1_trace``, ``cdnv``, ``logme``, ``h_score`` (:mod:`ncfast.metrics.ops`). Each has a fake
implementation, so ``torch.compile(fullgraph=True)`` and ``torch.library.opcheck`` accept it.
"""

from __future__ import annotations

from .backend.ops import class_stats_update_
from .metrics.ops import SCORE_OPS

nc1 = SCORE_OPS["nc1"]
nc1_trace = SCORE_OPS["nc1_trace"]
cdnv = SCORE_OPS["cdnv"]
logme = SCORE_OPS["logme"]
h_score = SCORE_OPS["h_score"]

__all__ = ["class_stats_update_", "nc1", "nc1_trace", "cdnv", "logme", "h_score", "SCORE_OPS"]
