"""Models assembled from distribution objects and networks."""

from ..estimators import LossTerms
from .vae import VAE, build_vae

__all__ = ["VAE", "LossTerms", "build_vae"]
