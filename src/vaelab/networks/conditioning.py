"""β-conditioning of a network: a modulator after every block, driven by ℓ = standardised log β.

Both modulators start as the identity, so a freshly conditioned network computes exactly
what the unconditioned one does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import CONDITIONING


def _per_unit(v: Tensor, h: Tensor) -> Tensor:
    """[B, F] → broadcastable against h [B, F] or [B, F, H, W]."""
    return v.view(*v.shape, *([1] * (h.dim() - 2)))


@CONDITIONING.register("film")
class FiLM(nn.Module):
    """h ← h·(1 + 0.1·s(ℓ)) + 0.1·t(ℓ), s and t small MLPs (YOTO, Dosovitskiy & Djolonga,
    ICLR 2020). The last layer starts at zero: the identity."""

    def __init__(self, features: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 2 * features))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, h: Tensor, condition: Tensor) -> Tensor:
        scale, shift = self.net(condition[:, None]).chunk(2, dim=-1)
        return h * (1 + 0.1 * _per_unit(scale, h)) + 0.1 * _per_unit(shift, h)


@CONDITIONING.register("gate")
class Gate(nn.Module):
    """Per-unit gate 2·sigmoid(w·ℓ + b) (Multi-Rate VAE, Bae et al., ICLR 2023; the factor 2
    makes the zero-initialised gate the identity). Gating the output of a ReLU block equals
    gating its pre-activation, since the gate is positive."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, h: Tensor, condition: Tensor) -> Tensor:
        gate = 2 * (condition[:, None] * self.weight + self.bias).sigmoid()
        return h * _per_unit(gate, h)
