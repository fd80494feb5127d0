"""Log-likelihood of decoder-based models: IWAE, AIS with HMC, and BDMC.

For a VAE with prior p(z), decoder p(x|z) and encoder q(z|x), log p(x) = log ∫ p(z) p(x|z) dz
is intractable; three estimators, per example, in nats:

* **IWAE** (Burda, Grosse & Salakhutdinov 2016): log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x).
  A lower bound in expectation for every k, non-decreasing in k, → log p(x) as k → ∞; equal
  to log p(x) at every k when q is the exact posterior. The samples are drawn one at a time
  from the global RNG and the decoder runs on chunks of them with a running log-sum-exp, so
  k in the thousands never materialises [k, B, D] and the result does not depend on `chunk`.
* **AIS** (Neal 2001) as used for decoder-based models by Wu, Burda, Salakhutdinov & Grosse
  (ICLR 2017): the path p_β(z|x) ∝ p(z) p(x|z)^β from the prior to the posterior, with HMC
  transitions (`vaelab.inference.TemperedPosterior`, run by `vaelab.inference.anneal`).
  log p̂(x) = logmeanexp over the chains of log w: a stochastic lower bound (E[p̂] = p(x) with
  a fixed HMC step; the default per-chain step adaptation biases it up by a few hundredths
  of a nat, see `vaelab.inference.hmc`). It
  needs neither the encoder nor a reparameterisable posterior — only a differentiable decoder
  and a continuous prior.
* **BDMC** (Grosse, Ghahramani & Adams 2015): on data simulated from the model, (z, x) ~ p,
  forward AIS gives a stochastic lower bound on log p(x) and reverse AIS — started at the
  exact posterior sample z at β = 1 and annealed to the prior — a stochastic upper bound. The
  gap bounds the error of AIS with that schedule on such data.

All three use the model in evaluation mode, where `model.likelihood.log_prob(x, output, ℓ)`
is a density of x for every z (a σ_x fitted to batches in training is frozen), so they
estimate the same p(x). `vaelab.models.ppca` gives a linear-Gaussian model whose
log-likelihood is exact, to check them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..inference import (
    AISResult,
    TemperedPosterior,
    anneal,
    as_schedule,
    ess_from_sums,
    standard_error,
)

__all__ = [
    "BDMCResult",
    "ais_log_likelihood",
    "bdmc",
    "evaluate_log_likelihood",
    "iwae_log_likelihood",
    "log_likelihood_function",
]

CHUNK_ELEMENTS = 1 << 22  # decoder outputs per chunk when `chunk` is not given (16 MB float32)


# --- shared plumbing ---------------------------------------------------------------------------


def _rng_devices(device) -> list:
    device = torch.device(device)
    return [] if device.type == "cpu" else [device]


@contextmanager
def _evaluating(model: nn.Module, seed: int | None, device):
    """Eval mode and, with a seed, a forked and seeded RNG; both restored afterwards."""
    was_training = model.training
    model.eval()
    fork = (
        torch.random.fork_rng(devices=_rng_devices(device)) if seed is not None else nullcontext()
    )
    try:
        with fork:
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def log_likelihood_function(
    model, x: Tensor, condition: Tensor | None = None
) -> Callable[[Tensor], Tensor]:
    """z [S, B, L] ↦ log p(x|z) [S, B] for the batch x [B, *data] (ℓ = `condition` if the model
    is β-conditional); a density in x for every z with the model in evaluation mode."""
    return lambda z: model.likelihood.log_prob(x, model.decode(z, condition), condition)


def _check_continuous(model) -> None:
    if not model.prior.continuous:
        raise ValueError("AIS with HMC needs continuous latents; use exact enumeration")


def _prior_chains(model, chains: int, n: int, device) -> Tensor:
    return model.prior.sample(chains * n, device=device).reshape(chains, n, -1)


# --- IWAE ---------------------------------------------------------------------------------------


def _iwae(model, x, k, chunk, beta) -> tuple[Tensor, Tensor]:
    """(IWAE estimate [B], ESS of the k importance weights [B]), in the current RNG state."""
    if k < 1:
        raise ValueError(f"need k ≥ 1 importance samples, got {k}")
    x = x.to(_device(model))
    n = len(x)
    _, cond = model.condition(n, beta, x.device)
    q = model.encode(x, cond)
    log_px_z = log_likelihood_function(model, x, cond)
    if chunk is None:
        outputs = x[0].numel() * model.likelihood.outputs_per_dim
        chunk = max(1, CHUNK_ELEMENTS // (n * outputs))
    chunk = max(1, min(int(chunk), k))
    lse = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)
    lse2 = lse.clone()  # log Σ w², for the effective sample size
    for start in range(0, k, chunk):
        # one draw per sample, in order: the same codes whatever the chunk size
        z = torch.cat([q.draw(1) for _ in range(min(chunk, k - start))])  # [c, B, L]
        log_w = (log_px_z(z) + model.prior.log_prob(z) - q.log_prob(z)).double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2.0 * log_w, 0))
    return lse - math.log(k), ess_from_sums(lse, lse2)


@torch.no_grad()
def iwae_log_likelihood(
    model,
    x: Tensor,
    k: int,
    chunk: int | None = None,
    beta: float | Tensor | None = None,
    seed: int | None = 0,
) -> Tensor:
    """The IWAE bound log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x), per example [B] (float64).

    `model`: any vaelab VAE (its posterior's `draw` and `log_prob`). `x` [B, *data]. `chunk`:
    codes per decoder call (default: as many as keep the decoder output of a chunk near 4M
    numbers); the result does not depend on it. `beta`: the β at which to run a β-conditional
    model (default its configured β). `seed`: seeds the draws (the global RNG is restored
    afterwards); None uses the global RNG.
    """
    with _evaluating(model, seed, _device(model)):
        return _iwae(model, x, k, chunk, beta)[0]


# --- AIS with HMC -------------------------------------------------------------------------------


@torch.no_grad()
def ais_log_likelihood(
    model,
    x: Tensor,
    steps: int = 1000,
    chains: int = 16,
    schedule: str | Sequence[float] | Tensor = "sigmoid",
    seed: int | None = 0,
    return_chains: bool = False,
    beta: float | Tensor | None = None,
    progress: bool = False,
    **hmc,
) -> AISResult:
    """AIS estimate of log p(x) per example for a decoder-based model with continuous latents
    (Wu et al. 2017): `chains` chains per example start at the prior and anneal through
    p_β(z|x) ∝ p(z) p(x|z)^β by HMC, all examples and chains batched as [C, B] codes.

    Returns the `AISResult`: `log_z` [B] the estimate of log p(x), `log_weights` [C, B],
    `diagnostics` (HMC `acceptance` and `step_size`, [C, B]) and, with `return_chains`, the
    final chains `final` (their codes `final.z` [C, B, L], approximately posterior samples).

    `steps`: K transitions (K + 1 distributions) on the `schedule` ("sigmoid" or "linear"), or
    the β's themselves (rising from 0 to 1; then `steps` is ignored). `beta`: the β of a
    β-conditional model. `seed`: seeds everything (RNG restored afterwards). `hmc`: the
    settings of ``TemperedPosterior`` — `leapfrog` steps per transition (10), the initial
    `step_size` (0.05), then adapted per chain towards `target_acceptance` (0.65) by the
    factors `adapt` within `step_range`.
    Cost: steps × leapfrog decoder forward+backward passes on chains × B codes.
    """
    _check_continuous(model)
    betas = as_schedule(schedule, steps)
    device = _device(model)
    x = x.to(device)
    with _evaluating(model, seed, device):
        _, cond = model.condition(len(x), beta, device)
        path = TemperedPosterior(model.prior, log_likelihood_function(model, x, cond), **hmc)
        start = path.start(_prior_chains(model, chains, len(x), device))
        return anneal(path, start, betas, keep_final=return_chains, progress=progress)


# --- BDMC ---------------------------------------------------------------------------------------


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on n examples simulated from the model: ``lower`` [n]
    (forward AIS) ≤ log p(x) ≤ ``upper`` [n] (reverse AIS), both stochastic bounds (in
    expectation of p̂ resp. 1/p̂). ``x`` [n, *data] and ``z`` [n, L] are the simulated pairs."""

    x: Tensor
    z: Tensor
    forward: AISResult
    reverse: AISResult

    @property
    def lower(self) -> Tensor:
        """Forward AIS's log p̂(x) [n]."""
        return self.forward.log_z

    @property
    def upper(self) -> Tensor:
        """Reverse AIS's log p̂(x) [n]."""
        return self.reverse.log_z

    @property
    def gap(self) -> Tensor:
        """upper − lower per example [n]: the error bound of AIS with this schedule."""
        return self.upper - self.lower


def _simulate(model, n: int, cond, device) -> tuple[Tensor, Tensor]:
    """(z [n, L], x [n, *data]) ~ p(z) p(x|z), with the model's frozen σ_x if it has one."""
    likelihood = model.likelihood
    if not likelihood.can_sample:
        raise ValueError(f"{type(likelihood).__name__} cannot simulate data for BDMC")
    z = model.prior.sample(n, device=device)
    return z, likelihood.sample(model.decode(z, cond), cond)


@torch.no_grad()
def bdmc(
    model,
    n: int,
    steps: int = 1000,
    chains: int = 1,
    schedule: str | Sequence[float] | Tensor = "sigmoid",
    seed: int | None = 0,
    beta: float | None = None,
    progress: bool = False,
    **hmc,
) -> BDMCResult:
    """Sandwich log p(x) on n examples (z, x) ~ p(z) p(x|z) simulated from the model
    (Grosse, Ghahramani & Adams 2015; Wu et al. 2017, §3).

    Forward AIS from the prior (as ``ais_log_likelihood``) gives the stochastic lower bound.
    Reverse AIS starts every chain at the simulated z — an exact sample of p(z|x), the
    distribution at β = 1 — and anneals down the same schedule to the prior: its weights
    estimate p(x)⁻¹ without bias, so −logmeanexp(log w_reverse) is a stochastic upper bound.
    Options as for ``ais_log_likelihood``; both directions share the HMC settings.
    """
    _check_continuous(model)
    betas = as_schedule(schedule, steps)
    device = _device(model)
    with _evaluating(model, seed, device):
        _, cond = model.condition(n, beta, device)
        z, x = _simulate(model, n, cond, device)
        path = TemperedPosterior(model.prior, log_likelihood_function(model, x, cond), **hmc)
        prior_start = path.start(_prior_chains(model, chains, n, device))
        posterior_start = path.start(z[None].expand(chains, *z.shape).contiguous())
        forward = anneal(path, prior_start, betas, progress=progress)
        reverse = anneal(path, posterior_start, betas.flip(0), progress=progress)
    return BDMCResult(x, z, forward, reverse)


# --- a data set ---------------------------------------------------------------------------------


def evaluate_log_likelihood(
    model,
    data,
    method: str = "iwae",
    k: int = 1000,
    examples: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    beta: float | None = None,
    chains: int = 16,
    leapfrog: int = 10,
    progress: bool = False,
) -> dict[str, float | int | str]:
    """Mean test log-likelihood of `model` on the first `examples` of `data` (all if None), in
    nats per example, with its standard error over examples and in bits per data dimension
    (pixels, or vocabulary entries).

    `method` "iwae": `k` importance samples per example. `method` "ais": `k` annealing steps
    (intermediate distributions) with `chains` chains of HMC with `leapfrog` steps each. Both
    are stochastic lower bounds. `beta`: the β of a β-conditional model (default its own).
    Seeded: the same model gives the same numbers.
    """
    if method not in ("iwae", "ais"):
        raise ValueError(f"unknown log-likelihood method {method!r}; one of iwae, ais")
    n = len(data) if examples is None else min(examples, len(data))
    device = _device(model)
    start_time = time.perf_counter()
    values, ess, acceptance = [], [], []
    with _evaluating(model, seed, device):
        for start in range(0, n, batch_size):
            x = data.batch(slice(start, min(start + batch_size, n))).to(device)
            if method == "iwae":
                with torch.no_grad():
                    ll, batch_ess = _iwae(model, x, k, None, beta)
            else:
                r = ais_log_likelihood(
                    model,
                    x,
                    steps=k,
                    chains=chains,
                    leapfrog=leapfrog,
                    seed=None,
                    beta=beta,
                    progress=progress,
                )
                ll, batch_ess = r.log_z, r.ess
                acceptance.append(r.diagnostics["acceptance"].mean(0).cpu())
            values.append(ll.cpu())
            ess.append(batch_ess.cpu())
    ll = torch.cat(values)
    dims = x[0].numel()
    result: dict[str, float | int | str] = {"method": method, "examples": n}
    if method == "iwae":
        result["k"] = k
    else:
        result.update(steps=k, chains=chains, leapfrog=leapfrog)
    if model.conditional:
        result["beta"] = float(model.beta if beta is None else beta)
    result["log_likelihood"] = float(ll.mean())
    result["negative_log_likelihood"] = -float(ll.mean())
    result["std_error"] = standard_error(ll)
    result["bits_per_dim"] = -float(ll.mean()) / (dims * math.log(2.0))
    result["ess"] = float(torch.cat(ess).mean())
    if acceptance:
        result["acceptance"] = float(torch.cat(acceptance).mean())
    result["seconds"] = time.perf_counter() - start_time
    return result
