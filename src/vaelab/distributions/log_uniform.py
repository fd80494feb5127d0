"""The distribution of β in a β-conditional VAE: log β ~ Uniform[log a, log b]."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# model.beta_sampling → whether each example draws its own β
PER_EXAMPLE = {"minibatch": False, "example": True}


class LogUniformBeta:
    """log β ~ U[log low, log high], drawn per example (YOTO) or once per minibatch (MR-VAE).

    Networks see ℓ = standardised log β ∈ [−1, 1], the midpoint of the range mapping to 0.
    """

    def __init__(self, low: float, high: float, per_example: bool):
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low ≤ high, got [{low}, {high}]")
        self.low, self.high, self.per_example = low, high, per_example
        self.log_low, self.log_high = math.log(low), math.log(high)

    def sample(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """log β for a batch of n examples: [n] per example, [1] (shared) per minibatch."""
        u = torch.rand(n if self.per_example else 1, device=device)
        return self.log_low + (self.log_high - self.log_low) * u

    def standardise(self, log_beta: Tensor) -> Tensor:
        half = 0.5 * (self.log_high - self.log_low)
        if half == 0:
            return torch.zeros_like(log_beta)
        return (log_beta - (self.log_low + half)) / half
