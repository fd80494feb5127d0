"""The objectives harmoniums are fitted by, as modules for the one trainer: forward(batch of
visible data x [B, D]) → `ObjectiveTerms` with the per-example loss.

* `ExactLikelihood`: −log p(x) = F(x) + log Z, with log Z enumerated (≤ 16 units in a layer)
  and differentiated through — maximum likelihood.
* `ContrastiveDivergence`: CD-k (Hinton 2002), k Gibbs sweeps started at the minibatch, or
  persistent CD (Tieleman 2008), k sweeps continuing chains carried from step to step. The
  gradient comes from the free-energy trick: with the model samples x̃ held fixed,

      loss_i = F(x_i) − (1/M) Σ_j F(x̃_j),

  whose gradient is the CD/PCD estimate of −∇ log p(x_i) (∇ log Z ≈ −mean_j ∇F(x̃_j)). The
  persistent chains are a registered buffer, so a checkpoint holds them and a resumed fit
  continues them. The Gibbs sweeps draw from the global RNG, which the trainer seeds per step.

Both log the exact log-likelihood of the batch, before the update, as `log_likelihood`
(always for the exact objective; with `track_likelihood` for CD).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..estimators import ObjectiveTerms
from .harmonium import Harmonium


class ExactLikelihood(nn.Module):
    """Mean negative exact log-likelihood of a harmonium whose log Z is enumerable."""

    def __init__(self, rbm: Harmonium):
        super().__init__()
        if not rbm.enumerable:
            raise ValueError(
                "the exact likelihood needs an enumerable log Z (≤ 16 units); use CD or PCD"
            )
        self.rbm = rbm

    def forward(self, x: Tensor) -> ObjectiveTerms:
        log_likelihood = self.rbm.log_likelihood(x)
        return ObjectiveTerms(-log_likelihood, {"log_likelihood": log_likelihood})


class ContrastiveDivergence(nn.Module):
    """CD-k, or PCD-k when `chains` (the persistent chains' initial states [M, D]) are given."""

    def __init__(
        self,
        rbm: Harmonium,
        k: int = 1,
        chains: Tensor | None = None,
        track_likelihood: bool = False,
    ):
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.rbm, self.k, self.track_likelihood = rbm, k, track_likelihood
        self.register_buffer("chains", None if chains is None else chains.clone())

    @property
    def persistent(self) -> bool:
        return self.chains is not None

    def forward(self, x: Tensor) -> ObjectiveTerms:
        negative = self.rbm.gibbs(self.chains if self.persistent else x, self.k)
        if self.persistent:
            self.chains.copy_(negative)
        loss = self.rbm.free_energy(x) - self.rbm.free_energy(negative).mean()
        terms = {}
        if self.track_likelihood:
            with torch.no_grad():
                terms["log_likelihood"] = self.rbm.log_likelihood(x)
        return ObjectiveTerms(loss, terms)
