"""ResNet encoder and decoder for 64×64 images (the two-stage VAE / MR-VAE line of work).

Widths: `channels` = one width per stage (e.g. [32, 64, 128, 256], doubling as in the
papers); every stage halves the image side, so H and W must be divisible by 2^stages.
`hidden` = widths of the dense layers between the last feature map and the latent code.

    encoder  x [C, H, W]
             per stage i: downsample (3×3 conv, stride 2, to channels[i]) → residual unit
             ReLU → flatten → dense `hidden` (Linear + ReLU) → Linear
    decoder  z → dense reversed `hidden` → Linear + ReLU to channels[-1]·(H/2^S)·(W/2^S)
             per stage i, last to first: residual unit → upsample (4×4 transposed conv,
             stride 2, to channels[i-1]; channels[0] for the first stage)
             ReLU → 3×3 conv to k·C (k = the likelihood's outputs per dimension)

A residual unit is x + F(x), F = norm → ReLU → 3×3 conv → norm → ReLU → 3×3 conv
(pre-activation, He et al. 2016). Every downsample, residual unit, upsample and dense layer
is a `Block` whose `features` are its channels, so β-conditioning (FiLM, gate) modulates
each of them channel-wise. A block's output always reaches the next block unnormalised
(through the identity skip or a convolution), and the closing norm of pre-activation
ResNets is left out, so no modulation is normalised away.

Followed: the ResNet of Dai & Wipf's two-stage VAE (ICLR 2019; github daib13/TwoStageVAE,
network/util.py `res_block`, `scale_block`, `downsample`, `upsample` and the `Resnet`
class in network/two_stage_vae_model.py; its CelebA run: 4 scales, base width 32, dense
width 512): pre-activation units of two 3×3 convolutions with a skip, 3×3 stride-2
downsampling between scales with the width doubling, a dense part to the latent
parameters, the decoder mirrored with stride-2 transposed convolutions and a final 3×3
convolution. Deviations, each deliberate:

- `norm` = GroupNorm with one group (Wu & He 2018; a LayerNorm over channels and
  positions) instead of BatchNorm. BatchNorm normalises by the statistics of the batch in
  training and by running averages in evaluation. In a β-conditional model trained with
  one β per minibatch, each batch's statistics belong to one β while the running averages
  mix all β: evaluated at a given β the network would not compute what it was trained to
  (and per-example β mixes β within a batch). It would also make one example's loss
  depend on the rest of its batch, so an evaluation (−ELBO, IWAE, AIS with repeated
  copies of x) would not be the density the model defines — the same reason the optimal
  σ_x modes freeze σ_x at evaluation. GroupNorm is per example and identical in training
  and evaluation. One group, not 32: a group of one channel (InstanceNorm) removes a
  per-channel scale and shift exactly, so on the residual branch it would cancel the FiLM
  or gate modulation of the block before it; one group removes only the example's overall
  mean and scale.
- Identity skips (as in He et al. and MR-VAE's CelebA ResNet, github pomonam/mr-vae)
  instead of TwoStageVAE's 3×3 convolution on the shortcut: the width never changes
  inside a unit.
- Each stage downsamples first and ends at H/2^S, flattened into the dense part (as
  MR-VAE's CelebA ResNet, whose encoder reaches 4×4), rather than a stride-1 stem, a first
  unit at full resolution and global average pooling; plain dense `hidden` layers instead
  of TwoStageVAE's residual dense block. The decoder starts from the same H/2^S map (the
  mirror of the encoder), not from 2×2.
- 4×4 transposed convolutions (kernel divisible by the stride: no uneven overlap) for
  TwoStageVAE's 3×3; no sigmoid on the output: the likelihood maps the decoder's output.
- `units` residual units per stage (TwoStageVAE's `block_per_scale`, default 1): a keyword
  of the builder, not a config field.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import NETWORKS
from .blocks import Block, BlockNetwork, mlp_blocks


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with one group: per example, over channels and positions (batch-independent,
    and channel-wise modulations pass through it; see the module docstring)."""
    return nn.GroupNorm(1, channels)


def final_map(network: str, data_shape: tuple[int, ...], channels: list[int]) -> tuple[int, int]:
    """(H, W) / 2^stages of an image network's last feature map, or a one-line ConfigError
    for data that are not images, no stages, or sides the stages do not divide."""
    if len(data_shape) != 3:
        raise ConfigError(
            f"model.network: {network} needs images [C, H, W], got shape {data_shape}"
        )
    if not channels:
        raise ConfigError(f"model.channels: {network} needs at least one stage width")
    _, h, w = data_shape
    factor = 2 ** len(channels)
    if h % factor or w % factor:
        raise ConfigError(
            f"model.channels: {network}'s {len(channels)} stride-2 stages need image sides "
            f"divisible by {factor}, got {h}×{w}"
        )
    return h // factor, w // factor


def _conv3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class ResidualUnit(Block):
    """x + F(x), F = norm → ReLU → 3×3 conv → norm → ReLU → 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__(
            group_norm(channels),
            nn.ReLU(),
            _conv3(channels, channels),
            group_norm(channels),
            nn.ReLU(),
            _conv3(channels, channels),
            features=channels,
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


@NETWORKS.register("resnet")
def build_resnet(
    data_shape: tuple[int, ...],
    encoder_outputs: int,
    latent_dim: int,
    decoder_outputs_per_dim: int,
    hidden: list[int],
    channels: list[int],
    units: int = 1,
    **unused,
) -> tuple[nn.Module, nn.Module]:
    """Encoder x → `encoder_outputs`, decoder z → [k·C, H, W] (see the module docstring)."""
    fh, fw = final_map("resnet", data_shape, channels)
    c = data_shape[0]
    widths = [channels[-1] * fh * fw, *hidden]

    down = []
    for c_in, c_out in zip([c, *channels[:-1]], channels):
        down += [Block(_conv3(c_in, c_out, stride=2), features=c_out)]
        down += [ResidualUnit(c_out) for _ in range(units)]
    encoder = BlockNetwork(
        [*down, nn.ReLU(), nn.Flatten(), *mlp_blocks(widths)],
        nn.Linear(widths[-1], encoder_outputs),
    )

    up = []
    for c_in, c_out in zip(reversed(channels), [*reversed(channels[:-1]), channels[0]]):
        up += [ResidualUnit(c_in) for _ in range(units)]
        up += [Block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), features=c_out)]
    decoder = BlockNetwork(
        [
            *mlp_blocks([latent_dim, *reversed(widths)]),
            nn.Unflatten(-1, (channels[-1], fh, fw)),
            *up,
        ],
        nn.Sequential(nn.ReLU(), _conv3(channels[0], decoder_outputs_per_dim * c)),
    )
    return encoder, decoder
