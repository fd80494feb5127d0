"""A VAE assembled from parts: encoder + posterior + decoder + likelihood + prior.

loss(x) = D(x) + β·R(x), with distortion D = E_q[−log p(x|z)] and rate R = KL(q(z|x) ‖ p(z)),
both per example, summed over dimensions, in nats (DESIGN §1a). β multiplies the rate only;
the decoder's σ_x lives in the likelihood, so β and σ_x never stand in for each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..distributions import kl_divergence
from ..registry import LIKELIHOODS, NETWORKS, POSTERIORS, PRIORS


@dataclass
class LossTerms:
    """Per-example terms [B] of one forward pass."""

    loss: Tensor  # D + β·R
    distortion: Tensor  # E_q[−log p(x|z)]
    rate: Tensor  # KL(q(z|x) ‖ p(z))
    mse: Tensor  # squared error of the decoder mean, averaged over data dimensions
    sigma: Tensor | None  # σ_x summary (Gaussian decoders)

    @property
    def negative_elbo(self) -> Tensor:
        return self.distortion + self.rate

    def sums(self) -> dict[str, Tensor]:
        """Detached batch sums of every per-example term (what the trainer logs)."""
        out = {
            "loss": self.loss,
            "distortion": self.distortion,
            "rate": self.rate,
            "negative_elbo": self.negative_elbo,
            "mse": self.mse,
        }
        out = {k: v.detach().sum() for k, v in out.items()}
        if self.sigma is not None:
            out["sigma"] = self.sigma.detach() * len(self.loss)
        return out


class VAE(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        posterior: type,
        likelihood: nn.Module,
        prior,
        beta: float = 1.0,
        samples: int = 1,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.likelihood = likelihood
        self.prior = prior
        self.beta = beta
        self.samples = samples

    def encode(self, x: Tensor):
        """q(z|x) for a batch x [B, *data]."""
        return self.posterior.from_params(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """Decoder output for codes z [*batch, L] (any leading shape)."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *out.shape[1:])

    def forward(self, x: Tensor, beta: float | None = None) -> LossTerms:
        q = self.encode(x)
        z = q.rsample(self.samples)  # [S, B, L]
        rec = self.likelihood(x, self.decode(z))
        rate = kl_divergence(q, self.prior)
        beta = self.beta if beta is None else beta
        return LossTerms(
            loss=rec.nll + beta * rate,
            distortion=rec.nll,
            rate=rate,
            mse=rec.mse,
            sigma=rec.sigma,
        )

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decoder mean at the posterior mean."""
        return self.likelihood.mean(self.decode(self.encode(x).mean))

    @torch.no_grad()
    def generate(self, n: int) -> Tensor:
        """Decoder means of n codes drawn from the prior."""
        device = next(self.parameters()).device
        return self.likelihood.mean(self.decode(self.prior.sample(n, device=device)))


def build_vae(cfg: ModelConfig, data_shape: tuple[int, ...]) -> VAE:
    """Assemble a VAE from the registered parts named in `cfg`."""
    posterior = POSTERIORS.get(cfg.posterior)
    likelihood = LIKELIHOODS.get(cfg.likelihood)(
        data_shape,
        sigma_mode=cfg.sigma_mode,
        sigma=cfg.sigma,
        log_sigma_min=cfg.log_sigma_min,
    )
    encoder, decoder = NETWORKS.get(cfg.network)(
        data_shape=tuple(data_shape),
        encoder_outputs=posterior.param_size(cfg.latent_dim),
        latent_dim=cfg.latent_dim,
        decoder_outputs_per_dim=likelihood.outputs_per_dim,
        hidden=list(cfg.hidden),
        channels=list(cfg.channels),
    )
    prior = PRIORS.get(cfg.prior)(cfg.latent_dim)
    return VAE(encoder, decoder, posterior, likelihood, prior, beta=cfg.beta, samples=cfg.samples)
