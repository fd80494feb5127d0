"""Two-stage VAE sampling (Dai & Wipf, ICLR 2019): a second VAE fitted to the first one's
aggregated posterior q(z) = E_x q(z|x), so that samples z ~ q(z) — not z ~ N(0, I), which
q(z) rarely matches — feed the first decoder.

For a β-conditional first stage one β-conditional second stage serves every β: it is
trained on codes z ~ q(z|x, β) with log β drawn like the first stage's and is told that β
(its networks are FiLM-conditioned on it), while its own loss is its plain negative ELBO.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..data.base import ImageData
from ..estimators.reparameterization import reparameterization
from .vae import VAE, build_vae


def build_second_stage(first: VAE, hidden: list[int], sigma_mode: str = "learned-shared") -> VAE:
    """An MLP Gaussian VAE on codes of the first stage's size, conditioned like the first."""
    latent = first.prior.latent_dim
    cfg = ModelConfig(
        network="mlp",
        hidden=list(hidden),
        latent_dim=latent,
        sigma_mode=sigma_mode,
        log_sigma_min=-9.0,  # γ = σ² must be free to become very small (Dai & Wipf 2019)
    )
    if first.conditional:
        cfg.conditioning = "film"
        cfg.beta_range = [math.exp(first.beta_prior.log_low), math.exp(first.beta_prior.log_high)]
    return build_vae(cfg, (latent,)).to(next(first.parameters()).device)


@torch.no_grad()
def first_stage_codes(
    first: VAE, x: Tensor, beta: Tensor | float | None
) -> tuple[Tensor, Tensor | None]:
    """z ~ q(z|x) of the first stage (at β, if conditional) and its condition ℓ."""
    _, cond = first.condition(len(x), beta, x.device)
    return first.encode(x, cond).rsample(1)[0], cond


def fit_second_stage(
    first: VAE,
    second: VAE,
    data: ImageData,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train `second` on codes of `first` (frozen) over `data`; returns the loss per step."""
    device = next(first.parameters()).device
    first.eval()
    second.train()
    data = data.to(device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(second.parameters(), lr=lr)
    history = []
    for _ in tqdm(range(steps), desc="second stage", disable=not progress, mininterval=1):
        index = torch.randint(0, len(data), (batch_size,), generator=generator).to(device)
        x = data.batch(index)
        log_beta = first.beta_prior.sample(len(x), device) if first.conditional else None
        beta = None if log_beta is None else log_beta.exp()
        z, cond = first_stage_codes(first, x, beta)
        # the second stage is told β (ℓ) but weights its own rate by 1: its plain ELBO
        loss = reparameterization(second, z, torch.ones((), device=device), cond).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def fitted_second_stage(
    first: VAE,
    data: ImageData,
    steps: int,
    hidden: list[int],
    seed: int = 0,
    progress: bool = True,
) -> VAE:
    """`build_second_stage` + `fit_second_stage` with default settings, seeded."""
    second = build_second_stage(first, hidden)
    torch.manual_seed(seed)
    fit_second_stage(first, second, data, steps, seed=seed, progress=progress)
    return second


@torch.no_grad()
def second_stage_codes(second: VAE, n: int, cond: Tensor | None = None) -> Tensor:
    """z ~ p(z|u), u ~ N(0, I): samples of the second stage's model of q(z). Sampled, not the
    mean of p(z|u): the two agree when the second stage's γ → 0 (Dai & Wipf's optimum), but a
    second stage that models part of q(z) as noise — unconverged, or where q(z) is already
    N(0, I) — needs that noise back."""
    second.eval()
    u = second.prior.sample(n, device=next(second.parameters()).device)
    return second.likelihood.sample(second.decode(u, cond), cond)


@torch.no_grad()
def two_stage_generate(first: VAE, second: VAE, n: int, beta: float | None = None) -> Tensor:
    """Decoder means of the first stage at codes drawn from the second stage."""
    first.eval()
    _, cond = first.condition(n, beta, next(first.parameters()).device)
    return first.likelihood.mean(first.decode(second_stage_codes(second, n, cond), cond))
