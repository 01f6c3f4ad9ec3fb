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

from ..nn.features import register_adapter
from ._wire import from_bytes, to_bytes
from .hf import HFFeatures, is_transformers_model
from .timm import TimmFeatures, is_timm_model

_LAZY = {
    "ClassStatsMetric": ("torchmetrics", "ClassStatsMetric"),
    "NCMonitorCallback": ("lightning", "NCMonitorCallback"),
}
_SUBMODULES = ("dask", "lightning", "ray", "torchmetrics")

__all__ = ["ClassStatsMetric", "HFFeatures", "NCMonitorCallback", "TimmFeatures", "from_bytes", "to_bytes", *_SUBMODULES]

# rank_models and finetune.nc_profile take these models directly (neither check imports a framework)
register_adapter(is_timm_model, TimmFeatures)
register_adapter(is_transformers_model, HFFeatures)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
