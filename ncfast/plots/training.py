"""Neural collapse over training: one panel per score, one curve per layer (NCMonitor.plot)."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ._figure import pyplot, save

# What each panel shows; every one of these is smaller when the features are more collapsed.
TITLES = {
    "nc1": "NC1 = tr(Σ_W Σ_B⁺) / K",
    "nc1_trace": "NC1_tr = tr Σ_W / tr Σ_B",
    "cdnv": "CDNV (class-distance-normalised variance)",
    "nc2_etf": "NC2: distance of the means to a simplex ETF",
    "nc2_equinorm": "NC2 equinorm: std / mean of ‖μ_c − μ_G‖",
    "nc2_equiangularity": "NC2 equiangularity: std of the mean cosines",
}
# Ratios that span orders of magnitude over training get a log axis.
LOG_SCALE = ("nc1", "nc1_trace", "cdnv")


def plot_training(history: Iterable[Mapping[str, Any]], path: str,
                  scores: Sequence[str] = ("nc1", "cdnv", "nc2_etf"), layers: Optional[Sequence[str]] = None,
                  xlabel: str = "step") -> None:
    """Per-layer curves of `scores` over training, written as a PNG to `path`.

    Parameters
    ----------
    history : NCMonitor.history, or any iterable of records
        Records ``{"step": int, "layer": str, <score>: float or None, ...}``
        (:class:`ncfast.nn.history.NCHistory`); undefined values leave a gap.
    scores : names
        One panel each: recorded columns (:data:`TITLES` says what the NC ones show).
    layers : names, optional
        Which layers to draw (default: all, in the order they were first recorded); colours
        run from dark (first layer) to light (last), so depth reads at a glance.
    xlabel : str
        What the records' steps count ("step", "epoch", ...).
    """
    records = list(history)
    if not records:
        raise ValueError("history: no report recorded yet (call monitor.record() or monitor.log() during training)")
    recorded = {key for r in records for key in r} - {"step", "epoch", "layer", "num_samples"}
    unknown = [s for s in scores if s not in recorded]
    if unknown or not scores or isinstance(scores, str):
        raise ValueError(f"scores: unknown {unknown or scores!r} (recorded: {', '.join(sorted(recorded))})")
    every = list(dict.fromkeys(r["layer"] for r in records))
    layers = every if layers is None else list(layers)
    missing = [n for n in layers if n not in every]
    if missing:
        raise ValueError(f"layers: no record for {missing} (recorded: {', '.join(every)})")
    curves = _curves(records, layers, scores)

    plt = pyplot()
    cmap = plt.get_cmap("viridis")
    colours = {n: cmap(0.85 * i / max(1, len(layers) - 1)) for i, n in enumerate(layers)}
    fig, axes = plt.subplots(1, len(scores), figsize=(4.6 * len(scores) + 1.6, 4.0), squeeze=False)
    for ax, score in zip(axes[0], scores):
        for layer in layers:
            steps, values = curves[score][layer]
            ax.plot(steps, [math.nan if v is None else v for v in values], marker="o", markersize=3.5,
                    linewidth=1.6, color=colours[layer], label=layer)
        if score in LOG_SCALE and _all_positive(curves[score]):
            ax.set_yscale("log")
        ax.set_title(TITLES.get(score, score), fontsize=10.5)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("lower = more collapsed")
    axes[0][-1].legend(title="layer", loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    fig.suptitle("Neural collapse per layer over training", fontsize=12)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def _curves(records: List[Mapping[str, Any]], layers: Sequence[str], scores: Sequence[str]) -> Dict[str, Dict[str, tuple]]:
    out: Dict[str, Dict[str, tuple]] = {s: {} for s in scores}
    for layer in layers:
        rows = [r for r in records if r["layer"] == layer]
        for score in scores:
            out[score][layer] = ([r["step"] for r in rows], [r.get(score) for r in rows])
    return out


def _all_positive(curves: Mapping[str, tuple]) -> bool:
    values = [v for _, vs in curves.values() for v in vs if v is not None and math.isfinite(v)]
    return bool(values) and min(values) > 0
