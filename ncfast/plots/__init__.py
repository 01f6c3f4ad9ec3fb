"""Figures (pip install 'ncfast[plot]'; matplotlib is imported only when one is drawn).

- ``plot_geometry(stats, path)``: cosine heatmap of the centred class means and the spectrum
- ``plot_ranking(table, path)``: several models' scores on one target task
"""

from __future__ import annotations

from ._figure import pyplot
from .geometry import plot_geometry
from .ranking import plot_ranking

__all__ = ["plot_geometry", "plot_ranking", "pyplot"]
