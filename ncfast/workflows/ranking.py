"""Model selection: rank several feature extractors for one labelled target task by every
transferability score, each from one pass over the target data (DESIGN.md sections 1 and 4).

    ranking = rank_models({"cnn": cnn_trunk, "mlp": mlp_trunk, "vit": "vit_feats.npy"},
                          target_x, target_y)
    print(ranking)                 # table of scores and ranks
    ranking.ranking("logme")       # model names, best first
    ranking.correlation(accuracy)  # Kendall tau of each score against measured accuracies
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from .. import metrics
from .._inputs import to_tensor
from ..pipeline import accumulate
from ..io import open_array, stream
from ..metrics.registry import HIGHER_IS_BETTER, SCORE_FUNCTIONS, SCORES, score_stats, stats_options
from ..nn._modules import evaluating, module_device
from ..nn._pool import Pool, check_pool, pool_rows
from ..nn.features import as_layer_features, stream_layers
from ..stats import ClassStats
from .._format import format_column
from .._progress import Progress
from ._data import count_rows, labelled_batches, read_labels

Extractor = Union[nn.Module, Callable[[Tensor], Tensor], Tensor, np.ndarray, str, os.PathLike]

# Scores that need each model's source classifier (rank_models' `source_heads`), not its features'
# statistics alone. Higher is better for both.
SOURCE_SCORES = ("leep", "nce")


# ---------------------------------------------------------------------------------- rank correlations


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two sequences (ties counted as neither concordant nor discordant)."""
    x, y = _paired(x, y)
    n = len(x)
    iu = np.triu_indices(n, 1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    den = math.sqrt(float((sx != 0).sum()) * float((sy != 0).sum()))
    return float((sx * sy).sum() / den) if den > 0 else float("nan")


def weighted_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Vigna's weighted tau with hyperbolic weights (scipy.stats.weightedtau's default).

    A pair exchanged near the top counts more: the pair (i, j) weighs 1/(r_i + 1) + 1/(r_j + 1),
    r being the rank by decreasing value (0 = best). As in scipy (``rank=True``), the result
    averages the tau computed with the ranking by x (ties broken by y) and by y (ties by x)."""
    x, y = _paired(x, y)
    return 0.5 * (_weighted_tau_ranked(x, y, _decreasing_rank(x, y)) + _weighted_tau_ranked(x, y, _decreasing_rank(y, x)))


def _decreasing_rank(key: np.ndarray, tie: np.ndarray) -> np.ndarray:
    order = np.lexsort((-tie, -key))  # by key decreasing, then tie decreasing
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = np.arange(len(key))
    return rank


def _weighted_tau_ranked(x: np.ndarray, y: np.ndarray, rank: np.ndarray) -> float:
    w = 1.0 / (rank + 1.0)
    iu = np.triu_indices(len(x), 1)
    weight = (w[:, None] + w[None, :])[iu]
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    den = math.sqrt(float((weight * (sx != 0)).sum()) * float((weight * (sy != 0)).sum()))
    return float((weight * sx * sy).sum() / den) if den > 0 else float("nan")


def _paired(x, y) -> Tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"x, y: expected two 1-D sequences of the same length >= 2, got {x.shape} and {y.shape}")
    return x, y


CORRELATIONS = {"kendall": kendall_tau, "weighted": weighted_tau}


# ---------------------------------------------------------------------------------- result


@dataclass
class ModelRanking:
    """Scores of every model on one target task.

    scores: {model: {score: value or None}}; higher_is_better: {score: bool};
    notes: {model: {score: why undefined}}; dims, num_samples, seconds: per model.
    """

    scores: Dict[str, Dict[str, Optional[float]]]
    higher_is_better: Dict[str, bool]
    dims: Dict[str, int] = field(default_factory=dict)
    num_samples: Dict[str, int] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    notes: Dict[str, Dict[str, str]] = field(default_factory=dict)

    @property
    def models(self) -> List[str]:
        return list(self.scores)

    @property
    def score_names(self) -> List[str]:
        return list(self.higher_is_better)

    def _check_score(self, score: str) -> None:
        if score not in self.higher_is_better:
            raise ValueError(f"score: unknown {score!r} (this ranking has {', '.join(self.score_names)})")

    def ranking(self, score: str) -> List[str]:
        """Model names from predicted best to worst by `score` (models where it is undefined
        are left out)."""
        self._check_score(score)
        valid = [(m, s[score]) for m, s in self.scores.items() if s[score] is not None and math.isfinite(s[score])]
        valid.sort(key=lambda kv: kv[1], reverse=self.higher_is_better[score])
        return [m for m, _ in valid]

    def best(self, score: str) -> str:
        order = self.ranking(score)
        if not order:
            raise ValueError(f"score: {score!r} is undefined for every model")
        return order[0]

    def correlation(self, truth: Mapping[str, float], method: str = "kendall") -> Dict[str, Optional[float]]:
        """{score: rank correlation between the score and `truth`} (e.g. measured transfer
        accuracy per model). Scores where lower is better are negated first, so +1 always means
        "ranks the models exactly as the truth does". method: "kendall" (tau-b) or "weighted"
        (Vigna's hyperbolic weighted tau, top ranks count more). None where fewer than 2
        models have the score."""
        if method not in CORRELATIONS:
            raise ValueError(f"method: expected one of {sorted(CORRELATIONS)}, got {method!r}")
        missing = sorted(set(self.scores) - set(truth))
        if missing:
            raise ValueError(f"truth: no value for models {missing}")
        out: Dict[str, Optional[float]] = {}
        for score, higher in self.higher_is_better.items():
            pairs = [(v[score], truth[m]) for m, v in self.scores.items() if v[score] is not None and math.isfinite(v[score])]
            if len(pairs) < 2:
                out[score] = None
                continue
            s = np.array([p[0] for p in pairs]) * (1.0 if higher else -1.0)
            out[score] = CORRELATIONS[method](s, [p[1] for p in pairs])
        return out

    def plot(self, path: str, truth: Optional[Mapping[str, float]] = None, title: str = "") -> None:
        """Writes a PNG of the ranking (``pip install 'ncfast[plot]'``): a models x scores grid of
        ranks and values, best framed; with `truth` ({model: measured accuracy}), one
        score-vs-accuracy panel per score, titled with its Kendall and weighted tau
        (:meth:`correlation`). See :func:`ncfast.plots.plot_ranking`."""
        from ..plots import plot_ranking

        correlation = None
        if truth is not None:
            correlation = {method: self.correlation(truth, method) for method in CORRELATIONS}
        plot_ranking(self.scores, path, higher_is_better=self.higher_is_better, truth=truth,
                     correlation=correlation, title=title)

    def to_dict(self) -> dict:
        return {
            "scores": self.scores,
            "higher_is_better": self.higher_is_better,
            "rankings": {s: self.ranking(s) for s in self.score_names},
            "dims": self.dims,
            "num_samples": self.num_samples,
            "seconds": self.seconds,
            "notes": self.notes,
        }

    def __str__(self) -> str:
        names = self.score_names
        ranks = {s: {m: i + 1 for i, m in enumerate(self.ranking(s))} for s in names}
        head = ["model", "dim"] + [f"{s} {'^' if self.higher_is_better[s] else 'v'}" for s in names]
        shown = {s: dict(zip(self.scores, format_column([v[s] for v in self.scores.values()]))) for s in names}
        body = []
        for m, vals in self.scores.items():
            cells = [m, str(self.dims.get(m, ""))]
            for s in names:
                v = vals[s]
                cells.append("n/a" if v is None or not math.isfinite(v) else f"{shown[s][m]} ({ranks[s][m]})")
            body.append(cells)
        widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
        lines = [fmt(head)] + [fmt(b) for b in body]
        lines.append("^ higher is better, v lower is better; (n) = rank of the model by that score")
        for m, reasons in self.notes.items():
            for s, why in reasons.items():
                lines.append(f"  {m} {s}: {why}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- ranking


def rank_models(
    models: Mapping[str, Extractor],
    target_inputs: Any = None,
    target_labels: Any = None,
    *,
    num_classes: Optional[int] = None,
    scores: Optional[Sequence[str]] = None,
    source_heads: Optional[Mapping[str, Any]] = None,
    batch_size: int = 256,
    pool: Pool = "avg",
    progress: bool = False,
) -> ModelRanking:
    """Scores every model's features on the labelled target set, one pass per model.

    Parameters
    ----------
    models : {name: extractor}
        An extractor is an ``nn.Module`` or callable mapping a batch of target inputs to features
        (B, D) or feature maps (B, C, *spatial) (pooled by `pool`); a model with a registered
        feature adapter (a Hugging Face transformer, a timm model, or any
        :class:`ncfast.nn.features.LayerFeatures`), scored on its output layer; or precomputed features of the
        target set: a (N, D) tensor/array, or a dump path (.npy, folder of shards, .safetensors).
        Modules run in eval mode under ``torch.no_grad()`` on their own device (inputs are moved
        there); their training flag is restored afterwards.
    target_inputs : tensor/array (N, ...) or re-iterable of (inputs, labels) batches
        What callables are applied to, in batches of `batch_size`. Not needed when every model
        is given as precomputed features.
    target_labels : (N,) int tensor/array or path
        Labels of the target set (with a tensor/array of inputs or with precomputed features).
    num_classes : int, optional
        K; default: largest label + 1.
    scores : names, optional
        A subset of :data:`ncfast.metrics.registry.SCORES` and :data:`SOURCE_SCORES`
        (default: all of the first, plus LEEP and NCE when `source_heads` is given).
    source_heads : {name: head or probabilities}, optional
        Each model's source-task classifier, for LEEP (Nguyen et al. 2020) and NCE (Tran et
        al. 2019): a callable (e.g. the trained ``nn.Linear``) mapping that model's pooled
        target features (B, D) to source-class logits (B, K_s), softmaxed here; or the
        target set's source-class probabilities themselves, (N, K_s) tensor/array/path, row i
        for the i-th target row in the order the pass reads them (with a DataLoader of
        batches, the order it yields; do not shuffle it). Module heads run like the
        extractors: eval mode, no grad, on their own device, training flag restored. The
        (N, K_s) float32 probabilities are kept for LEEP's second pass. Models left out get
        None for LEEP and NCE, with a note.

    progress : bool
        A progress line per model on stderr (rows through the extractor, or through the pass
        over its dump; see :class:`ncfast._progress.Progress`).

    Every ClassStats keeps per-class diagonals (for GBC). Returns a :class:`ModelRanking`.
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models: expected a non-empty {name: extractor} mapping")
    source_heads = dict(source_heads or {})
    if scores is None:
        names = list(SCORES) + (list(SOURCE_SCORES) if source_heads else [])
    else:
        names = list(scores)
    unknown = [n for n in names if n not in SCORE_FUNCTIONS and n not in SOURCE_SCORES]
    if unknown:
        raise ValueError(f"scores: unknown {unknown} (choose from {', '.join(SCORES + SOURCE_SCORES)})")
    strangers = sorted(set(source_heads) - set(models))
    if strangers:
        raise ValueError(f"source_heads: no model named {strangers}")
    if any(n in SOURCE_SCORES for n in names) and not source_heads:
        raise ValueError("scores: leep and nce need source_heads (each model's source classifier)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    check_pool(pool)
    labels = read_labels(target_labels)
    if num_classes is None and labels is not None:
        num_classes = int(labels.max()) + 1 if labels.numel() else None
    callables = [n for n, e in models.items() if _is_callable(e) or as_layer_features(e) is not None]
    if callables and target_inputs is None:
        raise ValueError(f"target_inputs: needed to run models {callables}")
    if len(callables) > 1 and iter(target_inputs) is target_inputs:
        raise ValueError("target_inputs: an iterator can be read only once; pass a tensor, array, list or DataLoader")
    higher = {n: HIGHER_IS_BETTER.get(n, True) for n in names}  # LEEP and NCE: higher is better
    result = ModelRanking(scores={}, higher_is_better=higher)
    wants_source = [n for n in names if n in SOURCE_SCORES]
    options = {**stats_options(names), "per_class_diag": True}  # what the named scores need
    for name, extractor in models.items():
        start = time.perf_counter()
        head = source_heads.get(name) if wants_source else None
        predictions = _SourcePredictions(name, head) if head is not None else None
        adapter = as_layer_features(extractor)
        if adapter is not None:
            stats = _stats_from_adapter(name, adapter, target_inputs, labels, num_classes, batch_size, predictions)
        elif _is_callable(extractor):
            stats = _stats_from_callable(name, extractor, target_inputs, labels, num_classes, batch_size, pool,
                                         predictions, options, progress)
        else:
            stats = _stats_from_features(name, extractor, labels, num_classes, progress, predictions, options)
        values, notes = score_stats(stats, [n for n in names if n not in SOURCE_SCORES])
        if wants_source:
            if predictions is None:
                values.update({n: None for n in wants_source})
                notes.update({n: "no source head given" for n in wants_source})
            else:
                values.update(predictions.scores(stats.num_classes, wants_source))
        values = {n: values[n] for n in names}
        result.scores[name] = values
        result.dims[name] = stats.dim
        result.num_samples[name] = stats.num_samples
        result.seconds[name] = time.perf_counter() - start
        if notes:
            result.notes[name] = notes
    return result


def _is_callable(extractor: Any) -> bool:
    return callable(extractor) and not isinstance(extractor, (Tensor, np.ndarray, str, os.PathLike))


def _stats_from_callable(name, extractor, inputs, labels, num_classes, batch_size, pool,
                         predictions: Optional["_SourcePredictions"] = None,
                         options: Optional[dict] = None, progress: bool = False) -> ClassStats:
    device = module_device(extractor) if isinstance(extractor, nn.Module) else None
    stats = None
    with evaluating(extractor), Progress(count_rows(inputs), label=name, enabled=progress) as bar:
        for x, y in labelled_batches(inputs, labels, batch_size):
            x = to_tensor(x, "target_inputs")
            if device is not None:
                x = x.to(device, non_blocking=True)
            out = extractor(x)
            if not isinstance(out, Tensor):
                raise TypeError(f"models[{name!r}]: returned a {type(out).__name__}, expected a tensor of features")
            rows = pool_rows(out, pool, f"models[{name!r}]")
            if stats is None:
                options = options or {"per_class_diag": True}
                stats = ClassStats(num_classes, rows.shape[1], device=rows.device, **options)
            try:
                stats.update(rows, y.to(rows.device))
            except (ValueError, TypeError) as err:
                raise type(err)(f"models[{name!r}]: {err}") from err
            if predictions is not None:
                predictions.add_features(rows, y)
            bar.update(int(y.shape[0]))
    if stats is None:
        raise ValueError("target_inputs: no batch was read")
    return stats


def _stats_from_adapter(name, adapter, inputs, labels, num_classes, batch_size,
                        predictions: Optional["_SourcePredictions"] = None) -> ClassStats:
    """A model with a feature adapter (Hugging Face, timm, ...): its output layer's rows."""
    layer = adapter.output_layer
    on_rows = (lambda _, rows, y: predictions.add_features(rows, y)) if predictions is not None else None
    try:
        stats = stream_layers(adapter, labelled_batches(inputs, labels, batch_size), [layer], num_classes,
                              on_rows=on_rows, per_class_diag=True)
    except (ValueError, TypeError) as err:
        raise type(err)(f"models[{name!r}]: {err}") from err
    return stats[layer]


def _stats_from_features(name, features, labels, num_classes, progress,
                         predictions: Optional["_SourcePredictions"] = None,
                         options: Optional[dict] = None) -> ClassStats:
    if labels is None:
        raise ValueError(f"target_labels: needed with the precomputed features of model {name!r}")
    feats = open_array(features, f"models[{name!r}]")
    if len(feats.shape) != 2:
        raise ValueError(f"models[{name!r}]: expected (N, D) features, got shape {feats.shape}")
    if feats.rows != labels.shape[0]:
        raise ValueError(f"models[{name!r}]: {feats.rows} feature rows for {labels.shape[0]} target labels")
    label_source = open_array(labels, "target_labels")
    stats = accumulate(feats, label_source, num_classes=num_classes, progress=progress, label=name,
                       **(options or {"per_class_diag": True}))
    if predictions is not None and predictions.needs_features:
        # the head needs the features again: a second read of the dump, in chunks
        with Progress(feats.rows, label=f"{name} source head", enabled=progress) as bar:
            for _, x, y in stream(feats, label_source, chunk_rows=1 << 14):
                predictions.add_features(x, y)
                bar.update(x.shape[0])
    elif predictions is not None:
        predictions.load_probabilities(labels)
    return stats


class _SourcePredictions:
    """One model's source-class probabilities on the target rows, kept (float32, CPU) for
    LEEP's second pass; NCE comes from the streamed joint table."""

    def __init__(self, model: str, head: Any) -> None:
        self.model = model
        self.head = head
        self.needs_features = _is_callable(head)
        self.chunks: List[Tuple[Tensor, Tensor]] = []
        self._labels: List[Tensor] = []  # target labels in pass order, for given probabilities

    def _what(self) -> str:
        return f"source_heads[{self.model!r}]"

    def add_features(self, rows: Tensor, labels: Tensor) -> None:
        if not self.needs_features:  # probabilities given: only the labels' order is needed
            self._labels.append(labels.cpu())
            return
        logits = self._run_head(rows)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != rows.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"{self._what()}: expected (B, K_source) logits for {rows.shape[0]} rows, got {shape}")
        probs = torch.softmax(logits.detach().to(torch.float64), dim=1).to(torch.float32)
        self.chunks.append((probs.cpu(), labels.cpu()))

    def _run_head(self, rows: Tensor) -> Any:
        """The head on a batch of features: an nn.Module in eval mode on its own device (its
        training flag restored after), without grad, like the extractors."""
        device = module_device(self.head) if isinstance(self.head, nn.Module) else None
        with evaluating(self.head):
            return self.head(rows.to(device) if device is not None else rows)

    def load_probabilities(self, labels: Tensor) -> None:
        source = open_array(self.head, self._what())
        if len(source.shape) != 2 or source.rows != labels.shape[0]:
            raise ValueError(f"{self._what()}: expected ({labels.shape[0]}, K_source) probabilities, "
                             f"got shape {tuple(source.shape)}")
        for start in range(0, source.rows, 1 << 14):
            probs = source.read(start, min(source.rows, start + (1 << 14))).to(torch.float64)
            if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) or \
                    bool(((probs.sum(dim=1) - 1.0).abs() > 1e-3).any()):
                raise ValueError(f"{self._what()}: rows must be probabilities (non-negative, summing to 1); "
                                 "pass logits through a softmax, or give the head itself")
            self.chunks.append((probs.to(torch.float32), labels[start : start + probs.shape[0]].cpu()))

    def scores(self, num_target: int, names: Sequence[str]) -> Dict[str, float]:
        if not self.chunks:
            self.load_probabilities(torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.int64))
        num_source = self.chunks[0][0].shape[1]
        joint = metrics.JointStats(num_source, num_target)
        for probs, y in self.chunks:
            joint.update(probs, y)
        second = joint.leep_pass()
        for probs, y in self.chunks:
            second.update(probs, y)
        out = {"leep": second.value, "nce": joint.nce()}
        return {n: out[n] for n in names}
