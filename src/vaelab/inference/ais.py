"""Annealed importance sampling (Neal 2001): one engine for every annealing path.

A *path* is a family of unnormalised densities f_β, β ∈ [0, 1], from a base f_0 whose
normaliser Z_0 is known and which can be sampled exactly, to the target f_1, with for every β
a Markov transition T_β that leaves p_β = f_β / Z_β invariant. Along a schedule β_0, …, β_K
each of C independent chains starts at an exact sample x of p_{β_0} and, for k = 1 … K,

    log w += log f_{β_k}(x) − log f_{β_{k−1}}(x),   then   x ← T_{β_k}(x),

so that E[w] = Z_{β_K} / Z_{β_0}.

- Forward (β rising from 0 to 1): log Ẑ_1 = log Z_0 + logmeanexp(log w). Ẑ_1 is unbiased, so
  log Ẑ_1 is a stochastic lower bound (Jensen): too short a schedule underestimates log Z_1.
- Reverse (β falling from 1 to 0, chains started at exact samples of p_1, which exist for data
  simulated from a model — BDMC, Grosse, Ghahramani & Adams 2015): E[w] = Z_0 / Z_1 and
  log Ẑ_1 = log Z_0 − logmeanexp(log w), a stochastic upper bound.

The paths: `vaelab.models.harmonium` (the geometric path from a base "W = 0" to an RBM, with
block-Gibbs transitions; Ẑ_1 is the RBM's partition function) and `TemperedPosterior` of
`vaelab.inference.hmc` (p_β(z) ∝ p(z) p(x|z)^β with HMC transitions; Ẑ_1 = p(x), Wu, Burda,
Salakhutdinov & Grosse 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .weights import bootstrap_interval, effective_sample_size, log_mean_exp_std_error, logmeanexp

State = TypeVar("State")


class AnnealingPath(Protocol[State]):
    """What the engine needs of a path. A *state* holds the C chains (batch shape [C, *batch]:
    one annealing problem per element of *batch, e.g. per example); its type is the path's."""

    def log_density(self, state: State, beta: float) -> Tensor:
        """log f_β at every chain, [C, *batch]."""
        ...

    def transition(self, state: State, beta: float) -> State:
        """One step of a Markov chain leaving p_β invariant, for every chain."""
        ...

    def diagnostics(self, state: State) -> dict[str, Tensor]:
        """What the transitions report at the end (e.g. HMC acceptance rates); may be empty."""
        ...


@dataclass
class AISResult:
    """The weights of one AIS run and what they estimate, per element of the batch shape.

    `log_weights` [C, *batch] (float64); `log_z_base` log Z_0 (broadcasts against *batch);
    `betas` [K + 1] as run (falling for reverse AIS); `diagnostics` of the path's transitions;
    `final` the chains' last state, when kept (approximately samples of p_1 after forward AIS).
    """

    log_weights: Tensor
    log_z_base: Tensor
    betas: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)
    final: Any = None

    @property
    def reverse(self) -> bool:
        return bool(self.betas[0] > self.betas[-1])

    @property
    def log_z(self) -> Tensor:
        """log Ẑ_1 [*batch]: a stochastic lower bound (forward) or upper bound (reverse)."""
        estimate = logmeanexp(self.log_weights, 0)
        return self.log_z_base - estimate if self.reverse else self.log_z_base + estimate

    @property
    def ess(self) -> Tensor:
        """Effective sample size of the chains' weights [*batch]."""
        return effective_sample_size(self.log_weights, 0)

    @property
    def std_error(self) -> Tensor:
        """Delta-method standard error of log Ẑ_1 [*batch] (the chains' spread, not the bias
        of too short a schedule)."""
        return log_mean_exp_std_error(self.log_weights, 0)

    def interval(
        self, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Bootstrap percentile interval (low, high) of log Ẑ_1 over resampled chains."""
        low, high = bootstrap_interval(self.log_weights, confidence, resamples, seed)
        base = self.log_z_base.cpu()
        return (base - high, base - low) if self.reverse else (base + low, base + high)


@torch.no_grad()
def anneal(
    path: AnnealingPath[State],
    start: State,
    betas: Tensor,
    log_z_base: float | Tensor = 0.0,
    *,
    keep_final: bool = False,
    progress: bool = False,
) -> AISResult:
    """AIS along `betas` from `start`, exact samples of p_{betas[0]} (log Z_0 = `log_z_base`).

    The transition at the last β changes no weight: it runs only with `keep_final`, whose
    result then holds the chains after it."""
    schedule = betas.tolist()
    if len(schedule) < 2:
        raise ValueError(f"need at least two inverse temperatures, got {schedule}")
    state, log_w = start, None
    steps = tqdm(range(1, len(schedule)), desc="AIS", disable=not progress, mininterval=0.5)
    for k in steps:
        previous, beta = schedule[k - 1], schedule[k]
        current, before = path.log_density(state, beta), path.log_density(state, previous)
        increment = current.double() - before.double()
        log_w = increment if log_w is None else log_w + increment
        if k < len(schedule) - 1 or keep_final:
            state = path.transition(state, beta)
    base = torch.as_tensor(log_z_base, dtype=torch.float64, device=log_w.device)
    final = state if keep_final else None
    return AISResult(log_w, base, betas, path.diagnostics(state), final)
