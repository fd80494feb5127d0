"""Encoders and decoders for bag-of-words documents (Shekhovtsov et al., ICLR 2022, §4.3).

Encoders (to the Bernoulli logits of the code):
  e1  linear on word counts          — the consistent set's encoder (Wᵀx + b, Theorem 1)
  e2  2 hidden ReLU layers of 512 on word frequencies x/n (as VDSH / NASH)
  e3  linear on word frequencies
Decoder: word logits from the code through len(hidden) ReLU layers (depth 0, 1, 2 of 512).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..registry import NETWORKS
from .blocks import BlockNetwork, mlp_blocks

E2_HIDDEN = [512, 512]


class Frequencies(nn.Module):
    """Counts [B, V] → frequencies x / n (a document with no words stays zero)."""

    def forward(self, x: Tensor) -> Tensor:
        return x / x.sum(-1, keepdim=True).clamp_min(1.0)


def _decoder(latent_dim: int, hidden: list[int], vocab: int) -> BlockNetwork:
    widths = [latent_dim, *hidden]
    return BlockNetwork(mlp_blocks(widths), nn.Linear(widths[-1], vocab))


def _builder(frequencies: bool, encoder_hidden: list[int]):
    def build(data_shape, encoder_outputs, latent_dim, decoder_outputs_per_dim, hidden, **unused):
        (vocab,) = data_shape
        widths = [vocab, *encoder_hidden]
        first = [Frequencies()] if frequencies else []
        encoder = BlockNetwork(
            [*first, *mlp_blocks(widths)], nn.Linear(widths[-1], encoder_outputs)
        )
        return encoder, _decoder(latent_dim, list(hidden), vocab * decoder_outputs_per_dim)

    return build


NETWORKS.register("e1")(_builder(frequencies=False, encoder_hidden=[]))
NETWORKS.register("e2")(_builder(frequencies=True, encoder_hidden=E2_HIDDEN))
NETWORKS.register("e3")(_builder(frequencies=True, encoder_hidden=[]))
