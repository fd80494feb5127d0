"""Diagonal Gaussian posterior q(z|x) = N(μ, diag σ²) and the standard-normal prior N(0, I).

All log-densities are per example, summed over latent dimensions, in nats.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import POSTERIORS, PRIORS
from .base import Posterior, Prior
from .exponential_family import LOG_2PI


def gaussian_log_density(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise log N(z; mean, exp(log_var)) — the one place this formula is written."""
    return -0.5 * (LOG_2PI + log_var + (z - mean) ** 2 * torch.exp(-log_var))


@POSTERIORS.register("diagonal-gaussian")
class DiagonalGaussian(Posterior):
    """N(mean, diag exp(log_var)) over the last dimension; batch shape is everything before."""

    has_rsample = True

    def __init__(self, mean: Tensor, log_var: Tensor):
        self._mean = mean
        self.log_var = log_var

    @staticmethod
    def param_size(latent_dim: int) -> int:
        """Encoder outputs needed per example: a mean and a log-variance per latent."""
        return 2 * latent_dim

    @classmethod
    def from_params(cls, params: Tensor) -> DiagonalGaussian:
        mean, log_var = params.chunk(2, dim=-1)
        return cls(mean, log_var)

    @property
    def mean(self) -> Tensor:
        return self._mean

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.log_var)

    @property
    def params(self) -> Tensor:
        return torch.cat([self._mean, self.log_var], dim=-1)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.log_var)

    def rsample(self, samples: int = 1) -> Tensor:
        """Reparameterised samples z = μ + σ·ε, shape [samples, *batch, latent]."""
        eps = torch.randn(
            (samples, *self.mean.shape), dtype=self.mean.dtype, device=self.mean.device
        )
        return self.mean + self.std * eps

    def sample(self, samples: int = 1) -> Tensor:
        with torch.no_grad():
            return self.rsample(samples)

    def log_prob(self, z: Tensor) -> Tensor:
        return gaussian_log_density(z, self.mean, self.log_var).sum(-1)

    def sufficient_statistics(self, z: Tensor) -> Tensor:
        """ψ(z) = (z, z²) of the exponential-family form, η = (μ/σ², −1/(2σ²))."""
        return torch.cat([z, z * z], dim=-1)

    @property
    def natural_parameters(self) -> Tensor:
        precision = torch.exp(-self.log_var)
        return torch.cat([self.mean * precision, -0.5 * precision], dim=-1)

    def entropy(self) -> Tensor:
        return 0.5 * (LOG_2PI + 1.0 + self.log_var).sum(-1)


@PRIORS.register("standard-normal")
class StandardNormal(Prior):
    """p(z) = N(0, I) in `latent_dim` dimensions."""

    has_rsample = True

    def sample(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.randn(n, self.latent_dim, device=device)

    def log_prob(self, z: Tensor) -> Tensor:
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        return gaussian_log_density(z, zero, zero).sum(-1)

    def grad_log_prob(self, z: Tensor) -> Tensor:
        return -z
