"""Distribution objects: decoders' likelihoods, posteriors, priors and their KL."""

from .base import Likelihood, Posterior, Prior
from .bernoulli import BernoulliLikelihood
from .bernoulli_latent import FactorisedBernoulli, UniformBernoulli, all_binary_codes
from .gaussian import GaussianLikelihood, soft_lower_bound
from .kl import kl_divergence, kl_per_dimension, register_kl
from .multinomial import MultinomialLikelihood
from .normal import DiagonalGaussian, StandardNormal, gaussian_log_density
from .reconstruction import Reconstruction

__all__ = [
    "BernoulliLikelihood",
    "DiagonalGaussian",
    "FactorisedBernoulli",
    "GaussianLikelihood",
    "Likelihood",
    "MultinomialLikelihood",
    "Posterior",
    "Prior",
    "Reconstruction",
    "StandardNormal",
    "UniformBernoulli",
    "all_binary_codes",
    "gaussian_log_density",
    "kl_divergence",
    "kl_per_dimension",
    "register_kl",
    "soft_lower_bound",
]
