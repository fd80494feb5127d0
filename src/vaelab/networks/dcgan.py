"""DCGAN-style encoder and decoder (Radford, Metz & Chintala, ICLR 2016).

Widths: `channels` = one width per stride-2 layer (DCGAN's 64×64 pair: [64, 128, 256, 512],
doubling); H and W must be divisible by 2^layers. `hidden` = dense widths between the last
feature map and the latent code (DCGAN has none: `hidden = []`).

    encoder  x [C, H, W] → per layer: 4×4 conv, stride 2 → GroupNorm (not after the first
             layer) → LeakyReLU(0.2); flatten → dense `hidden` (Linear + LeakyReLU(0.2))
             → Linear to the latent parameters (the discriminator's last 4×4 convolution
             over the 4×4 map, which is a dense layer)
    decoder  z → dense reversed `hidden` (Linear + ReLU) → project and reshape to
             channels[-1] × H/2^S × W/2^S → GroupNorm → ReLU; per layer, last to first:
             4×4 transposed conv, stride 2 → GroupNorm → ReLU; the last one to k·C channels
             without normalisation or activation (the likelihood maps the output: no tanh)

Weights start from N(0, 0.02²), biases at 0, as in DCGAN. Every conv layer, the
projection and each dense layer is a `Block` (`features` = its channels or units), so
β-conditioning (FiLM, gate) acts after each. Deviation: GroupNorm with one group where
DCGAN has BatchNorm, for the reasons given in `networks/resnet.py` (BatchNorm's batch
statistics in training against running averages over all β in evaluation would break
β-conditioning, and would tie one example's loss to its batch; one group lets the
channel-wise modulation of the block before it through); DCGAN's placement of the
normalisation (none on the encoder's input layer or the decoder's output layer) is kept.
"""

from __future__ import annotations

from torch import nn

from ..registry import NETWORKS
from .blocks import Block, BlockNetwork, mlp_blocks
from .resnet import final_map, group_norm


def _leaky() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2)


def _leaky_blocks(sizes: list[int]) -> list[Block]:
    """Linear + LeakyReLU(0.2) for each consecutive pair of `sizes`."""
    return [Block(nn.Linear(a, b), _leaky(), features=b) for a, b in zip(sizes, sizes[1:])]


def _dcgan_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


@NETWORKS.register("dcgan")
def build_dcgan(
    data_shape: tuple[int, ...],
    encoder_outputs: int,
    latent_dim: int,
    decoder_outputs_per_dim: int,
    hidden: list[int],
    channels: list[int],
    **unused,
) -> tuple[nn.Module, nn.Module]:
    """Encoder x → `encoder_outputs`, decoder z → [k·C, H, W] (see the module docstring)."""
    fh, fw = final_map("dcgan", data_shape, channels)
    c = data_shape[0]
    widths = [channels[-1] * fh * fw, *hidden]

    convs = [
        Block(
            nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
            *([] if i == 0 else [group_norm(c_out)]),
            _leaky(),
            features=c_out,
        )
        for i, (c_in, c_out) in enumerate(zip([c, *channels[:-1]], channels))
    ]
    encoder = BlockNetwork(
        [*convs, nn.Flatten(), *_leaky_blocks(widths)], nn.Linear(widths[-1], encoder_outputs)
    )

    top, up = channels[-1], list(reversed(channels))
    dense = [latent_dim, *reversed(hidden)]
    project = Block(
        nn.Linear(dense[-1], widths[0]),
        nn.Unflatten(-1, (top, fh, fw)),
        group_norm(top),
        nn.ReLU(),
        features=top,
    )
    deconvs = [
        Block(
            nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
            group_norm(c_out),
            nn.ReLU(),
            features=c_out,
        )
        for c_in, c_out in zip(up[:-1], up[1:])
    ]
    decoder = BlockNetwork(
        [*mlp_blocks(dense), project, *deconvs],
        nn.ConvTranspose2d(up[-1], decoder_outputs_per_dim * c, 4, stride=2, padding=1),
    )
    for network in (encoder, decoder):
        network.apply(_dcgan_init)
    return encoder, decoder
