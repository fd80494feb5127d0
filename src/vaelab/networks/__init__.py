"""Encoder and decoder networks, registered by name."""

from . import conditioning, conv, mlp
from .blocks import Block, BlockNetwork

__all__ = ["Block", "BlockNetwork", "conditioning", "conv", "mlp"]
