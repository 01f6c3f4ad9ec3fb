"""The class-mean geometry of one set of statistics: cosines of the centred means, the spectrum."""

from __future__ import annotations

from .. import metrics
from ._figure import pyplot, save


def plot_geometry(stats, path: str) -> None:
    """Cosine heatmap of the centred class means, and the spectrum of Sigma_T."""
    plt = pyplot()
    m = stats.centred_means()
    unit = m / m.norm(dim=1, keepdim=True).clamp(min=1e-300)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    im = a.imshow((unit @ unit.T).numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    a.set_title("cosine of centred class means")
    fig.colorbar(im, ax=a)
    eig = metrics.eigenvalues(stats).numpy()
    b.loglog(range(1, len(eig) + 1), eig.clip(min=1e-300))
    b.set_title("eigenvalues of Sigma_T")
    b.set_xlabel("rank")
    save(fig, path)
    plt.close(fig)
