"""Fully connected encoder and decoder for data of any shape (flattened)."""

from __future__ import annotations

import math

from torch import nn

from ..registry import NETWORKS
from .blocks import BlockNetwork, mlp_blocks


@NETWORKS.register("mlp")
def build_mlp(
    data_shape: tuple[int, ...],
    encoder_outputs: int,
    latent_dim: int,
    decoder_outputs_per_dim: int,
    hidden: list[int],
    **unused,
) -> tuple[nn.Module, nn.Module]:
    """Encoder D → hidden → `encoder_outputs`; decoder latent → reversed hidden → k·D, reshaped."""
    data_dim = math.prod(data_shape)
    channels, *spatial = data_shape
    encoder = BlockNetwork(
        [nn.Flatten(), *mlp_blocks([data_dim, *hidden])],
        nn.Linear(hidden[-1] if hidden else data_dim, encoder_outputs),
    )
    out_shape = (decoder_outputs_per_dim * channels, *spatial)
    widths = [latent_dim, *reversed(hidden)]
    decoder = BlockNetwork(
        mlp_blocks(widths),
        nn.Sequential(nn.Linear(widths[-1], math.prod(out_shape)), nn.Unflatten(-1, out_shape)),
    )
    return encoder, decoder
