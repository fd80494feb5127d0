"""Estimators of the loss D + β·R and its gradients, registered by name.

Each is a function (model, x, β, ℓ) → LossTerms; the VAE's forward calls the one it was
built with. `reparameterization` serves continuous posteriors, `exact` enumerates small
discrete latent spaces.
"""

from . import discrete, exact, reparameterization
from .terms import LossTerms, ObjectiveTerms

__all__ = ["LossTerms", "ObjectiveTerms", "discrete", "exact", "reparameterization"]
