"""Gaussian decoder p(x|z) = N(x; μ(z), σ_x²) with the six σ_x modes of DESIGN §1a.

Distortion per example (nats), D data dimensions:
    D(x) = E_q[ Σ_d (x_d − μ_d)² / (2σ_d²) + log σ_d ] + (D/2) log 2π.
With σ shared this is E_q‖x − μ‖²/(2σ²) + (D/2) log(2πσ²). The classic β-VAE objective
Σ(x − μ)² + β·KL is the `fixed` mode with σ² = β/2 and β = 1 (up to the factor β = 2σ²).

The estimated σ_x (every mode but `fixed`) is bounded below softly, as in the σ-VAE
(Rybkin et al. 2021): log σ ← m + softplus(log σ − m), m = `log_sigma_min`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LIKELIHOODS, SIGMA_MODES
from .exponential_family import GaussianEF
from .normal import LOG_2PI, gaussian_log_density
from .reconstruction import Reconstruction


def soft_lower_bound(log_sigma: Tensor, low: float) -> Tensor:
    """softclip(log σ, low) = low + softplus(log σ − low): smooth, > low, ≈ log σ above it."""
    return low + F.softplus(log_sigma - low)


def mean_over_dims(t: Tensor, first: int) -> Tensor:
    """Mean over all dimensions from `first` on, keeping them as size 1 for broadcasting."""
    return t.mean(dim=tuple(range(first, t.dim())), keepdim=True)


# --- σ_x modes: each returns log σ broadcastable to the [S, B, *data] reconstruction ---------


class SigmaMode(nn.Module):
    extra_outputs = 0  # decoder outputs per data dimension besides the mean
    needs_data = False  # σ is computed from the reconstruction error of a batch
    needs_condition = False  # σ is a function of β (β-conditional models only)

    def __init__(self, data_shape: tuple[int, ...], sigma: float, log_sigma_min: float):
        super().__init__()
        self.log_sigma_min = log_sigma_min

    def log_sigma(self, sq_err: Tensor, extra: Tensor | None, condition: Tensor | None) -> Tensor:
        """log σ for squared errors [S, B, *data], the decoder's extra head (or None) and the
        networks' condition ℓ [B] (β-conditional models; else None)."""
        raise NotImplementedError


@SIGMA_MODES.register("fixed")
class FixedSigma(SigmaMode):
    """A constant σ_x = c (not bounded: the classic β-VAE with β = 2c²)."""

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.register_buffer("value", torch.tensor(math.log(sigma)))

    def log_sigma(self, sq_err, extra, condition):
        return self.value


@SIGMA_MODES.register("learned-shared")
class LearnedSharedSigma(SigmaMode):
    """One learned scalar log σ_x (σ-VAE)."""

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.raw = nn.Parameter(torch.tensor(math.log(sigma)))

    def log_sigma(self, sq_err, extra, condition):
        return soft_lower_bound(self.raw, self.log_sigma_min)


@SIGMA_MODES.register("learned-pixel")
class LearnedPixelSigma(SigmaMode):
    """One learned log σ_x per data dimension."""

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.raw = nn.Parameter(torch.full(tuple(data_shape), math.log(sigma)))

    def log_sigma(self, sq_err, extra, condition):
        return soft_lower_bound(self.raw, self.log_sigma_min)


@SIGMA_MODES.register("optimal-shared")
class OptimalSharedSigma(SigmaMode):
    """σ_x² = mean squared error over the batch (analytic optimum, gradient kept); in a
    β-conditional model, over the examples of the batch that share a β."""

    needs_data = True

    def log_sigma(self, sq_err, extra, condition):
        if condition is None or len(condition) == 1:
            mse = sq_err.mean()
        else:  # the optimum within each group of examples sharing one β
            per_example = mean_over_dims(sq_err.mean(0, keepdim=True), 2).flatten()
            _, group = torch.unique(condition, return_inverse=True)
            total = torch.zeros(int(group.max()) + 1, dtype=sq_err.dtype, device=sq_err.device)
            total = total.index_add(0, group, per_example)
            count = torch.bincount(group, minlength=len(total)).to(sq_err.dtype)
            mse = (total / count)[group].view(1, -1, *([1] * (sq_err.dim() - 2)))
        return soft_lower_bound(0.5 * torch.log(mse.clamp_min(1e-12)), self.log_sigma_min)


@SIGMA_MODES.register("optimal-image")
class OptimalImageSigma(SigmaMode):
    """σ_i² = MSE of example i (over samples of z and dimensions): D = (D/2)(1 + log 2π MSE_i)."""

    needs_data = True

    def log_sigma(self, sq_err, extra, condition):
        mse = mean_over_dims(sq_err.mean(0, keepdim=True), 2).clamp_min(1e-12)
        return soft_lower_bound(0.5 * torch.log(mse), self.log_sigma_min)


@SIGMA_MODES.register("amortized")
class AmortizedSigma(SigmaMode):
    """log σ_x(z) per data dimension from a second decoder head (heteroscedastic)."""

    extra_outputs = 1

    def log_sigma(self, sq_err, extra, condition):
        return soft_lower_bound(extra, self.log_sigma_min)


@SIGMA_MODES.register("learned-beta")
class LearnedBetaSigma(SigmaMode):
    """log σ_x = a small MLP of ℓ = standardised log β, shared over data dimensions: the
    decoder variance of a β-conditional model follows β (needs model.conditioning)."""

    needs_condition = True

    def __init__(self, data_shape, sigma, log_sigma_min, hidden: int = 32):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, math.log(sigma))

    def log_sigma(self, sq_err, extra, condition):
        if condition is None:
            raise ValueError("σ mode 'learned-beta' needs the β condition")
        raw = self.net(condition[:, None]).view(1, -1, *([1] * (sq_err.dim() - 2)))
        return soft_lower_bound(raw, self.log_sigma_min)


# --- the likelihood ------------------------------------------------------------------------


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(nn.Module):
    """N(x; μ(z), σ_x²), σ_x by the chosen mode; the decoder outputs μ (and log σ if amortized)."""

    def __init__(
        self,
        data_shape: tuple[int, ...],
        sigma_mode: str = "learned-shared",
        sigma: float = 1.0,
        log_sigma_min: float = -6.0,
        **unused,
    ):
        super().__init__()
        self.sigma_mode = SIGMA_MODES.get(sigma_mode)(tuple(data_shape), sigma, log_sigma_min)
        self.outputs_per_dim = 1 + self.sigma_mode.extra_outputs

    def split(self, output: Tensor) -> tuple[Tensor, Tensor | None]:
        """Decoder output [..., k·C, H, W] → mean [..., C, H, W] and the extra head (or None)."""
        if self.outputs_per_dim == 1:
            return output, None
        mean, extra = output.chunk(2, dim=-3)
        return mean, extra

    family = GaussianEF()

    def mean(self, output: Tensor) -> Tensor:
        return self.split(output)[0]

    def natural_parameters(
        self, output: Tensor, x: Tensor | None = None, condition: Tensor | None = None
    ) -> Tensor:
        """η = (μ/σ², −1/(2σ²)) per data dimension, flattened [..., 2D]. The optimal σ modes
        need the data x their σ is the optimum for."""
        mean, extra = self.split(output)
        if self.sigma_mode.needs_data and x is None:
            raise ValueError("this σ mode is defined by a batch of data: pass x")
        sq_err = (x - mean) ** 2 if x is not None else torch.zeros_like(mean)
        log_sigma = self.sigma_mode.log_sigma(sq_err, extra, condition)
        return GaussianEF.natural_parameters(
            mean.flatten(-3), log_sigma.expand_as(mean).flatten(-3)
        )

    def sample(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """x ~ p(x|z). The optimal modes have no σ without data: they return the mean."""
        mean, extra = self.split(output)
        if self.sigma_mode.needs_data:
            return mean
        log_sigma = self.sigma_mode.log_sigma(torch.zeros_like(mean), extra, condition)
        return mean + torch.exp(log_sigma) * torch.randn_like(mean)

    def pairwise(
        self, x: Tensor, output: Tensor, condition: Tensor | None = None
    ) -> Reconstruction:
        """Terms for every (code k, example b) pair from outputs [K, ...] and x [B, ...] by
        matrix products, Σ_d (x_bd − μ_kd)²·P_kd = (x²)·P_k − 2x·(μP)_k + Σ μ²P_k with the
        precision P = σ⁻², instead of a [K, B, D] tensor. σ modes defined by a batch of data
        have no per-code σ: use `forward` on expanded outputs for those."""
        if self.sigma_mode.needs_data:
            raise NotImplementedError("optimal σ modes depend on the batch")
        mean, extra = self.split(output)
        log_sigma = self.sigma_mode.log_sigma(torch.zeros_like(mean), extra, condition)
        log_sigma = log_sigma.expand_as(mean).flatten(1)
        mean, x = mean.flatten(1), x.flatten(1)
        precision = torch.exp(-2.0 * log_sigma)
        quadratic = (
            (x * x) @ precision.T - 2 * x @ (mean * precision).T + (mean * mean * precision).sum(-1)
        )
        nll = 0.5 * quadratic.T + (log_sigma + 0.5 * LOG_2PI).sum(-1)[:, None]
        sq = (x * x).sum(-1)[None] - 2 * mean @ x.T + (mean * mean).sum(-1)[:, None]
        sigma = torch.exp(log_sigma).mean().detach()
        return Reconstruction(nll, sq / x.shape[1], sigma)

    def forward(self, x: Tensor, output: Tensor, condition: Tensor | None = None) -> Reconstruction:
        """x [B, *data], output [S, B, ...] → terms per sample of z and example [S, B];
        `condition` [B] is ℓ = standardised log β in a β-conditional model."""
        mean, extra = self.split(output)
        sq_err = (x - mean) ** 2
        log_sigma = self.sigma_mode.log_sigma(sq_err, extra, condition)
        nll = -gaussian_log_density(x, mean, 2.0 * log_sigma)
        return Reconstruction(
            nll.flatten(2).sum(-1),
            sq_err.flatten(2).mean(-1),
            sigma=torch.exp(log_sigma).mean().detach(),
        )
