"""Hugging Face transformers: hidden states streamed into ClassStats (pip install 'ncfast[hf]').

The model runs with ``output_hidden_states=True``; hidden state i (0 = the embeddings, i = the
output of block i) is layer ``"hidden_states.i"``. Each (B, T, H) state becomes rows by a
pooling that respects the attention mask: "mean" (the mean over real tokens), "cls" (the first
token), "last" (the last real token, for decoder models), or "tokens" (every real token is a
row, labelled by per-token labels, -100 ignored as in HF token classification). Nothing is kept
beyond the batch. ``rank_models`` and ``finetune.nc_profile`` take HF models directly through
this adapter (registered by ``ncfast.integrations``); transformers is imported only here.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..nn._modules import module_device
from ..nn.features import LayerFeatures, Rows, stream_layers
from ..stats import ClassStats
from ..workflows._data import labelled_batches

POOLINGS = ("mean", "cls", "last", "tokens")
IGNORE_INDEX = -100  # HF's label for tokens that carry no label


class HFFeatures(LayerFeatures):
    """A transformers model seen as its hidden states ``"hidden_states.0"`` ... ``".L"``.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Any model that returns ``hidden_states`` (encoder-decoders: the encoder's).
    pooling : {"mean", "cls", "last", "tokens"}
        How a (B, T, H) hidden state becomes rows (see the module docstring).
    """

    def __init__(self, model: nn.Module, pooling: str = "mean") -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
        config = getattr(model, "config", None)
        depth = getattr(config, "num_hidden_layers", None)
        if depth is None:
            raise TypeError(f"model: expected a transformers model with config.num_hidden_layers, got {type(model).__name__}")
        self.model, self.pooling = model, pooling
        self.layers = [f"hidden_states.{i}" for i in range(int(depth) + 1)]
        self.output_layer = self.layers[-1]

    def rows(self, inputs: Any, labels: Tensor, layers: Sequence[str]) -> Dict[str, Rows]:
        device = module_device(self.model)
        if not isinstance(inputs, dict):
            inputs = {"input_ids": inputs}
        inputs = {k: v.to(device) if isinstance(v, Tensor) and device is not None else v for k, v in inputs.items()}
        out = self.model(**inputs, output_hidden_states=True, return_dict=True)
        states = getattr(out, "encoder_hidden_states", None) or out.hidden_states
        first = states[0]
        mask = inputs.get("attention_mask")
        mask = torch.ones(first.shape[:2], dtype=torch.bool, device=first.device) if mask is None else mask.to(first.device).bool()
        labels = labels.to(first.device)
        return {name: pool_hidden(states[self.layers.index(name)], mask, labels, self.pooling) for name in layers}


def pool_hidden(hidden: Tensor, mask: Tensor, labels: Tensor, pooling: str) -> Rows:
    """(B, T, H) hidden state and (B, T) attention mask -> (rows, labels) by `pooling`.

    "mean": sum of the real tokens' states / their number (in float32 for 16-bit states);
    "cls": token 0; "last": the last real token; "tokens": every real token whose (B, T) label
    is not -100, with that label."""
    if pooling == "tokens":
        if labels.shape != mask.shape:
            raise ValueError(f"labels: token pooling needs (batch, tokens) = {tuple(mask.shape)} labels, "
                             f"got {tuple(labels.shape)}")
        keep = mask & (labels != IGNORE_INDEX)
        return hidden[keep], labels[keep]
    if labels.ndim != 1 or labels.shape[0] != hidden.shape[0]:
        raise ValueError(f"labels: {pooling} pooling needs one label per sequence ({hidden.shape[0]},), "
                         f"got {tuple(labels.shape)}")
    if pooling == "cls":
        return hidden[:, 0], labels
    if pooling == "last":
        last = mask.long().cumsum(dim=1).argmax(dim=1)  # position of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last], labels
    acc = torch.float32 if hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    weights = mask.to(acc)[:, :, None]
    return (hidden.to(acc) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0), labels


def class_stats(model: nn.Module, data: Iterable[Any], layers: Optional[Sequence[Any]] = None, *,
                num_classes: Optional[int] = None, pooling: str = "mean", **options: Any) -> Dict[str, ClassStats]:
    """{layer: ClassStats} of `model`'s hidden states over `data`, in one pass.

    Parameters
    ----------
    model : transformers.PreTrainedModel
    data : iterable of batches
        Dicts of model inputs holding "labels" (what a DataLoader with a HF collator yields),
        or (inputs dict, labels) pairs. Labels: (B,) per sequence, or (B, T) per token for
        ``pooling="tokens"``.
    layers : names or ints, optional
        ``"hidden_states.i"`` or i (negative counts from the end); default every hidden state.
    num_classes : int, optional
        K (default: grows with the labels).
    pooling : {"mean", "cls", "last", "tokens"}
    **options
        Passed to each ClassStats (per_class_diag, precision, ...).

    The model runs in eval mode without gradients on its own device; its training flag is
    restored.
    """
    adapter = HFFeatures(model, pooling)
    names = adapter.resolve(layers)
    return stream_layers(adapter, labelled_batches(data, None, 1, names=("data", "data")), names, num_classes, **options)


def is_transformers_model(model: Any) -> bool:
    """True for a transformers PreTrainedModel (without importing transformers: a model can only
    be one when transformers is already loaded)."""
    import sys

    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    base = getattr(transformers, "PreTrainedModel", None)
    return base is not None and isinstance(model, base)
