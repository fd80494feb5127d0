"""The distribution of β in a β-conditional VAE: a law of log β on [log a, log b] and a way
of drawing it for a minibatch.

Write u = (log β − log a) / (log b − log a) ∈ [0, 1] (the position of log β in the range;
networks see ℓ = 2u − 1 ∈ [−1, 1]). The laws, by name (`model.beta_law`), as densities and
CDFs of u (the density of log β is that of u divided by log b − log a):

- `log-uniform`: p(u) = 1, F(u) = u: log β ~ U[log a, log b] (YOTO, MR-VAE).
- `tilted`: a truncated exponential of u with concentration c = `model.beta_tilt` > 0,
  p(u) = c·e^{−cu} / (1 − e^{−c}), F(u) = (1 − e^{−cu}) / (1 − e^{−c}): more mass at the
  small-β end, the density at β = a being e^c times the one at β = b (c → 0: log-uniform).

Each law is drawn by its inverse CDF, u = F⁻¹(v) with v ∈ [0, 1], and the schemes
(`model.beta_sampling`) differ in the v of a batch of n examples:

- `minibatch`: one v ~ U[0, 1] for the whole batch (MR-VAE): β [1], shared;
- `example`: n independent v ~ U[0, 1] (YOTO): β [n];
- `stratified`: one v in each of the n strata [k/n, (k+1)/n) of [0, 1], v_k = (k + w_k)/n
  with w_k ~ U[0, 1] independent, given to the examples in a random order: β [n]. Every
  example's β has the law's marginal exactly, and the batch covers the range evenly (one β
  per 1/n of the law's mass), so a batch's mean over β varies less than with `example`.

`PER_EXAMPLE` says which schemes give each example its own β (so σ modes fitted to a whole
batch, and free bits, refuse them); config.py's first pass declares these names
(`BETA_SAMPLINGS`, `BETA_LAWS`; tests keep them equal).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# model.beta_sampling → whether each example draws its own β
PER_EXAMPLE = {"minibatch": False, "example": True, "stratified": True}
STRATIFIED = {"minibatch": False, "example": False, "stratified": True}
# model.beta_law → whether it takes the concentration model.beta_tilt
TAKES_TILT = {"log-uniform": False, "tilted": True}
DEFAULT_TILT = 2.0  # `tilted` without model.beta_tilt: 7.4× the density at a as at b


class LogUniformBeta:
    """log β on [log low, log high] by its law (`tilt` = 0: log-uniform, c > 0: tilted
    towards `low`), drawn once per minibatch, per example or stratified over the batch
    (see the module docstring).

    Networks see ℓ = standardised log β ∈ [−1, 1], the midpoint of the range mapping to 0.
    """

    def __init__(
        self,
        low: float,
        high: float,
        per_example: bool,
        *,
        stratified: bool = False,
        tilt: float = 0.0,
    ):
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low ≤ high, got [{low}, {high}]")
        if tilt < 0:
            raise ValueError(f"need a tilt c ≥ 0, got {tilt}")
        if stratified and not per_example:
            raise ValueError("stratified β is drawn per example")
        self.low, self.high, self.per_example = low, high, per_example
        self.stratified, self.tilt = stratified, tilt
        self.log_low, self.log_high = math.log(low), math.log(high)

    def quantile(self, v: Tensor) -> Tensor:
        """u = F⁻¹(v) of the law: v itself (log-uniform), −log(1 − v·(1 − e^{−c}))/c (tilted)."""
        if self.tilt == 0:
            return v
        return -torch.log1p(v * math.expm1(-self.tilt)) / self.tilt

    def cdf(self, u: Tensor) -> Tensor:
        """F(u) of the law, u ∈ [0, 1] the position of log β in the range."""
        if self.tilt == 0:
            return u
        return torch.expm1(-self.tilt * u) / math.expm1(-self.tilt)

    def sample(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """log β for a batch of n examples: [n] per example, [1] (shared) per minibatch."""
        if not self.per_example:
            v = torch.rand(1, device=device)
        elif self.stratified:
            strata = torch.randperm(n, device=device).to(torch.float32)
            v = (strata + torch.rand(n, device=device)) / n
        else:
            v = torch.rand(n, device=device)
        u = self.quantile(v)
        return self.log_low + (self.log_high - self.log_low) * u

    def standardise(self, log_beta: Tensor) -> Tensor:
        half = 0.5 * (self.log_high - self.log_low)
        if half == 0:
            return torch.zeros_like(log_beta)
        return (log_beta - (self.log_low + half)) / half


def beta_prior(
    low: float, high: float, sampling: str, law: str, tilt: float | None
) -> LogUniformBeta:
    """The β distribution of config names `model.beta_sampling` and `model.beta_law`
    (`tilt`: model.beta_tilt, None: `DEFAULT_TILT` for a law that takes one)."""
    c = (DEFAULT_TILT if tilt is None else tilt) if TAKES_TILT[law] else 0.0
    return LogUniformBeta(
        low, high, per_example=PER_EXAMPLE[sampling], stratified=STRATIFIED[sampling], tilt=c
    )
