"""Gradient estimators for factorised Bernoulli latent codes: ARM, DisARM, REINFORCE (RLOO)
and straight-through Gumbel-sigmoid.

Per example the objective is loss = D + β·R with R = KL(q(z|x) ‖ p(z)), analytic and
differentiated exactly, and D = E_{q(z|x)}[f(z)], f(z) = −log p(x|z). The decoder (and σ_x)
gets the ordinary Monte-Carlo gradient of f at the sampled codes; the encoder logits ℓ get
an estimate g ≈ ∇_ℓ E_q[f] from one of the estimators below. Each returns LossTerms whose
`loss` is a *surrogate*:

    loss = D̂ + β·R + ⟨g, ℓ⟩ − stop_gradient(⟨g, ℓ⟩),        g = stop_gradient(g)

so its value is exactly the Monte-Carlo estimate D̂ + β·R (the logs mean what they say) while
∇_ℓ loss = g + β·∇_ℓ R, and ∇_decoder loss = ∇_decoder D̂. The encoder's parameters get g
through ℓ by the chain rule. Codes are sampled by comparisons, so no gradient reaches the
encoder through f itself. S = `model.samples` sets the number of samples per example
(pairs for ARM and DisARM, so 2S decoder evaluations); D̂ is the mean of f over every code
evaluated, all of which are marginally distributed as q(z|x).

- ``arm`` (Yin & Zhou, ICLR 2019): u ~ U(0,1)^L,
  g = (f(1[u > σ(−ℓ)]) − f(1[u < σ(ℓ)])) · (u − ½), averaged over S pairs.
- ``disarm`` (Dong, Mnih & Tucker, NeurIPS 2020): b = 1[u < σ(ℓ)], b̃ = 1[1 − u < σ(ℓ)],
  g_j = ½ (f(b) − f(b̃)) · (−1)^{b̃_j} · 1[b_j ≠ b̃_j] · σ(|ℓ_j|), averaged over S pairs: ARM
  Rao-Blackwellised over the antithetic pair, never of higher variance.
- ``reinforce`` (score function with the leave-one-out baseline, RLOO; Kool et al. 2019):
  g = (1/S) Σ_s (f(z_s) − mean_{s'≠s} f(z_s')) ∇_ℓ log q(z_s), with ∇_ℓ log q(z) = z − σ(ℓ);
  needs S ≥ 2.
- ``gumbel-st`` (straight-through Gumbel-sigmoid / relaxed Bernoulli; Jang et al. 2017,
  Maddison et al. 2017): the forward pass uses hard codes 1[ℓ + n > 0], n ~ Logistic(0, 1),
  the backward pass the gradient of the relaxed sample σ((ℓ + n)/τ) with τ = `TEMPERATURE`
  (1.0). Biased; included for comparison.

With a batch-coupled σ_x mode (`optimal-shared`) f(z) of one code depends on the other codes
of the batch; the estimators then treat σ_x like any decoder output (the usual practice).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import estimator
from .terms import LossTerms

TEMPERATURE = 1.0  # τ of the Gumbel-sigmoid relaxation in `gumbel-st` (read at call time)


def _surrogate(logits: Tensor, grad: Tensor) -> Tensor:
    """A term [B] whose value is 0 and whose gradient w.r.t. the logits [B, L] is `grad`."""
    inner = (grad.detach() * logits).sum(-1)
    return inner - inner.detach()


def antithetic_pair(logits: Tensor, samples: int) -> tuple[Tensor, Tensor, Tensor]:
    """(u, b, b̃) with u ~ U(0,1) [S, *logits.shape], b = 1[u < σ(ℓ)] and its antithetic
    partner b̃ = 1[1 − u < σ(ℓ)] = 1[u > σ(−ℓ)]; each is marginally Bern(σ(ℓ))."""
    logits = logits.detach()
    u = torch.rand((samples, *logits.shape), dtype=logits.dtype, device=logits.device)
    b = (u < torch.sigmoid(logits)).to(logits.dtype)
    b_anti = (u > torch.sigmoid(-logits)).to(logits.dtype)
    return u, b, b_anti


def _pair_terms(model, x, beta, condition, weight) -> LossTerms:
    """ARM / DisARM: f at S antithetic pairs, g = mean over pairs of weight(u, b, b̃, ℓ, Δf)."""
    q = model.encode(x, condition)
    samples = model.samples
    u, b, b_anti = antithetic_pair(q.logits, samples)
    z = torch.cat([b, b_anti])  # [2S, B, L]
    rec = model.likelihood(x, model.decode(z, condition), condition)
    f = rec.nll_samples.detach()
    delta = (f[:samples] - f[samples:])[..., None]  # f(b) − f(b̃), [S, B, 1]
    grad = weight(u, b, b_anti, q.logits.detach(), delta).mean(0)
    surrogate = _surrogate(q.logits, grad)
    return LossTerms.compose(rec.nll, q, model.prior, beta, rec.mse, rec.sigma, surrogate)


def _arm_weight(u, b, b_anti, logits, delta):
    # (f(1[u > σ(−ℓ)]) − f(1[u < σ(ℓ)])) (u − ½) = (f(b̃) − f(b)) (u − ½)
    return -delta * (u - 0.5)


def _disarm_weight(u, b, b_anti, logits, delta):
    sign = 1.0 - 2.0 * b_anti  # (−1)^{b̃_j}
    return 0.5 * delta * sign * (b != b_anti).to(u.dtype) * torch.sigmoid(logits.abs())


@estimator("arm", discrete=True)
def arm(model, x: Tensor, beta: Tensor, condition: Tensor | None) -> LossTerms:
    """ARM (Yin & Zhou 2019): unbiased, S antithetic pairs per example."""
    return _pair_terms(model, x, beta, condition, _arm_weight)


@estimator("disarm", discrete=True)
def disarm(model, x: Tensor, beta: Tensor, condition: Tensor | None) -> LossTerms:
    """DisARM (Dong, Mnih & Tucker 2020): unbiased, variance ≤ ARM's, S pairs per example."""
    return _pair_terms(model, x, beta, condition, _disarm_weight)


@estimator("reinforce", discrete=True)
def reinforce(model, x: Tensor, beta: Tensor, condition: Tensor | None) -> LossTerms:
    """REINFORCE with the leave-one-out baseline (RLOO, Kool et al. 2019), S ≥ 2 samples."""
    samples = model.samples
    if samples < 2:
        raise ConfigError(
            f"model.samples: the 'reinforce' estimator (leave-one-out baseline) needs ≥ 2 "
            f"samples per example, got {samples}"
        )
    q = model.encode(x, condition)
    z = q.sample(samples)  # [S, B, L], no gradient
    rec = model.likelihood(x, model.decode(z, condition), condition)
    f = rec.nll_samples.detach()  # [S, B]
    baseline = (f.sum(0, keepdim=True) - f) / (samples - 1)  # mean over the other samples
    score = z - torch.sigmoid(q.logits.detach())  # ∇_ℓ log q(z)
    grad = ((f - baseline)[..., None] * score).mean(0)
    surrogate = _surrogate(q.logits, grad)
    return LossTerms.compose(rec.nll, q, model.prior, beta, rec.mse, rec.sigma, surrogate)


def relaxed_straight_through(logits: Tensor, samples: int, temperature: float) -> Tensor:
    """Codes [S, *logits.shape] whose values are hard samples 1[ℓ + n > 0] ~ Bern(σ(ℓ)),
    n ~ Logistic(0, 1), and whose gradient is that of σ((ℓ + n)/τ)."""
    tiny = torch.finfo(logits.dtype).tiny
    u = torch.rand((samples, *logits.shape), dtype=logits.dtype, device=logits.device)
    u = u.clamp_min(tiny)  # torch.rand is in [0, 1): log u finite, log(1 − u) finite
    noisy = logits + (torch.log(u) - torch.log1p(-u))
    soft = torch.sigmoid(noisy / temperature)
    hard = (noisy > 0).to(logits.dtype)
    return hard + (soft - soft.detach())  # value exactly `hard`


@estimator("gumbel-st", discrete=True)
def gumbel_straight_through(
    model, x: Tensor, beta: Tensor, condition: Tensor | None, temperature: float | None = None
) -> LossTerms:
    """Straight-through Gumbel-sigmoid with τ = `temperature` (default: module `TEMPERATURE`).
    Biased for the encoder; the decoder still gets the Monte-Carlo gradient at hard codes."""
    tau = TEMPERATURE if temperature is None else temperature
    q = model.encode(x, condition)
    z = relaxed_straight_through(q.logits, model.samples, tau)
    rec = model.likelihood(x, model.decode(z, condition), condition)
    return LossTerms.compose(rec.nll, q, model.prior, beta, rec.mse, rec.sigma)
