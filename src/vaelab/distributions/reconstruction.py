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
    weights: Tensor | None = None  # q(z_s|x) [S, B] of enumerated codes; None: samples (1/S)

    def _expected(self, per_code: Tensor) -> Tensor:
        if self.weights is None:
            return per_code.mean(0)
        return (self.weights * per_code).sum(0)

    @property
    def nll(self) -> Tensor:
        """[B]: E_q[−log p(x|z)] — the Monte-Carlo mean, or exact over enumerated codes."""
        return self._expected(self.nll_samples)

    @property
    def mse(self) -> Tensor:
        return self._expected(self.mse_samples)
