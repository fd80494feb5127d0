"""Aggregated posteriors q(z_j) = E_x q(z_j|x) of single latent channels, across β.

For a Gaussian encoder q(z_j) is a mixture with one component N(μ_j(x), σ_j²(x)) per test
example; its density is evaluated on a grid. Comparing it across β shows whether the
encoder keeps the same code as β changes (the "posteriors are aligned" figure).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..data.base import ImageData
from ..distributions import DiagonalGaussian, StandardNormal, gaussian_log_density, kl_per_dimension
from ..models import VAE
from .encoding import encode_data
from .figures import save_figure


def posterior_moments(
    model: VAE, data: ImageData, beta: float | None = None, batch_size: int = 500
) -> tuple[Tensor, Tensor]:
    """Encoder means and log-variances [N, L] over `data` (at β for a conditional model)."""
    q = encode_data(model, data, beta, batch_size)
    return q.mean, q.variance.log()


def aggregate_density(mean: Tensor, log_var: Tensor, grid: Tensor) -> Tensor:
    """q(z_j = g) = (1/N) Σ_n N(g; μ_nj, σ²_nj) for every channel j and grid point g → [L, G]."""
    log_p = gaussian_log_density(grid[:, None, None], mean[None], log_var[None])  # [G, N, L]
    return log_p.exp().mean(1).T


def most_active_channels(log_var: Tensor, mean: Tensor, k: int) -> list[int]:
    """The k channels with the largest mean KL(q(z_j|x) ‖ N(0, 1)) over the examples (the most
    informative ones)."""
    q = DiagonalGaussian(mean, log_var)
    kl = kl_per_dimension(q, StandardNormal(mean.shape[-1])).mean(0)
    return kl.argsort(descending=True)[:k].tolist()


def wasserstein_1d(density_a: Tensor, density_b: Tensor, grid: Tensor) -> Tensor:
    """W₁ between 1-D densities tabulated on a uniform `grid` [G] (each normalised there):
    ∫ |F_a(z) − F_b(z)| dz with F the CDFs (Vallender 1974); [..., G] → [...]."""
    step = grid[1] - grid[0]
    cdf_a = (density_a / density_a.sum(-1, keepdim=True)).cumsum(-1)
    cdf_b = (density_b / density_b.sum(-1, keepdim=True)).cumsum(-1)
    return (cdf_a - cdf_b).abs().sum(-1) * step


def alignment_across_beta(
    densities: dict[float, Tensor], grid: Tensor, up_to_sign: bool = False
) -> float:
    """How far the shown channels' q(z_j) move between adjacent β: the mean over channels and
    adjacent pairs of β of `wasserstein_1d` (densities[β] is [k, G] on a `grid` symmetric
    about 0). `up_to_sign`: the smaller of the distance to q(z_j) and to its mirror image,
    for separately trained models whose channels' signs are arbitrary."""
    betas = sorted(densities)
    if len(betas) < 2:
        raise ValueError("alignment needs densities at two β or more")
    distances = []
    for low, high in zip(betas, betas[1:]):
        d = wasserstein_1d(densities[low], densities[high], grid)
        if up_to_sign:
            d = torch.minimum(d, wasserstein_1d(densities[low], densities[high].flip(-1), grid))
        distances.append(d)
    return float(torch.stack(distances).mean())


def plot_aggregate_posteriors(
    path: str | Path,
    densities: dict[str, dict[float, Tensor]],
    grid: Tensor,
    titles: dict[str, list[str]],
) -> None:
    """One row per regime, one column per shown channel, one line per β (colour = log β).

    densities[regime][β] is [k, G]: the k shown channels on the grid; titles[regime] names
    the k columns."""
    regimes = list(densities)
    ncol = max(len(t) for t in titles.values())
    fig, axes = plt.subplots(
        len(regimes), ncol, figsize=(2.6 * ncol, 2.2 * len(regimes)), squeeze=False
    )
    all_betas = sorted({b for d in densities.values() for b in d})
    cmap = plt.get_cmap("viridis")
    prior = gaussian_log_density(grid, torch.zeros(()), torch.zeros(())).exp()
    for r, regime in enumerate(regimes):
        for c, title in enumerate(titles[regime]):
            ax = axes[r, c]
            for beta, density in sorted(densities[regime].items()):
                colour = cmap(all_betas.index(beta) / max(1, len(all_betas) - 1))
                ax.plot(grid, density[c], color=colour, lw=1.2, label=f"β={beta:g}")
            ax.plot(grid, prior, "k:", lw=0.8)
            ax.set_title(f"{regime}\n{title}", fontsize=7)
            ax.set_yticks([])
        for c in range(len(titles[regime]), ncol):
            axes[r, c].set_axis_off()
    axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.suptitle("aggregated posteriors q(z_j) across β (dotted: prior N(0, 1))", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
