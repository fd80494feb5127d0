"""1-D slices of the VAE loss through a trained model's parameters as the decoder variance
γ = σ_x² varies (Dai, Wenliang & Wipf, NeurIPS 2021, Fig. 3).

With σ_x fixed to √γ, the loss along θ + t·d (d a unit direction in decoder-parameter
space) is ‖x − μ_θ+td(z)‖²/(2γ) + (D/2) log 2πγ + KL; its curvature, and its slope away from
the minimum, scale as 1/γ — the "infinite gradient" as γ → 0 that lets a VAE with learned
γ select the sparse, exact solution. The slices show the loss minus its value at t = 0.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ..distributions import GaussianLikelihood
from ..errors import VaelabError
from ..models import VAE
from .figures import save_figure


@torch.no_grad()
def loss_slices(
    model: VAE, x: Tensor, gammas: list[float], ts: Tensor, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """(loss [len(gammas), len(ts)] minus its value at t = 0, the direction d) for a seeded
    random unit direction over the decoder's parameters; mean per example, nats. The model's
    decoder must output the mean of x only (its likelihood replaced by N(μ, γ))."""
    if model.likelihood.outputs_per_dim != 1:
        raise VaelabError(
            "loss slices fix σ_x = √γ: the decoder must output the mean only, not a σ head"
        )
    probe = copy.deepcopy(model).eval()
    params = [p for p in probe.decoder.parameters()]
    g = torch.Generator().manual_seed(seed)
    direction = [torch.randn(p.shape, generator=g) for p in params]
    norm = math.sqrt(sum(float((d**2).sum()) for d in direction))
    direction = [d / norm for d in direction]
    origin = [p.detach().clone() for p in params]
    shape = tuple(x.shape[1:])
    losses = torch.zeros(len(gammas), len(ts))
    for i, gamma in enumerate(gammas):
        probe.likelihood = GaussianLikelihood(shape, sigma_mode="fixed", sigma=math.sqrt(gamma))
        for j, t in enumerate(ts):
            for p, o, d in zip(params, origin, direction):
                p.copy_(o + float(t) * d.to(o.device))
            torch.manual_seed(seed)  # the same ε at every point: a smooth slice
            losses[i, j] = probe(x, beta=1.0).loss.mean()
    zero = int(torch.argmin(ts.abs()))
    return losses - losses[:, zero : zero + 1], torch.cat([d.flatten() for d in direction])


def plot_loss_slices(path: str | Path, gammas: list[float], ts: Tensor, losses: Tensor) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for gamma, row in zip(gammas, losses):
        axes[0].plot(ts, row, label=f"γ = {gamma:g}")
        axes[1].plot(ts, row * gamma, label=f"γ = {gamma:g}")
    axes[0].set(
        xlabel="t (step along a random unit direction of decoder weights)",
        ylabel="loss(θ + t·d) − loss(θ)  [nats]",
        yscale="symlog",
        title="the slice sharpens as γ → 0",
    )
    axes[1].set(
        xlabel="t",
        ylabel="γ · (loss(θ + t·d) − loss(θ))",
        title="… as 1/γ: rescaled by γ the slices coincide",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Dai, Wenliang & Wipf (2021), Fig. 3: infinite gradient as γ = σ_x² → 0", fontsize=9
    )
    save_figure(fig, path)
