"""Two-stage VAE sampling (Dai & Wipf, ICLR 2019): a second VAE fitted to the first one's
aggregated posterior q(z) = E_x q(z|x), so that samples z ~ q(z) — not z ~ N(0, I), which
q(z) rarely matches — feed the first decoder.

For a β-conditional first stage one β-conditional second stage serves every β: it is
trained on codes z ~ q(z|x, β) with log β ~ U[log a, log b] drawn per code over the first
stage's range and is told that β (its networks are FiLM-conditioned on it), while its own
loss is its plain negative ELBO.

This module builds the second stage, its training set and objective, and samples from it;
the fit itself is the trainer's (`experiments.study.fit_second_stage`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..data.base import ImageData, TensorData
from ..distributions.log_uniform import LogUniformBeta
from ..estimators import LossTerms
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
        cfg.beta_range = [first.beta_prior.low, first.beta_prior.high]
    return build_vae(cfg, (latent,)).to(next(first.parameters()).device)


@torch.no_grad()
def first_stage_codes(
    first: VAE, x: Tensor, beta: Tensor | float | None
) -> tuple[Tensor, Tensor | None]:
    """z ~ q(z|x) of the first stage (at β, if conditional) and its condition ℓ."""
    _, cond = first.condition(len(x), beta, x.device)
    return first.encode(x, cond).sample(1)[0], cond


@torch.no_grad()
def code_data(first: VAE, data: ImageData, seed: int, batch_size: int = 512) -> TensorData:
    """The second stage's training set, drawn once with `seed` (so that its fit resumes
    exactly): a code z ~ q(z|x) per example of `data`, and for a β-conditional first stage
    the ℓ of the β it was drawn at — rows z, or (z, ℓ)."""
    first.eval()
    device = next(first.parameters()).device
    per_code = None  # a β per code, however the first stage drew them in training
    if first.conditional:
        per_code = LogUniformBeta(first.beta_prior.low, first.beta_prior.high, per_example=True)
    codes, conditions = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the caller's random stream is left as it was
        for index in torch.arange(len(data)).split(batch_size):
            beta = None if per_code is None else per_code.sample(len(index), device).exp()
            z, cond = first_stage_codes(first, data.batch(index).to(device), beta)
            codes.append(z)
            conditions.append(cond)
    if per_code is None:
        return TensorData(torch.cat(codes))
    return TensorData(torch.cat(codes), torch.cat(conditions))


class SecondStageLoss(nn.Module):
    """The trainer's model for a second stage: on a batch of `code_data` rows, its plain
    negative ELBO — told ℓ, but weighting its own rate by 1."""

    def __init__(self, second: VAE):
        super().__init__()
        self.second = second

    def forward(self, batch: Tensor | tuple[Tensor, Tensor]) -> LossTerms:
        z, cond = batch if self.second.conditional else (batch, None)
        one = torch.ones((), device=z.device)
        return self.second.estimator(self.second, z, one, cond)


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
