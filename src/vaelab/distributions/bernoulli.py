"""Bernoulli decoder p(x|z) = Π_d Bern(x_d; sigmoid(ℓ_d(z))) on data in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LIKELIHOODS
from .exponential_family import BernoulliEF
from .reconstruction import Reconstruction


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(nn.Module):
    """−log p(x|z) = Σ_d BCE(ℓ_d, x_d); the decoder outputs logits ℓ."""

    outputs_per_dim = 1

    def __init__(self, data_shape: tuple[int, ...], **unused):
        super().__init__()

    family = BernoulliEF()

    def mean(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def natural_parameters(self, output: Tensor, x: Tensor | None = None, condition=None) -> Tensor:
        """η = the logits, flattened over data dimensions [..., D]."""
        return output.flatten(-3)

    def sample(self, output: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(output))

    def pairwise(
        self, x: Tensor, output: Tensor, condition: Tensor | None = None
    ) -> Reconstruction:
        """Terms for every (code k, example b) pair from logits [K, *data] and x [B, *data] by
        matrix products: −log p = Σ_d softplus(ℓ_kd) − x_bd ℓ_kd."""
        logits, x = output.flatten(1), x.flatten(1)
        nll = F.softplus(logits).sum(-1)[:, None] - logits @ x.T
        p = torch.sigmoid(logits)
        sq = (x * x).sum(-1)[None] - 2 * p @ x.T + (p * p).sum(-1)[:, None]
        return Reconstruction(nll, sq / x.shape[1])

    def forward(self, x: Tensor, output: Tensor, condition: Tensor | None = None) -> Reconstruction:
        nll = F.binary_cross_entropy_with_logits(output, x.expand_as(output), reduction="none")
        sq_err = (x - torch.sigmoid(output)) ** 2
        return Reconstruction(nll.flatten(2).sum(-1), sq_err.flatten(2).mean(-1))
