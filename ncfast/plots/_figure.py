"""matplotlib, loaded only when a figure is drawn (pip install 'ncfast[plot]'), and the atomic save."""

from __future__ import annotations

from ..io.atomic import atomic_path


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("--plot needs matplotlib: pip install 'ncfast[plot]'") from err
    return plt


def save(fig, path: str) -> None:
    """Writes `fig` as a PNG to `path` atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
