"""Models seen as named feature layers, for the model-level helpers (``rank_models``,
``finetune.nc_profile``) that would otherwise hook modules.

Some model families expose their features through their own API rather than through module
outputs: Hugging Face transformers return hidden states that must be pooled under the
attention mask, timm models hand out pooled intermediates through ``forward_intermediates``.
A :class:`LayerFeatures` adapter runs such a model on one batch and returns each requested
layer's rows with their labels. Adapters are written next to the framework they serve
(``ncfast.integrations``) and registered here with :func:`register_adapter`, so that the helpers
accept the framework's models directly without importing the framework.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from .._inputs import to_tensor
from ..stats import ClassStats
from ._modules import evaluating

Rows = Tuple[Tensor, Tensor]  # (B', D) features and their (B',) labels


class LayerFeatures:
    """A model whose features come by named layer.

    Subclasses set ``model`` (the nn.Module), ``layers`` (every name they can produce, in
    forward order) and ``output_layer`` (what model ranking scores), and implement
    :meth:`rows`. Names may also be given as ints (positions in ``layers``, negative ones
    counting from the end).
    """

    model: nn.Module
    layers: List[str]
    output_layer: str

    def rows(self, inputs: Any, labels: Tensor, layers: Sequence[str]) -> Dict[str, Rows]:
        """{layer: (rows, labels)} for one batch (inputs as the model takes them). Under
        no_grad and eval mode already; token-level adapters may return more rows than inputs."""
        raise NotImplementedError

    def resolve(self, layers: Optional[Sequence[Any]]) -> List[str]:
        """Canonical names of `layers` (None: every layer); ValueError naming unknown ones."""
        if layers is None:
            return list(self.layers)
        if isinstance(layers, (str, int)):
            layers = [layers]
        out = []
        for name in layers:
            if isinstance(name, int) and not isinstance(name, bool):
                if not -len(self.layers) <= name < len(self.layers):
                    raise ValueError(f"layers: index {name} is out of range for {len(self.layers)} layers")
                name = self.layers[name]
            if name not in self.layers:
                raise ValueError(f"layers: {name!r} is not a layer of this {type(self.model).__name__} "
                                 f"(layers: {', '.join(self.layers)})")
            out.append(name)
        if len(set(out)) != len(out):
            raise ValueError(f"layers: {out} names a layer more than once")
        return out


_ADAPTERS: List[Tuple[Callable[[Any], bool], Callable[[Any], LayerFeatures]]] = []


def register_adapter(recognise: Callable[[Any], bool], build: Callable[[Any], LayerFeatures]) -> None:
    """Lets the model-level helpers accept the models `recognise` returns True for, through
    the adapter `build(model)` makes. Later registrations are tried first."""
    _ADAPTERS.insert(0, (recognise, build))


def as_layer_features(model: Any) -> Optional[LayerFeatures]:
    """`model` itself when it is a LayerFeatures, the registered adapter of a recognised model,
    else None (the helpers then hook its modules)."""
    if isinstance(model, LayerFeatures):
        return model
    for recognise, build in _ADAPTERS:
        if recognise(model):
            return build(model)
    return None


def stream_layers(features: LayerFeatures, batches: Iterable[Tuple[Any, Tensor]], layers: Sequence[str],
                  num_classes: Optional[int], on_rows: Optional[Callable[[str, Tensor, Tensor], None]] = None,
                  **options: Any) -> Dict[str, ClassStats]:
    """One pass of `features` over (inputs, labels) batches: a ClassStats per layer (options go
    to ClassStats), filled batch by batch; no activation outlives its batch. `on_rows(layer,
    rows, labels)` sees every batch's rows too (e.g. for a source head)."""
    stats: Dict[str, ClassStats] = {}
    with evaluating(features.model):
        for inputs, labels in batches:
            for name, (rows, y) in features.rows(inputs, to_tensor(labels, "labels"), layers).items():
                if name not in stats:
                    stats[name] = ClassStats(num_classes, rows.shape[1], device=rows.device, **options)
                try:
                    stats[name].update(rows, y.to(rows.device))
                except (ValueError, TypeError) as err:
                    raise type(err)(f"layer {name!r}: {err}") from err
                if on_rows is not None:
                    on_rows(name, rows, y)
    if not stats:
        raise ValueError("data: no batch was read")
    return stats
