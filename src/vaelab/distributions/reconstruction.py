"""What a likelihood reports about one batch of reconstructions."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Reconstruction:
    """Terms of −log p(x|z) for S codes z per example: [S, B] each."""

    nll_samples: Tensor  # −log p(x|z) summed over data dimensions, nats
    mse_samples: Tensor  # squared error of the decoder mean, averaged over data dimensions
    sigma: Tensor | None = None  # σ_x (mean over its entries), detached; None if not Gaussian

    @property
    def nll(self) -> Tensor:
        """[B]: the Monte-Carlo estimate of the distortion E_q[−log p(x|z)]."""
        return self.nll_samples.mean(0)

    @property
    def mse(self) -> Tensor:
        return self.mse_samples.mean(0)
