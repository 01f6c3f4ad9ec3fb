"""Figures (pip install 'ncfast[plot]'; matplotlib is imported only when one is drawn).

- ``plot_geometry(stats, path)``: cosine heatmap of the centred class means and the spectrum
- ``plot_ranking(table, path)``: several models' scores on one target task
- ``plot_training(history, path)``: per-layer NC curves over training (``NCMonitor.plot``)
"""

from __future__ import annotations

from ._figure import pyplot
from .geometry import plot_geometry
from .ranking import plot_ranking
from .training import plot_training

__all__ = ["plot_geometry", "plot_ranking", "plot_training", "pyplot"]
