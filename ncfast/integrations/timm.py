"""timm models: pooled intermediates and pre-logits streamed into ClassStats
(pip install 'ncfast[timm]').

Written against timm's documented feature API (timm >= 1.0): ``feature_info`` names the
feature stages (e.g. ``act1, layer1 ... layer4`` for a ResNet, ``blocks.0 ...`` for a ViT);
``forward_intermediates(x, indices=..., intermediates_only=False)`` returns the final
features and the chosen stages' maps as (B, C, H, W) (ViT tokens reshaped, prefix tokens
dropped); ``forward_head(features, pre_logits=True)`` applies the model's own global pooling
(and ViT's token pooling) without the classifier. Layers are the ``feature_info`` module names
plus ``"pre_logits"`` (what model ranking scores); stage maps are global-average-pooled. One
forward per batch serves every layer. timm itself is never imported here: any model exposing
that API works.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

from torch import Tensor, nn

from ..nn._modules import module_device
from ..nn._pool import pool_rows
from ..nn.features import LayerFeatures, Rows, stream_layers
from ..stats import ClassStats
from ..workflows._data import labelled_batches

PRE_LOGITS = "pre_logits"


class TimmFeatures(LayerFeatures):
    """A timm model seen as its feature stages and its pooled pre-logits features."""

    def __init__(self, model: nn.Module) -> None:
        if not is_timm_model(model):
            raise TypeError(f"model: expected a timm model (feature_info, forward_intermediates, forward_head), "
                            f"got {type(model).__name__}")
        self.model = model
        self.stages = [info["module"] for info in model.feature_info]
        self.layers = self.stages + [PRE_LOGITS]
        self.output_layer = PRE_LOGITS

    def rows(self, inputs: Any, labels: Tensor, layers: Sequence[str]) -> Dict[str, Rows]:
        device = module_device(self.model)
        x = inputs.to(device) if isinstance(inputs, Tensor) and device is not None else inputs
        indices = [self.stages.index(name) for name in layers if name != PRE_LOGITS]
        out: Dict[str, Rows] = {}
        if PRE_LOGITS in layers:
            final, maps = self.model.forward_intermediates(x, indices=indices, intermediates_only=False) if indices \
                else (self.model.forward_features(x), [])
            rows = self.model.forward_head(final, pre_logits=True)
            out[PRE_LOGITS] = (pool_rows(rows, "avg", f"timm {PRE_LOGITS}"), labels.to(rows.device))
        else:
            maps = self.model.forward_intermediates(x, indices=indices, intermediates_only=True)
        for index, feature_map in zip(indices, maps):
            name = self.stages[index]
            out[name] = (pool_rows(feature_map, "avg", f"timm stage {name!r}"), labels.to(feature_map.device))
        return {name: out[name] for name in layers}


def class_stats(model: nn.Module, data: Iterable[Any], layers: Optional[Sequence[Any]] = None, *,
                num_classes: Optional[int] = None, **options: Any) -> Dict[str, ClassStats]:
    """{layer: ClassStats} of a timm model's stages and pre-logits over `data` ((images,
    labels) batches), in one pass.

    `layers`: ``feature_info`` module names, ``"pre_logits"`` or positions in that list
    (default all). `options` go to each ClassStats. The model runs in eval mode without
    gradients on its own device; its training flag is restored.
    """
    adapter = TimmFeatures(model)
    names = adapter.resolve(layers)
    return stream_layers(adapter, labelled_batches(data, None, 1, names=("data", "data")), names, num_classes, **options)


def is_timm_model(model: Any) -> bool:
    """True for a module exposing timm's feature API (feature_info, forward_intermediates,
    forward_head)."""
    return isinstance(model, nn.Module) and all(
        callable(getattr(model, name, None)) for name in ("forward_intermediates", "forward_head")
    ) and isinstance(getattr(model, "feature_info", None), (list, tuple))
