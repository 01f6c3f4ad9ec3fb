"""NC-guided fine-tuning (DESIGN.md section 7; Li et al., "Understanding and Improving Transfer
Learning of Deep Models via Neural Collapse", arXiv 2212.12206).

Their findings: the more the penultimate features of a pre-trained model collapse on the
downstream data, the better it transfers; and fine-tuning ONE well-chosen block, with a skip
connection from it to the head, matches full fine-tuning with far fewer trainable parameters.

    profile = nc_profile(model, (x, y), ["block1", "block2", "block3", "block4"])
    layer = choose_layer(profile)                           # rule: see below
    net = SkipToHead(model, layer, "fc", example_input=x[:2])
    count = freeze_all_but(net, f"model.{layer}", "model.fc", "skip")
    print(count)                                            # trainable-parameter fraction

Layer rule (ncfast's own, documented here, not taken from the paper): with NC1_l
the within/between-class variability ratio of block l's pooled output on the DOWNSTREAM data,
the default rule "most_collapsed" picks the block with the smallest NC1, i.e. the block whose
pre-trained features already separate the new classes best. Blocks after it undo part of
that collapse (they specialise to the source classes); the skip projection routes
the chosen block's fine-tuned output straight to the head, past them, which is how the method
induces collapse of the penultimate features on the downstream data. "first_stall" picks the
first block that fails to lower NC1 by the fraction `tol` (the block right after the pre-
trained features stop helping); "last" the last block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..nn._modules import evaluating, module_device
from ..nn._pool import Pool, check_pool, pool_rows
from ..nn.features import as_layer_features, stream_layers
from ..nn.monitor import NCMonitor, resolve_modules
from ..nn.profile import NCProfile, layer_scores
from .._progress import Progress
from ._data import count_rows, labelled_batches, read_labels

RULES = ("most_collapsed", "first_stall", "last")


# ---------------------------------------------------------------------------------- profile


def nc_profile(
    model: nn.Module,
    data: Any,
    layers: Sequence[str],
    num_classes: Optional[int] = None,
    *,
    batch_size: int = 256,
    pool: Pool = "avg",
    progress: bool = False,
) -> NCProfile:
    """Per-layer NC1 / CDNV / NC2 of `model` on labelled data, in ONE forward pass.

    `data` is an (inputs, labels) pair of tensors/arrays (batched by `batch_size`) or an
    iterable of (inputs, labels) batches (a DataLoader). Inputs go to the model's device. The
    model runs in eval mode under ``torch.no_grad()``; its training flag is restored. The
    statistics are in ``profile.stats`` ({layer: ClassStats}). ``progress``: a progress line
    on stderr (rows through the model).

    Models with a registered feature adapter (Hugging Face transformers, timm; see
    :mod:`ncfast.nn.features`) are run through it instead of hooks: `layers` are then its
    layer names or positions (e.g. ``[4, 8, 12]`` hidden states of a BERT), and `data` may
    yield dict batches holding "labels"."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (Tensor, np.ndarray)):
        inputs, labels = data[0], read_labels(data[1], "data")
        if num_classes is None:
            num_classes = int(labels.max()) + 1
    else:
        inputs, labels = data, None
    adapter = as_layer_features(model)
    if adapter is not None:
        names = adapter.resolve(layers)
        batches = labelled_batches(inputs, labels, batch_size, names=("data", "data"))
        with Progress(count_rows(inputs), label="nc profile", enabled=progress) as bar:
            stats = stream_layers(adapter, _counted(batches, bar), names, num_classes)
        return NCProfile([layer_scores(name, stats.get(name)) for name in names], stats)
    device = module_device(model)
    monitor = NCMonitor(model, layers, num_classes, pool=pool)
    try:
        with evaluating(model), Progress(count_rows(inputs), label="nc profile", enabled=progress) as bar:
            for x, y in labelled_batches(inputs, labels, batch_size, names=("data", "data")):
                x = torch.as_tensor(x)
                with monitor.labels(y):
                    model(x if device is None else x.to(device, non_blocking=True))
                bar.update(int(y.shape[0]))
    finally:
        monitor.remove()
    return monitor.report()


def _counted(batches, bar: Progress):
    """The (inputs, labels) batches, each counted on `bar` once it has been used."""
    for x, y in batches:
        yield x, y
        bar.update(int(y.shape[0]))


def choose_layer(profile: NCProfile, *, rule: str = "most_collapsed", tol: float = 0.05, score: str = "nc1") -> str:
    """The block to fine-tune, from a profile whose layers are consecutive blocks in forward order
    (see the module docstring).

    rule="most_collapsed" (default): the block with the smallest `score`. "first_stall": the
    first block l >= 2 with score_l > (1 - tol) score_{l-1}, else the last block. "last": the
    last block. `score` is any profile column where smaller means more collapsed (nc1,
    nc1_trace, cdnv)."""
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"tol: expected a value in [0, 1), got {tol!r}")
    values = profile.column(score)
    layers = profile.layers
    missing = [n for n, v in zip(layers, values) if v is None]
    if missing:
        raise ValueError(f"profile: {score} is undefined for layers {missing}")
    if rule == "last":
        return layers[-1]
    if rule == "most_collapsed":
        return layers[min(range(len(values)), key=lambda i: values[i])]
    for i in range(1, len(values)):
        if values[i] > (1.0 - tol) * values[i - 1]:
            return layers[i]
    return layers[-1]


# ---------------------------------------------------------------------------------- freezing


@dataclass
class ParamCount:
    """Trainable and total parameters (elements) of a module."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"{self.trainable:,} of {self.total:,} parameters trainable ({100 * self.fraction:.1f}%)"


def count_parameters(model: nn.Module) -> ParamCount:
    """Parameters with requires_grad, and all parameters (shared ones counted once)."""
    params = list(model.parameters())
    return ParamCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def freeze_all_but(model: nn.Module, *trainable: str) -> ParamCount:
    """Sets requires_grad=False on every parameter except those of the named submodules
    (names from ``model.named_modules()``), which get requires_grad=True. Returns the count.
    Name the head too when it should train with the chosen block:
    ``freeze_all_but(model, choose_layer(profile), "fc")``.

    Frozen BatchNorm layers still update their running statistics in train mode; put them in
    eval mode after ``model.train()`` if they should stay fixed."""
    if not trainable:
        raise ValueError("trainable: name at least one submodule to keep trainable")
    modules = resolve_modules(model, trainable)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(True)
    return count_parameters(model)


# ---------------------------------------------------------------------------------- skip projection


class SkipToHead(nn.Module):
    """`model` with a zero-initialised linear projection from `layer`'s pooled output added to
    the input of `head` (the penultimate features): head(f + P pool(h_layer)).

    At initialisation P = 0, so the wrapper computes exactly what `model` computes; fine-tuning
    `layer` with P and the head lets the adapted features reach the head directly (Li et al.'s
    skip-connection layer fine-tuning). Works on any model through two hooks; `head` must take
    a (B, D) tensor. `example_input` (a small batch) is run once, in eval mode without grad, to
    find the two widths.

    Submodules: ``self.model`` (the wrapped model) and ``self.skip`` (nn.Linear, no bias), so
    ``freeze_all_but(wrapper, f"model.{layer}", f"model.{head}", "skip")``.
    """

    def __init__(self, model: nn.Module, layer: str, head: str, *, example_input: Tensor, pool: Pool = "avg") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        check_pool(pool)
        self.model = model
        self.layer, self.head, self._pool = layer, head, pool
        layer_module, head_module = resolve_modules(model, [layer, head])
        widths = {}

        def probe_layer(module, inputs, output) -> None:  # hooks must return None: a value replaces the output
            widths.setdefault("layer", self._rows(output).shape[1])

        def probe_head(module, inputs) -> None:
            if "layer" not in widths:
                raise ValueError(f"layer: {layer!r} does not run before head {head!r} in the forward")
            widths.setdefault("head", self._head_input(inputs).shape[1])

        probes = [layer_module.register_forward_hook(probe_layer), head_module.register_forward_pre_hook(probe_head)]
        try:
            with evaluating(model):
                model(example_input)
        finally:
            for h in probes:
                h.remove()
        if "layer" not in widths or "head" not in widths:
            raise ValueError(f"example_input: the forward did not run {'layer' if 'layer' not in widths else 'head'} "
                             f"{layer if 'layer' not in widths else head!r}")
        first = next(iter(model.parameters()), None)
        self.skip = nn.Linear(widths["layer"], widths["head"], bias=False)
        if first is not None:
            self.skip.to(device=first.device, dtype=first.dtype)
        nn.init.zeros_(self.skip.weight)
        self._captured: Optional[Tensor] = None
        self._hooks = [
            layer_module.register_forward_hook(self._capture),
            head_module.register_forward_pre_hook(self._add_skip),
        ]

    def _rows(self, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {self.layer!r}: output is a {type(output).__name__}, not a tensor")
        return pool_rows(output, self._pool, f"layer {self.layer!r}")

    def _head_input(self, inputs: tuple) -> Tensor:
        if len(inputs) != 1 or not isinstance(inputs[0], Tensor) or inputs[0].ndim != 2:
            got = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in inputs]
            raise ValueError(f"head {self.head!r}: expected one (B, D) tensor input, got {got}")
        return inputs[0]

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> None:
        self._captured = self._rows(output)

    def _add_skip(self, module: nn.Module, inputs: tuple):
        features = self._head_input(inputs)
        captured, self._captured = self._captured, None  # never kept past this forward
        if captured is None:
            raise RuntimeError(f"SkipToHead: layer {self.layer!r} did not run before head {self.head!r} in this forward")
        return (features + self.skip(captured.to(features.dtype)),)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def remove(self) -> nn.Module:
        """Takes the hooks off and returns the bare model (the skip projection is dropped)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        return self.model

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, head={self.head!r}"
