"""Adapters to the frameworks around ncfast. Importing this package imports none of them: each
name below loads its framework when first used (install the matching extra).

- ``ClassStatsMetric``: a torchmetrics ``Metric`` (``ncfast[torchmetrics]``)
- ``NCMonitorCallback``: a Lightning callback around NCMonitor (``ncfast[lightning]``)
- ``hf``: Hugging Face transformers feature extraction (``ncfast[hf]``)
- ``timm``: timm feature extraction (``ncfast[timm]``)
- ``dask``, ``ray``: one pass over a cluster's partitions, merged exactly (``ncfast[dask]``, ``ncfast[ray]``)
- ``to_bytes`` / ``from_bytes``: compact serialisation of ClassStats for the transfer between workers
"""

from __future__ import annotations

import importlib
from typing import Any

from ._wire import from_bytes, to_bytes

_LAZY = {
    "ClassStatsMetric": ("torchmetrics", "ClassStatsMetric"),
    "NCMonitorCallback": ("lightning", "NCMonitorCallback"),
}
_SUBMODULES = ("dask", "hf", "lightning", "ray", "timm", "torchmetrics")

__all__ = ["ClassStatsMetric", "NCMonitorCallback", "from_bytes", "to_bytes", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
