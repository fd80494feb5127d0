"""Exponential families in the form p(x; η) = h(x) exp(⟨ν(x), η⟩ − A(η))  (DESIGN §1c).

Each family gives the sufficient statistics ν(x), the log-partition A(η) and the log base
measure log h(x) over the last dimension of its arguments, so that
    log p(x; η) = ⟨ν(x), η⟩ − A(η) + log h(x).
This is the form in which Theorem 1 of Shekhovtsov, Schlesinger & Flach (ICLR 2022) states
the consistent set: decoder natural parameters f(z) = Wψ(z) + a, encoder g(x) = Wᵀν(x) + b.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


class ExponentialFamily:
    """A family over vectors (the last dimension); subclasses give ν, A and log h."""

    def sufficient_statistics(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def log_partition(self, eta: Tensor) -> Tensor:
        raise NotImplementedError

    def log_base_measure(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor, eta: Tensor) -> Tensor:
        nu = self.sufficient_statistics(x)
        return (nu * eta).sum(-1) - self.log_partition(eta) + self.log_base_measure(x)


class GaussianEF(ExponentialFamily):
    """Independent Gaussians N(x_d; μ_d, σ_d²): ν(x) = (x, x²), η = (μ/σ², −1/(2σ²)),
    A(η) = Σ_d [−η1²/(4η2) − ½ log(−2η2)], h(x) = (2π)^(−D/2)."""

    @staticmethod
    def natural_parameters(mean: Tensor, log_sigma: Tensor) -> Tensor:
        precision = torch.exp(-2.0 * log_sigma).expand_as(mean)
        return torch.cat([mean * precision, -0.5 * precision], dim=-1)

    @staticmethod
    def mean_and_log_sigma(eta: Tensor) -> tuple[Tensor, Tensor]:
        eta1, eta2 = eta.chunk(2, dim=-1)
        return -eta1 / (2 * eta2), -0.5 * torch.log(-2 * eta2)

    def sufficient_statistics(self, x: Tensor) -> Tensor:
        return torch.cat([x, x * x], dim=-1)

    def log_partition(self, eta: Tensor) -> Tensor:
        eta1, eta2 = eta.chunk(2, dim=-1)
        return (-(eta1**2) / (4 * eta2) - 0.5 * torch.log(-2 * eta2)).sum(-1)

    def log_base_measure(self, x: Tensor) -> Tensor:
        return torch.full(
            x.shape[:-1], -0.5 * LOG_2PI * x.shape[-1], dtype=x.dtype, device=x.device
        )


class BernoulliEF(ExponentialFamily):
    """Independent Bernoulli: ν(x) = x, η = logits, A(η) = Σ softplus(η), h = 1."""

    def sufficient_statistics(self, x: Tensor) -> Tensor:
        return x

    def log_partition(self, eta: Tensor) -> Tensor:
        return F.softplus(eta).sum(-1)

    def log_base_measure(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


class CategoricalEF(ExponentialFamily):
    """One of K categories (x one-hot): ν(x) = x, η = logits, A(η) = logsumexp(η), h = 1."""

    def sufficient_statistics(self, x: Tensor) -> Tensor:
        return x

    def log_partition(self, eta: Tensor) -> Tensor:
        return torch.logsumexp(eta, dim=-1)

    def log_base_measure(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)


class MultinomialEF(ExponentialFamily):
    """Counts x over K words with n = Σ x fixed by the data: ν(x) = x, η = logits,
    A(η) = n·logsumexp(η) (n is read from x: the family is conditional on the length),
    log h(x) = log n! − Σ_k log x_k! (the multinomial coefficient)."""

    def sufficient_statistics(self, x: Tensor) -> Tensor:
        return x

    def log_partition(self, eta: Tensor, length: Tensor | None = None) -> Tensor:
        if length is None:
            raise ValueError("the multinomial log-partition needs the document length n")
        return length * torch.logsumexp(eta, dim=-1)

    def log_base_measure(self, x: Tensor) -> Tensor:
        return torch.lgamma(x.sum(-1) + 1) - torch.lgamma(x + 1).sum(-1)

    def log_prob(self, x: Tensor, eta: Tensor) -> Tensor:
        length = x.sum(-1)
        return (x * eta).sum(-1) - self.log_partition(eta, length) + self.log_base_measure(x)
