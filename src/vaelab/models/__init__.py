"""Models assembled from distribution objects and networks."""

from .vae import VAE, LossTerms, build_vae

__all__ = ["VAE", "LossTerms", "build_vae"]
