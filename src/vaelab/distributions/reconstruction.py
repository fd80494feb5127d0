"""What a likelihood reports about one batch of reconstructions."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Reconstruction:
    """Per-example terms of −log p(x|z), averaged over the Monte-Carlo samples of z."""

    nll: Tensor  # [B] −log p(x|z) summed over data dimensions, nats (the distortion)
    mse: Tensor  # [B] squared error of the decoder mean, averaged over data dimensions
    sigma: Tensor | None = None  # σ_x (mean over its entries), detached; None if not Gaussian
