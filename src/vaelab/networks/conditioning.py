"""β-conditioning of a network: chosen outputs are modulated by ℓ = standardised log β.

A conditioner computes the modulation of all modulated sites of one network at once (one
small network per encoder/decoder, not one per block: the same function, fewer operations
per step). Where the sites are (every block, the blocks next to the latent code, the output
heads: `model.condition_at`) is the network's business (`blocks.BlockNetwork`); a
conditioner only gets their widths. Every conditioner starts as the identity, so a freshly
conditioned network computes exactly what the unconditioned one does.

With one β per minibatch, ℓ is [1]: the conditioner runs on one row and its modulations
[1, F] broadcast over the batch.

Options (constructor argument → `ModelConfig` field, in `config_fields`): `hidden`
(`condition_hidden`, the width of the conditioner's own MLP, not of the main network),
`scale` (`condition_scale`, how strongly the modulation acts: its output scale, which is
also the effective learning-rate factor of the zero-initialised last layer) and, for the
gate, `decoder_form` (`gate_decoder`). `side` is "encoder" or "decoder".
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..registry import CONDITIONING

GATE_FLOOR = 1e-4  # mr-vae decoder gate: 2 − e^a is floored here (gate ≥ 0.01, |∂g/∂a| ≤ 100)


def _per_unit(v: Tensor, h: Tensor) -> Tensor:
    """[B, F] → broadcastable against h [B, F] or [B, F, H, W]."""
    return v.view(*v.shape, *([1] * (h.dim() - 2)))


def _zero_mlp(outputs: int, hidden: int) -> nn.Sequential:
    """ℓ [rows, 1] → [rows, outputs]: Linear–ReLU–Linear, its last layer zero (output 0)."""
    net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, outputs))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class Conditioner(nn.Module):
    """Maps ℓ [R] to one modulation per site (`forward`, rows R) and applies it
    (`modulate`). `config_fields`: constructor argument → `ModelConfig` field."""

    config_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, features: list[int], side: str = "encoder"):
        super().__init__()
        self.features = list(features)
        self.side = side

    def forward(self, condition: Tensor) -> list:
        raise NotImplementedError

    def modulate(self, h: Tensor, modulation) -> Tensor:
        raise NotImplementedError


@CONDITIONING.register("film")
class FiLM(Conditioner):
    """h ← h·(1 + k·s(ℓ)) + k·t(ℓ) at every site, s and t from a small MLP of ℓ (YOTO,
    Dosovitskiy & Djolonga, ICLR 2020), k = `scale` (0.1), `hidden` units (32). Its last
    layer starts at zero: the identity."""

    config_fields = {"hidden": "condition_hidden", "scale": "condition_scale"}

    def __init__(
        self,
        features: list[int],
        side: str = "encoder",
        hidden: int | None = None,
        scale: float | None = None,
    ):
        super().__init__(features, side)
        total = sum(self.features)
        self.scale = 0.1 if scale is None else scale
        self.net = _zero_mlp(2 * total, 32 if hidden is None else hidden)
        # k·net(ℓ) + offset = [1 + k·s, k·t]
        self.register_buffer("offset", torch.cat([torch.ones(total), torch.zeros(total)]))

    def forward(self, condition: Tensor) -> list[tuple[Tensor, Tensor]]:
        scale_shift = torch.add(self.offset, self.net(condition[:, None]), alpha=self.scale)
        scales, shifts = scale_shift.chunk(2, dim=-1)
        return list(zip(scales.split(self.features, -1), shifts.split(self.features, -1)))

    def modulate(self, h: Tensor, modulation: tuple[Tensor, Tensor]) -> Tensor:
        scale, shift = modulation
        return torch.addcmul(_per_unit(shift, h), h, _per_unit(scale, h))


GATE_DECODERS = ("sigmoid", "mr-vae")  # `decoder_form`; config.py declares the same names


@CONDITIONING.register("gate")
class Gate(Conditioner):
    """Per-unit gate g(a), a = k·(w·ℓ + b) (or k·MLP(ℓ) with `hidden` units), at every site
    (Multi-Rate VAE, Bae et al., ICLR 2023: the response hypernetwork scales each layer's
    pre-activation per unit by σ(w·η + b), η the log KL weight). Gating the output of a ReLU
    block equals gating its pre-activation, since the gate is positive. k = `scale` (1).

    g is 2·sigmoid(a) (the factor 2 makes the zero-initialised gate the identity) in the
    encoder, and in the decoder too unless `decoder_form = "mr-vae"`: the paper's decoder
    activation, the linear VAE's exact response of the decoder weights to β,
    σ(a) = ReLU(1 − e^a)^{1/2} (DESIGN §1b), here as √2·ReLU(1 − e^{a − log 2})^{1/2} =
    ReLU(2 − e^a)^{1/2}: the same family (a shifted, a constant factor the next layer
    absorbs), 1 at a = 0, so still the identity at initialisation; it switches a unit off
    (g → 0) for a ≥ log 2, where 2 − e^a is floored at `GATE_FLOOR` to keep the gradient
    finite."""

    config_fields = {
        "hidden": "condition_hidden",
        "scale": "condition_scale",
        "decoder_form": "gate_decoder",
    }

    def __init__(
        self,
        features: list[int],
        side: str = "encoder",
        hidden: int | None = None,
        scale: float | None = None,
        decoder_form: str = "sigmoid",
    ):
        super().__init__(features, side)
        if decoder_form not in GATE_DECODERS:
            raise ValueError(f"unknown gate decoder form {decoder_form!r}")
        total = sum(self.features)
        self.scale = 1.0 if scale is None else scale
        self.form = decoder_form if side == "decoder" else "sigmoid"
        if hidden is None:  # MR-VAE's affine map of ℓ
            self.weight = nn.Parameter(torch.zeros(total))
            self.bias = nn.Parameter(torch.zeros(total))
            self.net = None
        else:
            self.net = _zero_mlp(total, hidden)

    def forward(self, condition: Tensor) -> list[Tensor]:
        if self.net is None:
            a = torch.addcmul(self.bias, condition[:, None], self.weight)
        else:
            a = self.net(condition[:, None])
        if self.scale != 1:
            a = a * self.scale
        if self.form == "sigmoid":
            gates = 2 * torch.sigmoid(a)
        else:
            gates = torch.sqrt(torch.clamp(2 - torch.exp(a), min=GATE_FLOOR))
        return list(gates.split(self.features, -1))

    def modulate(self, h: Tensor, modulation: Tensor) -> Tensor:
        return h * _per_unit(modulation, h)
