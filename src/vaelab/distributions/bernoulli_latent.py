"""Binary latent codes: the factorised Bernoulli posterior q(z|x) = Π_j Bern(z_j; σ(ℓ_j(x)))
and the uniform Bernoulli prior p(z) = 2^−L (Shekhovtsov et al., ICLR 2022, §4).

In exponential-family form q(z|x) = exp(⟨ψ(z), g(x)⟩ − B(g(x))) with ψ(z) = z, natural
parameters g = ℓ (the logits) and log-partition B(ℓ) = Σ_j softplus(ℓ_j).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import POSTERIORS, PRIORS
from .base import Posterior, Prior

MAX_ENUMERABLE_BITS = 16


def all_binary_codes(n_bits: int, device: torch.device | str = "cpu") -> Tensor:
    """Every code of `n_bits` bits as float rows [2^n, n], in binary counting order."""
    if n_bits > MAX_ENUMERABLE_BITS:
        raise ValueError(
            f"{n_bits} bits: 2^{n_bits} states are too many to enumerate "
            f"(max {MAX_ENUMERABLE_BITS})"
        )
    index = torch.arange(2**n_bits, device=device)
    powers = 2 ** torch.arange(n_bits - 1, -1, -1, device=device)
    return ((index[:, None] // powers) % 2).float()


@POSTERIORS.register("bernoulli")
class FactorisedBernoulli(Posterior):
    """Π_j Bern(z_j; σ(ℓ_j)) over the last dimension; batch shape is everything before."""

    has_enumerate_support = True
    continuous = False

    def __init__(self, logits: Tensor):
        self.logits = logits

    @staticmethod
    def param_size(latent_dim: int) -> int:
        return latent_dim

    @classmethod
    def from_params(cls, params: Tensor) -> FactorisedBernoulli:
        return cls(params)

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    @property
    def params(self) -> Tensor:
        return self.logits

    @property
    def mean(self) -> Tensor:
        return self.probs

    @property
    def variance(self) -> Tensor:
        return self.probs * torch.sigmoid(-self.logits)

    @classmethod
    def can_enumerate(cls, latent_dim: int) -> bool:
        return latent_dim <= MAX_ENUMERABLE_BITS

    def enumerate_support(self) -> Tensor:
        """All 2^L codes [2^L, L] in binary counting order."""
        return all_binary_codes(self.logits.shape[-1], device=self.logits.device)

    def sample(self, samples: int = 1) -> Tensor:
        """Codes z ∈ {0, 1}^L, shape [samples, *batch, L] (not differentiable)."""
        u = torch.rand(
            (samples, *self.logits.shape), dtype=self.logits.dtype, device=self.logits.device
        )
        return (u < self.probs).to(self.logits.dtype)

    def sufficient_statistics(self, z: Tensor) -> Tensor:
        """ψ(z) = z."""
        return z

    @property
    def natural_parameters(self) -> Tensor:
        return self.logits

    def log_partition(self) -> Tensor:
        return F.softplus(self.logits).sum(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) = ⟨z, ℓ⟩ − Σ softplus(ℓ), summed over latent dimensions."""
        return (z * self.logits).sum(-1) - self.log_partition()

    def entropy(self) -> Tensor:
        return self.entropy_per_dimension().sum(-1)

    def entropy_per_dimension(self) -> Tensor:
        """H(q_j) = softplus(ℓ_j) − σ(ℓ_j)·ℓ_j of every bit, [..., L]."""
        return F.softplus(self.logits) - self.probs * self.logits


@PRIORS.register("uniform-bernoulli")
class UniformBernoulli(Prior):
    """p(z) = 2^−L on {0, 1}^L."""

    continuous = False

    def sample(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.randint(0, 2, (n, self.latent_dim), device=device).float()

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.full(z.shape[:-1], -self.latent_dim * math.log(2.0), device=z.device)
