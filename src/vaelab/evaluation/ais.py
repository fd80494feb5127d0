"""Annealed importance sampling (AIS) of log-partition functions (Neal 2001; Salakhutdinov &
Murray 2008), for harmoniums whose log Z cannot be enumerated.

A sequence 0 = β_0 < β_1 < … < β_K = 1 of inverse temperatures defines unnormalised
marginals f_β(x) between a tractable base f_0 (known Z_0, exact samples) and the target
f_1 = exp(−F(x)). M independent chains start at x ~ p_0 and, for k = 1 … K, accumulate

    log w += log f_{β_k}(x) − log f_{β_{k−1}}(x),  then  x ← T_k(x),

with T_k a Markov transition leaving p_{β_k} invariant. E[w] = Z_1/Z_0, so
log Ẑ = log Z_0 + logmeanexp(log w). Ẑ is unbiased, hence log Ẑ is biased *low* (Jensen):
too few intermediate distributions underestimate log Z, and a few large weights dominate.

Model interface (``Annealable``): the model, not this module, defines the path. Every method
takes ``base``, an optional parameter of the base model that this module passes through
untouched (``None`` = the model's default base):

* ``base_log_partition(base=None) -> Tensor``: log Z_0 (a scalar).
* ``sample_base(n, base=None, generator=None) -> Tensor``: n exact samples of p_0(x), [n, ...].
* ``log_unnormalised_marginal(x, beta, base=None) -> Tensor``: log f_β(x) per sample [n], the
  hidden units summed out; β = 0 is the base, β = 1 must equal −F(x) of the target (so that
  ``ais_log_likelihood`` = log f_1(x) − log Ẑ).
* ``gibbs_at(x, beta, base=None, generator=None) -> Tensor``: one transition (for an RBM a
  block-Gibbs sweep x → z → x) leaving p_β(x) ∝ f_β(x) invariant.

The RBMs of ``vaelab.models.harmonium`` implement it with the geometric path between the base
"W = 0" (visible parameter ``base``, default the RBM's own; ``rbm.base_from_data(data)`` gives
Salakhutdinov & Murray's data-fitted base) and the RBM: p_β is the RBM with weights βW. A
Replicated-Softmax (multinomial–Bernoulli) RBM fits the same interface: its base is
multinomial with logits ``base`` times independent hidden units, f_β(v) = h(v) exp(a_βᵀv)
Π_j (1 + exp(D·b_j + β W_jᵀv)), D = Σ v, and gibbs_at samples z, then D words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = [
    "AISResult",
    "Annealable",
    "ais_log_likelihood",
    "ais_log_partition",
    "linear_schedule",
    "logmeanexp",
    "piecewise_schedule",
    "sigmoid_schedule",
]


@runtime_checkable
class Annealable(Protocol):
    def base_log_partition(self, base: Tensor | None = None) -> Tensor: ...

    def sample_base(
        self, n: int, base: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor: ...

    def log_unnormalised_marginal(
        self, x: Tensor, beta: float, base: Tensor | None = None
    ) -> Tensor: ...

    def gibbs_at(
        self,
        x: Tensor,
        beta: float,
        base: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@dataclass
class AISResult:
    """log Ẑ with its uncertainty.

    ``std_error``: delta-method standard error of log Ẑ, std(w)/(√M·mean(w)) — itself
    unreliable when the weights are heavy-tailed (check ``ess``). ``interval``: bootstrap
    percentile interval of log Ẑ over resampled chains (`confidence` level). Both measure the
    variance only, not the downward bias of too short a schedule.
    """

    log_z: float
    std_error: float
    interval: tuple[float, float]
    log_weights: Tensor  # [M], log w of each chain (log Ẑ = log_z_base + logmeanexp)
    log_z_base: float
    betas: Tensor  # [K + 1]

    @property
    def ess(self) -> float:
        """Effective sample size (Σw)²/Σw² of the chains' weights."""
        lw = self.log_weights.double()
        return math.exp(2 * torch.logsumexp(lw, 0).item() - torch.logsumexp(2 * lw, 0).item())


def logmeanexp(x: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def linear_schedule(steps: int) -> Tensor:
    """K = `steps` transitions, β uniform on [0, 1] (K + 1 values, float64)."""
    if steps < 1:
        raise ValueError(f"need at least one intermediate step, got {steps}")
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def sigmoid_schedule(steps: int, scale: float = 4.0) -> Tensor:
    """β_k ∝ σ(scale·(2k/K − 1)) rescaled to [0, 1] (Grosse et al. 2013): denser at both ends."""
    if steps < 1:
        raise ValueError(f"need at least one intermediate step, got {steps}")
    s = torch.sigmoid(scale * torch.linspace(-1.0, 1.0, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def piecewise_schedule(
    knots: Sequence[float] = (0.0, 0.5, 0.9, 1.0), steps: Sequence[int] = (500, 4000, 10000)
) -> Tensor:
    """Uniform steps within each interval of `knots`; the default is Salakhutdinov & Murray's
    14,500 (0 → 0.5 in 500, → 0.9 in 4,000, → 1 in 10,000)."""
    if len(knots) != len(steps) + 1 or knots[0] != 0.0 or knots[-1] != 1.0:
        raise ValueError("need knots 0 = t_0 < … < t_n = 1 and one step count per interval")
    parts = [torch.tensor([0.0], dtype=torch.float64)]
    for lo, hi, n in zip(knots[:-1], knots[1:], steps):
        parts.append(torch.linspace(lo, hi, n + 1, dtype=torch.float64)[1:])
    return torch.cat(parts)


def _as_schedule(betas: int | Sequence[float] | Tensor) -> Tensor:
    if isinstance(betas, int):
        return linear_schedule(betas)
    betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if len(betas) < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or (betas.diff() < 0).any():
        raise ValueError("the inverse temperatures must rise from 0 to 1")
    return betas


@torch.no_grad()
def ais_log_partition(
    model: Annealable,
    chains: int = 100,
    betas: int | Sequence[float] | Tensor = 1000,
    base: Tensor | None = None,
    seed: int = 0,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    progress: bool = True,
) -> AISResult:
    """AIS estimate of log Z of `model` with `chains` parallel chains.

    `betas`: an int K (K transitions on a linear schedule) or the inverse temperatures
    themselves, rising from 0 to 1 (``linear_schedule``, ``sigmoid_schedule``,
    ``piecewise_schedule``). `base`: passed to the model (its base's visible parameter).
    `seed` seeds the chains and the bootstrap, so the result repeats.
    """
    schedule = _as_schedule(betas)
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
    generator = torch.Generator(device=device).manual_seed(seed)
    x = model.sample_base(chains, base=base, generator=generator)
    log_w = torch.zeros(chains, dtype=torch.float64, device=x.device)
    previous = model.log_unnormalised_marginal(x, 0.0, base=base)
    steps = tqdm(schedule[1:].tolist(), desc="AIS", disable=not progress, mininterval=0.5)
    for beta in steps:
        current = model.log_unnormalised_marginal(x, beta, base=base)
        log_w += (current - previous).double()
        x = model.gibbs_at(x, beta, base=base, generator=generator)
        previous = model.log_unnormalised_marginal(x, beta, base=base)
    log_z_base = float(model.base_log_partition(base=base))
    log_z = log_z_base + logmeanexp(log_w).item()

    w = torch.exp(log_w - log_w.max())
    std_error = (w.std() / (math.sqrt(chains) * w.mean())).item() if chains > 1 else math.inf
    resample_gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(chains, (bootstrap, chains), generator=resample_gen)
    boot = logmeanexp(log_w.cpu()[idx], dim=1) + log_z_base
    tail = (1.0 - confidence) / 2.0
    lo, hi = torch.quantile(boot, torch.tensor([tail, 1.0 - tail], dtype=boot.dtype)).tolist()
    return AISResult(log_z, std_error, (lo, hi), log_w.cpu(), log_z_base, schedule)


def ais_log_likelihood(model: Annealable, data: Tensor, **ais_options) -> tuple[Tensor, AISResult]:
    """log p(x) ≈ −F(x) − log Ẑ per example [N], with the AIS result (options as for
    ``ais_log_partition``). Inherits AIS's bias: log Ẑ low ⇒ log-likelihoods too high."""
    result = ais_log_partition(model, **ais_options)
    if hasattr(model, "parameters"):
        data = data.to(next(iter(model.parameters())))
    with torch.no_grad():
        log_f = model.log_unnormalised_marginal(data, 1.0, base=ais_options.get("base"))
    return log_f - result.log_z, result
