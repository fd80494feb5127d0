"""Gaussian decoder p(x|z) = N(x; μ(z), σ_x²) with the six σ_x modes of DESIGN §1a.

Distortion per example (nats), D data dimensions:
    D(x) = E_q[ Σ_d (x_d − μ_d)² / (2σ_d²) + log σ_d ] + (D/2) log 2π.
With σ shared this is E_q‖x − μ‖²/(2σ²) + (D/2) log(2πσ²). The classic β-VAE objective
Σ(x − μ)² + β·KL is the `fixed` mode with σ² = β/2 and β = 1 (up to the factor β = 2σ²).

The estimated σ_x (every mode but `fixed`) is bounded below softly, as in the σ-VAE
(Rybkin et al. 2021): log σ ← m + softplus(log σ − m), m = `log_sigma_min`.

The optimal modes fit σ_x to the training batch (σ² = its E_q[squared error]). That is not a
density of a test point, so in evaluation mode they use σ_x frozen from training: a running
average of the batch optimum (`RunningOptimum`, saved with the weights), kept as a function
of ℓ = standardised log β for a β-conditional model (DESIGN §1a, last paragraph).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LIKELIHOODS, SIGMA_MODES
from .base import Likelihood
from .exponential_family import GaussianEF
from .normal import LOG_2PI, gaussian_log_density
from .reconstruction import Reconstruction


def soft_lower_bound(log_sigma: Tensor, low: float) -> Tensor:
    """softclip(log σ, low) = low + softplus(log σ − low): smooth, > low, ≈ log σ above it."""
    return low + F.softplus(log_sigma - low)


def expected_over_codes(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    """E_q over the S codes of each example: [S, B] → [B] (uniform 1/S without weights)."""
    return per_sample.mean(0) if weights is None else (weights * per_sample).sum(0)


# --- σ_x modes: each returns log σ of shape [S|1, B|1, *data|1s] ------------------------------


class SigmaMode(nn.Module):
    """log σ_x of a Gaussian decoder. Flags: `estimated` (σ is not a constant: the decoupled
    regime), `batch_dependent` (fitted to the training batch, frozen in evaluation),
    `shared_over_batch` (one σ for every example of a batch: needs one β per batch),
    `needs_condition` (a function of β), `extra_outputs` (decoder outputs per dimension)."""

    extra_outputs: ClassVar[int] = 0
    estimated: ClassVar[bool] = True
    batch_dependent: ClassVar[bool] = False
    shared_over_batch: ClassVar[bool] = False
    needs_condition: ClassVar[bool] = False

    def __init__(self, data_shape: tuple[int, ...], sigma: float, log_sigma_min: float):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.log_sigma_min = log_sigma_min

    def log_sigma(
        self,
        extra: Tensor | None,
        condition: Tensor | None,
        mse: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> Tensor:
        """log σ for the decoder's extra head [S, B, *data] (or None), the condition ℓ [B] or
        [1] (or None), and — for modes fitted to a batch, in training — the mean squared error
        of every code and example [S, B] with the codes' probabilities `weights` [S, B]."""
        raise NotImplementedError

    def per_example(self, t: Tensor) -> Tensor:
        """[B] → [1, B, 1, …, 1]."""
        return t.reshape(1, -1, *([1] * len(self.data_shape)))

    def scalar(self, t: Tensor) -> Tensor:
        return t.reshape(*([1] * (2 + len(self.data_shape))))


@SIGMA_MODES.register("fixed")
class FixedSigma(SigmaMode):
    """A constant σ_x = c (not bounded: the classic β-VAE with β = 2c²)."""

    estimated = False

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.register_buffer("value", torch.tensor(math.log(sigma)))

    def log_sigma(self, extra, condition, mse=None, weights=None):
        return self.scalar(self.value)


@SIGMA_MODES.register("learned-shared")
class LearnedSharedSigma(SigmaMode):
    """One learned scalar log σ_x (σ-VAE)."""

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.raw = nn.Parameter(torch.tensor(math.log(sigma)))

    def log_sigma(self, extra, condition, mse=None, weights=None):
        return self.scalar(soft_lower_bound(self.raw, self.log_sigma_min))


@SIGMA_MODES.register("learned-pixel")
class LearnedPixelSigma(SigmaMode):
    """One learned log σ_x per data dimension."""

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.raw = nn.Parameter(torch.full(self.data_shape, math.log(sigma)))

    def log_sigma(self, extra, condition, mse=None, weights=None):
        return soft_lower_bound(self.raw, self.log_sigma_min)[None, None]


class RunningOptimum(nn.Module):
    """A running average of the batch-optimal σ² as a function of ℓ ∈ [−1, 1], on `nodes`
    grid points with linear interpolation (an unconditional model sits at ℓ = 0, the middle
    node). Each node keeps a weighted exponential average with bias correction:
    W ← `decay`·W + a, m ← m + (a/W)(v − m), a = the node's share of the batch, v = the
    batch's mean σ² there. Buffers, so checkpoints hold it and resume is exact."""

    def __init__(self, initial: float, nodes: int = 17, decay: float = 0.99):
        super().__init__()
        self.decay = decay
        self.initial = initial
        self.register_buffer("mse", torch.full((nodes,), initial))
        self.register_buffer("weight", torch.zeros(nodes))

    def _interpolation(self, condition: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor]:
        """(lower node [B], weight of the upper node [B]) for ℓ [B] (None: ℓ = 0)."""
        ell = torch.zeros(1, device=like.device) if condition is None else condition
        pos = (ell.to(like.dtype).clamp(-1, 1) + 1) / 2 * (len(self.mse) - 1)
        low = pos.floor().long().clamp(max=len(self.mse) - 2)
        return low, pos - low

    @torch.no_grad()
    def update(self, mse: Tensor, condition: Tensor | None) -> None:
        """Fold in the per-example optimum σ² [B] of a training batch."""
        low, t = self._interpolation(condition, mse)
        low, t = low.expand_as(mse), t.expand_as(mse)
        share = torch.zeros_like(self.weight).index_add(0, low, 1 - t).index_add(0, low + 1, t)
        value = torch.zeros_like(self.weight)
        value = value.index_add(0, low, (1 - t) * mse).index_add(0, low + 1, t * mse)
        share = share / len(mse)
        seen = share > 0
        self.weight[seen] = self.decay * self.weight[seen] + share[seen]
        mean = value[seen] / (share[seen] * len(mse))
        self.mse[seen] += share[seen] / self.weight[seen] * (mean - self.mse[seen])

    def lookup(self, condition: Tensor | None) -> Tensor:
        """The frozen σ² at ℓ [B] (or ℓ = 0): log-linear between nodes; a node no batch has
        reached takes the average over the nodes that were."""
        low, t = self._interpolation(condition, self.mse)
        seen = self.weight > 0
        fallback = (
            (self.weight * self.mse).sum() / self.weight.sum()
            if bool(seen.any())
            else self.mse.new_tensor(self.initial)
        )
        log_mse = torch.where(seen, self.mse, fallback).clamp_min(1e-12).log()
        return torch.exp((1 - t) * log_mse[low] + t * log_mse[low + 1])


class OptimalSigma(SigmaMode):
    """σ_x² = E_q[squared error] of the training batch (analytic optimum, gradient kept);
    in evaluation mode the running average of it (`RunningOptimum`)."""

    batch_dependent = True

    def __init__(self, data_shape, sigma, log_sigma_min):
        super().__init__(data_shape, sigma, log_sigma_min)
        self.running = RunningOptimum(sigma**2)

    def fitted_mse(self, per_example: Tensor, condition: Tensor | None) -> Tensor:
        """σ² from the per-example E_q[MSE] [B]: [B] or a scalar."""
        raise NotImplementedError

    def log_sigma(self, extra, condition, mse=None, weights=None):
        if self.training and mse is not None:
            per_example = expected_over_codes(mse, weights)
            fitted = self.fitted_mse(per_example, condition)
            self.running.update(fitted.detach().expand_as(per_example), condition)
        else:
            fitted = self.running.lookup(condition)
        fitted = fitted.clamp_min(1e-12)
        log_sigma = soft_lower_bound(0.5 * torch.log(fitted), self.log_sigma_min)
        return self.per_example(log_sigma) if log_sigma.dim() else self.scalar(log_sigma)


@SIGMA_MODES.register("optimal-shared")
class OptimalSharedSigma(OptimalSigma):
    """σ_x² = E_q[MSE] over the whole batch ("optimal σ-VAE"): one σ per batch, so a
    β-conditional model must draw one β per minibatch (checked when the model is built)."""

    shared_over_batch = True

    def fitted_mse(self, per_example, condition):
        if condition is not None and len(condition) > 1 and bool((condition != condition[0]).any()):
            raise ValueError(
                "σ mode 'optimal-shared' fits one σ_x per batch but the batch has several β; "
                "draw β per minibatch or use 'optimal-image'"
            )
        return per_example.mean()


@SIGMA_MODES.register("optimal-image")
class OptimalImageSigma(OptimalSigma):
    """σ_i² = E_q[MSE] of example i: D = (D/2)(1 + log 2π MSE_i) (BS-VAE's log-MSE loss)."""

    def fitted_mse(self, per_example, condition):
        return per_example


@SIGMA_MODES.register("amortized")
class AmortizedSigma(SigmaMode):
    """log σ_x(z) per data dimension from a second decoder head (heteroscedastic)."""

    extra_outputs = 1

    def log_sigma(self, extra, condition, mse=None, weights=None):
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

    def log_sigma(self, extra, condition, mse=None, weights=None):
        if condition is None:
            raise ValueError("σ mode 'learned-beta' needs the β condition")
        raw = self.net(condition[:, None]).flatten()
        return self.per_example(soft_lower_bound(raw, self.log_sigma_min))


# --- the likelihood ------------------------------------------------------------------------


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """N(x; μ(z), σ_x²), σ_x by the chosen mode; the decoder outputs μ (and log σ if amortized)."""

    family = GaussianEF()
    config_fields = {"sigma_mode": "sigma_mode", "sigma": "sigma", "log_sigma_min": "log_sigma_min"}

    def __init__(
        self,
        data_shape: tuple[int, ...],
        sigma_mode: str = "learned-shared",
        sigma: float = 1.0,
        log_sigma_min: float = -6.0,
    ):
        super().__init__(data_shape)
        self.sigma_mode = SIGMA_MODES.get(sigma_mode)(self.data_shape, sigma, log_sigma_min)
        # the flags of the likelihood are those of its σ mode
        self.outputs_per_dim = 1 + self.sigma_mode.extra_outputs
        self.batch_dependent = self.sigma_mode.batch_dependent
        self.needs_condition = self.sigma_mode.needs_condition

    def _split(self, output: Tensor) -> tuple[Tensor, Tensor | None]:
        """Decoder output [..., k·C, H, W] → mean [..., C, H, W] and the extra head (or None)."""
        if self.outputs_per_dim == 1:
            return output, None
        mean, extra = output.chunk(2, dim=-len(self.data_shape))
        return mean, extra

    def mean(self, output: Tensor) -> Tensor:
        return self._split(output)[0]

    def _frozen_log_sigma(
        self, extra: Tensor | None, condition: Tensor | None, like: Tensor
    ) -> Tensor:
        """log σ without data, broadcastable to `like` [..., *data]: the frozen value of a
        batch-dependent mode."""
        was = self.sigma_mode.training
        self.sigma_mode.train(False)
        try:
            log_sigma = self.sigma_mode.log_sigma(extra, condition)
        finally:
            self.sigma_mode.train(was)
        while log_sigma.dim() > like.dim() and log_sigma.shape[0] == 1:
            log_sigma = log_sigma[0]
        return log_sigma

    def natural_parameters(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """η = (μ/σ², −1/(2σ²)) per data dimension, flattened [..., 2D] (σ frozen)."""
        mean, extra = self._split(output)
        log_sigma = self._frozen_log_sigma(extra, condition, mean).expand_as(mean)
        lead = mean.dim() - len(self.data_shape)
        return GaussianEF.natural_parameters(mean.flatten(lead), log_sigma.flatten(lead))

    def sample(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        """x ~ p(x|z) (σ frozen for a batch-dependent mode)."""
        mean, extra = self._split(output)
        log_sigma = self._frozen_log_sigma(extra, condition, mean)
        return mean + torch.exp(log_sigma) * torch.randn_like(mean)

    def forward(self, x, output, condition=None, weights=None) -> Reconstruction:
        """x [B, *data], output [S, B, *out] → terms per code and example [S, B]."""
        mean, extra = self._split(output)
        sq_err = (x - mean) ** 2
        mse = sq_err.flatten(2).mean(-1)
        log_sigma = self.sigma_mode.log_sigma(extra, condition, mse, weights)
        nll = -gaussian_log_density(x, mean, 2.0 * log_sigma)
        sigma = torch.exp(log_sigma).mean().detach()
        return Reconstruction(nll.flatten(2).sum(-1), mse, sigma, weights)

    def pairwise(self, x, output, condition=None, weights=None) -> Reconstruction:
        """Terms for every (code k, example b) pair by matrix products instead of a
        [K, B, D] tensor: Σ_d (x_bd − μ_kd)²·P_kd = (x²)·P_k − 2x·(μP)_k + Σ μ²P_k with the
        precision P = σ⁻²; a σ per example (or for the batch) uses ‖x_b − μ_k‖² directly."""
        mean, extra = self._split(output)
        m, xf = mean.flatten(1), x.flatten(1)
        dims = xf.shape[1]
        sq = (xf * xf).sum(-1)[None] - 2 * m @ xf.T + (m * m).sum(-1)[:, None]  # [K, B]
        extra = None if extra is None else extra[:, None]
        log_sigma = self.sigma_mode.log_sigma(extra, condition, sq / dims, weights)
        if all(n == 1 for n in log_sigma.shape[2:]):  # one σ per example (or batch)
            ls = log_sigma.reshape(log_sigma.shape[:2])
            nll = 0.5 * sq * torch.exp(-2 * ls) + dims * (ls + 0.5 * LOG_2PI)
        else:  # σ per dimension (and per code): precision matrix P [K|1, D]
            ls = log_sigma.reshape(log_sigma.shape[0], dims)
            precision = torch.exp(-2.0 * ls)
            quadratic = (
                precision @ (xf * xf).T
                - 2 * (m * precision) @ xf.T
                + (m * m * precision).sum(-1)[:, None]
            )
            nll = 0.5 * quadratic + (ls + 0.5 * LOG_2PI).sum(-1)[:, None]
        sigma = torch.exp(log_sigma).mean().detach()
        return Reconstruction(nll, sq / dims, sigma, weights)

    def describe(self, condition: Tensor | None = None) -> dict[str, Any]:
        """Name, σ mode and σ_x at evaluation (mean over dimensions; None when σ depends on z)."""
        mode = self.sigma_mode
        sigma = None
        if mode.extra_outputs == 0 and not (mode.needs_condition and condition is None):
            like = torch.zeros(1, *self.data_shape)
            with torch.no_grad():
                sigma = float(self._frozen_log_sigma(None, condition, like).exp().mean())
        return {
            "likelihood": self.registered_name,
            "sigma_mode": mode.registered_name,
            "sigma": sigma,
            "sigma_frozen_from_training": mode.batch_dependent,
        }
