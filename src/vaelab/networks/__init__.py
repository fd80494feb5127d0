"""Encoder and decoder networks, registered by name."""

from . import conv, mlp
from .blocks import BlockNetwork

__all__ = ["BlockNetwork", "conv", "mlp"]
