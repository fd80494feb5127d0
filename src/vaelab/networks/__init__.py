"""Encoder and decoder networks, registered by name."""

from . import bow, conditioning, conv, dcgan, mlp, resnet
from .blocks import Block, BlockNetwork

__all__ = ["Block", "BlockNetwork", "bow", "conditioning", "conv", "dcgan", "mlp", "resnet"]
