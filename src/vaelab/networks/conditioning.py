"""β-conditioning of a network: every block's output is modulated by ℓ = standardised log β.

A conditioner computes the modulation of all blocks of one network at once (one small
network per encoder/decoder, not one per block: the same function, fewer operations per
step). Both start as the identity, so a freshly conditioned network computes exactly what
the unconditioned one does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import CONDITIONING


def _per_unit(v: Tensor, h: Tensor) -> Tensor:
    """[B, F] → broadcastable against h [B, F] or [B, F, H, W]."""
    return v.view(*v.shape, *([1] * (h.dim() - 2)))


class Conditioner(nn.Module):
    """Maps ℓ [B] to one modulation per block (`forward`) and applies it (`modulate`)."""

    def __init__(self, features: list[int]):
        super().__init__()
        self.features = list(features)

    def forward(self, condition: Tensor) -> list:
        raise NotImplementedError

    def modulate(self, h: Tensor, modulation) -> Tensor:
        raise NotImplementedError


@CONDITIONING.register("film")
class FiLM(Conditioner):
    """h ← h·(1 + 0.1·s(ℓ)) + 0.1·t(ℓ) after every block, s and t from a small MLP of ℓ
    (YOTO, Dosovitskiy & Djolonga, ICLR 2020). Its last layer starts at zero: the identity."""

    def __init__(self, features: list[int], hidden: int = 32):
        super().__init__(features)
        total = sum(self.features)
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 2 * total))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        # 0.1·net(ℓ) + offset = [1 + 0.1·s, 0.1·t]
        self.register_buffer("offset", torch.cat([torch.ones(total), torch.zeros(total)]))

    def forward(self, condition: Tensor) -> list[tuple[Tensor, Tensor]]:
        scale_shift = torch.add(self.offset, self.net(condition[:, None]), alpha=0.1)
        scales, shifts = scale_shift.chunk(2, dim=-1)
        return list(zip(scales.split(self.features, -1), shifts.split(self.features, -1)))

    def modulate(self, h: Tensor, modulation: tuple[Tensor, Tensor]) -> Tensor:
        scale, shift = modulation
        return torch.addcmul(_per_unit(shift, h), h, _per_unit(scale, h))


@CONDITIONING.register("gate")
class Gate(Conditioner):
    """Per-unit gate 2·sigmoid(w·ℓ + b) after every block (Multi-Rate VAE, Bae et al., ICLR
    2023; the factor 2 makes the zero-initialised gate the identity). Gating the output of a
    ReLU block equals gating its pre-activation, since the gate is positive."""

    def __init__(self, features: list[int]):
        super().__init__(features)
        self.weight = nn.Parameter(torch.zeros(sum(self.features)))
        self.bias = nn.Parameter(torch.zeros(sum(self.features)))

    def forward(self, condition: Tensor) -> list[Tensor]:
        gates = 2 * torch.sigmoid(torch.addcmul(self.bias, condition[:, None], self.weight))
        return list(gates.split(self.features, -1))

    def modulate(self, h: Tensor, modulation: Tensor) -> Tensor:
        return h * _per_unit(modulation, h)
