"""Bernoulli decoder p(x|z) = Π_d Bern(x_d; sigmoid(ℓ_d(z))) on data in [0, 1]."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LIKELIHOODS
from .base import Likelihood
from .exponential_family import BernoulliEF
from .reconstruction import Reconstruction


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """−log p(x|z) = Σ_d BCE(ℓ_d, x_d); the decoder outputs logits ℓ."""

    family = BernoulliEF()
    binary_data = True

    def mean(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def natural_parameters(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """η = the logits, flattened over data dimensions [..., D]."""
        return output.flatten(output.dim() - len(self.data_shape))

    def sample(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(output))

    def pairwise(self, x, output, condition=None, weights=None) -> Reconstruction:
        """Terms for every (code k, example b) pair from logits [K, *data] and x [B, *data] by
        matrix products: −log p = Σ_d softplus(ℓ_kd) − x_bd ℓ_kd."""
        logits, x = output.flatten(1), x.flatten(1)
        nll = F.softplus(logits).sum(-1)[:, None] - logits @ x.T
        p = torch.sigmoid(logits)
        sq = (x * x).sum(-1)[None] - 2 * p @ x.T + (p * p).sum(-1)[:, None]
        return Reconstruction(nll, sq / x.shape[1], weights=weights)

    def forward(self, x, output, condition=None, weights=None) -> Reconstruction:
        nll = F.binary_cross_entropy_with_logits(output, x.expand_as(output), reduction="none")
        sq_err = (x - torch.sigmoid(output)) ** 2
        return Reconstruction(nll.flatten(2).sum(-1), sq_err.flatten(2).mean(-1), weights=weights)

    def describe(self, condition: Tensor | None = None) -> dict[str, Any]:
        return {"likelihood": self.registered_name}
