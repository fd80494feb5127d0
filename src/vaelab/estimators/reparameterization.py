"""The reparameterisation estimator (Kingma & Welling 2014): z = μ + σ·ε, S samples per example."""

from __future__ import annotations

from torch import Tensor

from .base import estimator
from .terms import LossTerms


@estimator("reparameterization", discrete=False, needs_rsample=True)
def reparameterization(model, x: Tensor, beta: Tensor, condition: Tensor | None) -> LossTerms:
    """D ≈ mean over S samples of −log p(x|z), R = analytic KL(q ‖ p)."""
    q = model.encode(x, condition)
    z = q.rsample(model.samples)  # [S, B, L]
    rec = model.likelihood(x, model.decode(z, condition), condition)
    return LossTerms.compose(rec.nll, q, model.prior, beta, rec.mse, rec.sigma)
