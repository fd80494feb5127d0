"""Convolutional encoder and decoder: stride-2 4×4 convolutions, each halving the image side.

With channels (32, 64) a 28×28 image goes 28 → 14 → 7; with (32, 32, 64, 64) a 64×64 image
goes 64 → 32 → 16 → 8 → 4 (the β-VAE architecture of Higgins et al. 2017). A fully connected
part of widths `hidden` sits between the convolutions and the latent code.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..registry import NETWORKS
from .blocks import Block, BlockNetwork, mlp_blocks


def _conv(c_in: int, c_out: int) -> Block:
    return Block(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU(), features=c_out)


def _deconv(c_in: int, c_out: int) -> Block:
    return Block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU(), features=c_out)


@NETWORKS.register("conv")
def build_conv(
    data_shape: tuple[int, ...],
    encoder_outputs: int,
    latent_dim: int,
    decoder_outputs_per_dim: int,
    hidden: list[int],
    channels: list[int],
    **unused,
) -> tuple[nn.Module, nn.Module]:
    if len(data_shape) != 3:
        raise ConfigError(f"model.network: conv needs images [C, H, W], got shape {data_shape}")
    c, h, w = data_shape
    factor = 2 ** len(channels)
    if h % factor or w % factor:
        raise ConfigError(
            f"model.channels: {len(channels)} stride-2 layers need image sides divisible by "
            f"{factor}, got {h}×{w}"
        )
    fh, fw = h // factor, w // factor
    flat = channels[-1] * fh * fw
    widths = [flat, *hidden]

    encoder = BlockNetwork(
        [
            *(_conv(a, b) for a, b in zip([c, *channels[:-1]], channels)),
            nn.Flatten(),
            *mlp_blocks(widths),
        ],
        nn.Linear(widths[-1], encoder_outputs),
    )

    up = list(reversed(channels))
    decoder = BlockNetwork(
        [
            *mlp_blocks([latent_dim, *reversed(widths)]),
            nn.Unflatten(-1, (up[0], fh, fw)),
            *(_deconv(a, b) for a, b in zip(up[:-1], up[1:])),
        ],
        nn.ConvTranspose2d(up[-1], decoder_outputs_per_dim * c, 4, stride=2, padding=1),
    )
    return encoder, decoder
