"""Log-likelihood of decoder-based models: IWAE, AIS with HMC, BDMC, and exact pPCA.

For a VAE with prior p(z), decoder p(x|z) and encoder q(z|x), log p(x) = log ∫ p(z) p(x|z) dz
is intractable; three estimators, per example, in nats:

* **IWAE** (Burda, Grosse & Salakhutdinov 2016): log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x).
  A lower bound in expectation for every k, non-decreasing in k, → log p(x) as k → ∞; equal
  to log p(x) at every k when q is the exact posterior. The samples are drawn one at a time
  from the global RNG and the decoder runs on chunks of them with a running log-sum-exp, so
  k in the thousands never materialises [k, B, D] and the result does not depend on `chunk`.
* **AIS** (Neal 2001) as used for decoder-based models by Wu, Burda, Salakhutdinov & Grosse
  (ICLR 2017): intermediate distributions p_t(z|x) ∝ p(z) p(x|z)^{β_t}, 0 = β_0 < … < β_K = 1;
  chains start at the prior, accumulate log w += (β_t − β_{t−1}) log p(x|z), then move by HMC
  (a few leapfrog steps, step size adapted per chain towards acceptance 0.65). log p̂(x) =
  logmeanexp over the chains of log w: a stochastic lower bound (E[p̂] = p(x)). It needs
  neither the encoder nor a reparameterisable posterior — only a differentiable decoder and a
  continuous prior.
* **BDMC** (Grosse, Ghahramani & Adams 2015): on data simulated from the model, (z, x) ~ p,
  forward AIS gives a stochastic lower bound on log p(x) and reverse AIS — started at the
  exact posterior sample z at β = 1 and annealed to the prior — a stochastic upper bound. The
  gap bounds the error of AIS with that schedule on such data.

The schedules and the log-mean-exp are those of ``vaelab.evaluation.ais`` (AIS of RBM
partition functions). ``ppca_log_likelihood`` and ``ppca_vae`` give a linear-Gaussian model
whose log-likelihood is exact, to check all three.

σ_x modes defined by a batch of data (``optimal-shared``, ``optimal-image``) are not a density
p(x|z) until σ_x is fixed: it is computed once per batch from S = ``model.samples`` codes of
q(z|x) (at least 16, with a fixed seed), as in the ELBO, and then held fixed for every code the
estimators try.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.base import ImageData
from ..distributions import GaussianLikelihood, StandardNormal, gaussian_log_density
from ..distributions.bernoulli_latent import UniformBernoulli
from ..distributions.normal import DiagonalGaussian
from ..networks.blocks import BlockNetwork
from .ais import _as_schedule, linear_schedule, logmeanexp, sigmoid_schedule

__all__ = [
    "BDMCResult",
    "DecoderAISResult",
    "ais_log_likelihood",
    "bdmc",
    "evaluate_log_likelihood",
    "iwae_log_likelihood",
    "log_likelihood_function",
    "ppca_log_likelihood",
    "ppca_vae",
]

SCHEDULES = {"linear": linear_schedule, "sigmoid": sigmoid_schedule}
CHUNK_ELEMENTS = 1 << 22  # decoder outputs per chunk when `chunk` is not given (16 MB float32)
PILOT_SAMPLES = 16  # codes of q(z|x) that fix a σ_x defined by the data


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
    is β-conditional). A σ_x defined by the data is fixed first — the optimum for
    max(`model.samples`, 16) codes of q(z|x), drawn with a fixed seed, as in the ELBO — so that
    the function is a proper density in x for every z and the same for every estimator."""
    likelihood = model.likelihood
    if not (isinstance(likelihood, GaussianLikelihood) and likelihood.sigma_mode.needs_data):
        return lambda z: -likelihood(x, model.decode(z, condition), condition).nll_samples
    with torch.no_grad(), torch.random.fork_rng(devices=_rng_devices(x.device)):
        torch.manual_seed(0)  # the same σ_x for every estimator and seed
        q = model.encode(x, condition)
        samples = max(model.samples, PILOT_SAMPLES)
        pilot = q.rsample(samples) if hasattr(q, "rsample") else q.sample(samples)
        mean, extra = likelihood.split(model.decode(pilot, condition))
        log_sigma = likelihood.sigma_mode.log_sigma((x - mean) ** 2, extra, condition).detach()

    def log_px_z(z: Tensor) -> Tensor:
        mean, _ = likelihood.split(model.decode(z, condition))
        return gaussian_log_density(x, mean, 2.0 * log_sigma).flatten(2).sum(-1)

    return log_px_z


def _resolve_schedule(schedule: str | Sequence[float] | Tensor, steps: int) -> Tensor:
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; one of {', '.join(SCHEDULES)}")
        return SCHEDULES[schedule](steps)
    return _as_schedule(schedule)


def _log_ess(log_w: Tensor, log_w2: Tensor) -> Tensor:
    """log of (Σw)²/Σw² from log Σw and log Σw² (dimension already reduced)."""
    return 2.0 * log_w - log_w2


# --- IWAE ---------------------------------------------------------------------------------------


def _iwae(model, x, k, chunk, beta) -> tuple[Tensor, Tensor]:
    """(IWAE estimate [B], ESS of the k importance weights [B]), in the current RNG state."""
    if k < 1:
        raise ValueError(f"need k ≥ 1 importance samples, got {k}")
    x = x.to(_device(model))
    n = len(x)
    _, cond = model.condition(n, beta, x.device)
    q = model.encode(x, cond)
    draw = q.rsample if hasattr(q, "rsample") else q.sample
    log_px_z = log_likelihood_function(model, x, cond)
    if chunk is None:
        outputs = x[0].numel() * getattr(model.likelihood, "outputs_per_dim", 1)
        chunk = max(1, CHUNK_ELEMENTS // (n * outputs))
    chunk = max(1, min(int(chunk), k))
    lse = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)
    lse2 = lse.clone()  # log Σ w², for the effective sample size
    for start in range(0, k, chunk):
        # one draw per sample, in order: the same codes whatever the chunk size
        z = torch.cat([draw(1) for _ in range(min(chunk, k - start))])  # [c, B, L]
        log_w = (log_px_z(z) + model.prior.log_prob(z) - q.log_prob(z)).double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2.0 * log_w, 0))
    return lse - math.log(k), _log_ess(lse, lse2).exp()


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

    `model`: any vaelab VAE whose posterior has ``rsample`` (Gaussian) or ``sample``
    (Bernoulli) and ``log_prob``. `x` [B, *data]. `chunk`: codes per decoder call (default: as
    many as keep the decoder output of a chunk near 4M numbers); the result does not depend on
    it. `beta`: the β at which to run a β-conditional model (default its configured β).
    `seed`: seeds the draws (the global RNG is restored afterwards); None uses the global RNG.
    """
    with _evaluating(model, seed, _device(model)):
        return _iwae(model, x, k, chunk, beta)[0]


# --- AIS with HMC -------------------------------------------------------------------------------


@dataclass
class DecoderAISResult:
    """AIS estimates of log p(x) per example, with diagnostics.

    ``log_likelihood`` [B] = logmeanexp over the C chains of ``log_weights`` [C, B] (float64);
    ``acceptance`` [B]: HMC acceptance probability averaged over transitions and chains;
    ``step_size`` [C, B]: the adapted leapfrog step sizes at the end; ``betas`` [K + 1]: the
    schedule as run (falling from 1 to 0 for reverse AIS, whose ``log_likelihood`` is then the
    upper bound −logmeanexp(log w)); ``chains`` [C, B, L]: the final states if asked for (for
    forward AIS approximately posterior samples).
    """

    log_likelihood: Tensor
    log_weights: Tensor
    acceptance: Tensor
    step_size: Tensor
    betas: Tensor
    chains: Tensor | None = None

    @property
    def ess(self) -> Tensor:
        """Effective sample size (Σw)²/Σw² of the chains' weights, per example [B]."""
        lw = self.log_weights
        return _log_ess(torch.logsumexp(lw, 0), torch.logsumexp(2.0 * lw, 0)).exp()

    @property
    def std_error(self) -> Tensor:
        """Delta-method standard error of log p̂ per example, std(w)/(√C·mean(w)) — it measures
        the spread of the chains only, not the bias of too short a schedule."""
        c = self.log_weights.shape[0]
        if c < 2:
            return torch.full_like(self.log_likelihood, math.inf)
        w = torch.exp(self.log_weights - self.log_weights.max(0).values)
        return w.std(0) / (math.sqrt(c) * w.mean(0))


class _State:
    """Chains z [C, B, L] with log p(z), log p(x|z) [C, B] and their gradients in z."""

    def __init__(self, z, log_prior, log_lik, grad_prior, grad_lik):
        self.z, self.log_prior, self.log_lik = z, log_prior, log_lik
        self.grad_prior, self.grad_lik = grad_prior, grad_lik

    def log_f(self, beta: float) -> Tensor:
        return self.log_prior + beta * self.log_lik

    def grad_log_f(self, beta: float) -> Tensor:
        return self.grad_prior + beta * self.grad_lik

    def where(self, keep: Tensor, other: _State) -> _State:
        """Elementwise: self where `keep` [C, B], else `other`."""
        k3 = keep[..., None]
        return _State(
            torch.where(k3, self.z, other.z),
            torch.where(keep, self.log_prior, other.log_prior),
            torch.where(keep, self.log_lik, other.log_lik),
            torch.where(k3, self.grad_prior, other.grad_prior),
            torch.where(k3, self.grad_lik, other.grad_lik),
        )


def _evaluate(prior, log_px_z, z: Tensor) -> _State:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        if isinstance(prior, StandardNormal):  # ∇ log N(z; 0, I) = −z: one backward pass less
            log_prior, grad_prior = prior.log_prob(z.detach()), -z.detach()
        else:
            log_prior = prior.log_prob(z)
            (grad_prior,) = torch.autograd.grad(log_prior.sum(), z)
        log_lik = log_px_z(z)
        (grad_lik,) = torch.autograd.grad(log_lik.sum(), z)
    return _State(z.detach(), log_prior.detach(), log_lik.detach(), grad_prior, grad_lik)


def _anneal(
    prior,
    log_px_z,
    z: Tensor,
    betas: Tensor,
    leapfrog: int,
    step_size: float,
    target_acceptance: float,
    adapt: tuple[float, float],
    step_range: tuple[float, float],
    final_transition: bool,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """AIS from chains z [C, B, L] (exact samples of p_{β_0}) along `betas` (rising or
    falling): log w += (β_t − β_{t−1}) log p(x|z), then one HMC transition leaving
    p_{β_t}(z) ∝ p(z) p(x|z)^{β_t} invariant. Returns (log w [C, B] float64, final z, mean
    acceptance probability [C, B], step sizes [C, B])."""
    from tqdm.auto import tqdm

    if leapfrog < 1:
        raise ValueError(f"need at least one leapfrog step, got {leapfrog}")
    state = _evaluate(prior, log_px_z, z)
    shape = state.log_lik.shape
    log_w = torch.zeros(shape, dtype=torch.float64, device=z.device)
    eps = torch.full(shape, float(step_size), dtype=z.dtype, device=z.device)
    avg_accept = torch.full(shape, target_acceptance, dtype=z.dtype, device=z.device)
    accept_total = torch.zeros(shape, dtype=torch.float64, device=z.device)
    transitions = 0
    dec, inc = adapt
    betas = betas.tolist()
    last = len(betas) - 1
    for t in tqdm(range(1, last + 1), desc="AIS", disable=not progress, mininterval=0.5):
        beta = betas[t]
        log_w += (beta - betas[t - 1]) * state.log_lik.double()
        if t == last and not final_transition:
            break
        # HMC: momentum, leapfrog, Metropolis correction (Neal 2011), per chain
        e = eps[..., None]
        p0 = torch.randn_like(state.z)
        p = p0 + 0.5 * e * state.grad_log_f(beta)
        new = state
        for step in range(leapfrog):
            new = _evaluate(prior, log_px_z, new.z + e * p)
            p = p + (e if step < leapfrog - 1 else 0.5 * e) * new.grad_log_f(beta)
        log_ratio = (new.log_f(beta) - 0.5 * (p * p).sum(-1)) - (
            state.log_f(beta) - 0.5 * (p0 * p0).sum(-1)
        )
        log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
        accept_prob = torch.exp(log_ratio.clamp(max=0.0))
        accept = torch.rand_like(accept_prob) < accept_prob
        state = new.where(accept, state)
        # step size towards the target acceptance, per chain (Wu et al. 2017, after Neal)
        avg_accept = 0.9 * avg_accept + 0.1 * accept_prob
        eps = (eps * torch.where(avg_accept > target_acceptance, inc, dec)).clamp(*step_range)
        accept_total += accept_prob.double()
        transitions += 1
    mean_accept = accept_total / max(transitions, 1)
    return log_w, state.z, mean_accept, eps


def _check_continuous(model) -> None:
    if isinstance(model.prior, UniformBernoulli):
        raise ValueError("AIS with HMC needs continuous (Gaussian) latents; use exact enumeration")


def _prior_chains(model, chains: int, n: int, device) -> Tensor:
    return model.prior.sample(chains * n, device=device).reshape(chains, n, -1)


@torch.no_grad()
def ais_log_likelihood(
    model,
    x: Tensor,
    steps: int = 1000,
    leapfrog: int = 10,
    step_size: float = 0.05,
    chains: int = 16,
    schedule: str | Sequence[float] | Tensor = "sigmoid",
    seed: int | None = 0,
    return_chains: bool = False,
    beta: float | Tensor | None = None,
    target_acceptance: float = 0.65,
    adapt: tuple[float, float] = (0.98, 1.02),
    step_range: tuple[float, float] = (1e-4, 0.5),
    progress: bool = False,
) -> DecoderAISResult:
    """AIS estimate of log p(x) per example for a decoder-based model with continuous latents
    (Wu et al. 2017): `chains` chains per example start at the prior and anneal through
    p_t(z|x) ∝ p(z) p(x|z)^{β_t} by HMC, all examples and chains batched as [C, B] codes.

    `steps`: K transitions (K + 1 distributions) on the `schedule` ("sigmoid" or "linear",
    ``vaelab.evaluation.ais``), or the β's themselves (rising from 0 to 1; then `steps` is
    ignored). `leapfrog`: steps per HMC transition. `step_size`: the initial leapfrog step, then
    multiplied per chain by 1.02 (or 0.98) after each transition while a running mean of its
    acceptance probability is above (below) `target_acceptance`, within `step_range`.
    `beta`: the β of a β-conditional model. `seed`: seeds everything (RNG restored afterwards).
    Cost: steps × leapfrog decoder forward+backward passes on chains × B codes.
    """
    _check_continuous(model)
    betas = _resolve_schedule(schedule, steps)
    device = _device(model)
    x = x.to(device)
    with _evaluating(model, seed, device):
        _, cond = model.condition(len(x), beta, device)
        z0 = _prior_chains(model, chains, len(x), device)
        log_w, z, accept, eps = _anneal(
            model.prior,
            log_likelihood_function(model, x, cond),
            z0,
            betas,
            leapfrog=leapfrog,
            step_size=step_size,
            target_acceptance=target_acceptance,
            adapt=adapt,
            step_range=step_range,
            final_transition=return_chains,
            progress=progress,
        )
    return DecoderAISResult(
        logmeanexp(log_w, 0), log_w, accept.mean(0), eps, betas, z if return_chains else None
    )


# --- BDMC ---------------------------------------------------------------------------------------


@dataclass
class BDMCResult:
    """Bidirectional Monte Carlo on n examples simulated from the model: ``lower`` [n]
    (forward AIS) ≤ log p(x) ≤ ``upper`` [n] (reverse AIS), both stochastic bounds (in
    expectation of p̂ resp. 1/p̂). ``x`` [n, *data] and ``z`` [n, L] are the simulated pairs."""

    x: Tensor
    z: Tensor
    forward: DecoderAISResult
    reverse: DecoderAISResult

    @property
    def lower(self) -> Tensor:
        return self.forward.log_likelihood

    @property
    def upper(self) -> Tensor:
        return self.reverse.log_likelihood

    @property
    def gap(self) -> Tensor:
        """upper − lower per example [n]: the error bound of AIS with this schedule."""
        return self.upper - self.lower


def _simulate(model, n: int, cond, device) -> tuple[Tensor, Tensor]:
    """(z [n, L], x [n, *data]) ~ p(z) p(x|z)."""
    likelihood = model.likelihood
    if getattr(getattr(likelihood, "sigma_mode", None), "needs_data", False):
        raise ValueError(
            "BDMC simulates data from the model, and a σ_x mode defined by the data "
            f"({type(likelihood.sigma_mode).__name__}) has no σ_x without it"
        )
    if not hasattr(likelihood, "sample"):
        raise ValueError(f"{type(likelihood).__name__} cannot sample data for BDMC")
    z = model.prior.sample(n, device=device)
    output = model.decode(z, cond)
    x = likelihood.sample(output, cond) if cond is not None else likelihood.sample(output)
    return z, x


@torch.no_grad()
def bdmc(
    model,
    n: int,
    steps: int = 1000,
    leapfrog: int = 10,
    step_size: float = 0.05,
    chains: int = 1,
    schedule: str | Sequence[float] | Tensor = "sigmoid",
    seed: int | None = 0,
    beta: float | None = None,
    target_acceptance: float = 0.65,
    adapt: tuple[float, float] = (0.98, 1.02),
    step_range: tuple[float, float] = (1e-4, 0.5),
    progress: bool = False,
) -> BDMCResult:
    """Sandwich log p(x) on n examples (z, x) ~ p(z) p(x|z) simulated from the model
    (Grosse, Ghahramani & Adams 2015; Wu et al. 2017, §3).

    Forward AIS from the prior (as ``ais_log_likelihood``) gives the stochastic lower bound.
    Reverse AIS starts every chain at the simulated z — an exact sample of p(z|x), the
    distribution at β = 1 — and anneals down the same schedule to the prior: its weights
    estimate p(x)⁻¹ without bias, so −logmeanexp(log w_reverse) is a stochastic upper bound.
    Options as for ``ais_log_likelihood``; both directions share the settings.
    """
    _check_continuous(model)
    betas = _resolve_schedule(schedule, steps)
    device = _device(model)
    options = dict(
        leapfrog=leapfrog,
        step_size=step_size,
        target_acceptance=target_acceptance,
        adapt=adapt,
        step_range=step_range,
        final_transition=False,
        progress=progress,
    )
    with _evaluating(model, seed, device):
        _, cond = model.condition(n, beta, device)
        z, x = _simulate(model, n, cond, device)
        log_px_z = log_likelihood_function(model, x, cond)
        z0 = _prior_chains(model, chains, n, device)
        fw, _, fw_accept, fw_eps = _anneal(model.prior, log_px_z, z0, betas, **options)
        z1 = z[None].expand(chains, *z.shape).contiguous()
        reverse_betas = betas.flip(0)
        rv, _, rv_accept, rv_eps = _anneal(model.prior, log_px_z, z1, reverse_betas, **options)
    forward = DecoderAISResult(logmeanexp(fw, 0), fw, fw_accept.mean(0), fw_eps, betas)
    reverse = DecoderAISResult(-logmeanexp(rv, 0), rv, rv_accept.mean(0), rv_eps, reverse_betas)
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
    nats per example, with its standard error over examples and bits/dim for image data.

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
                ll, batch_ess = r.log_likelihood, r.ess
                acceptance.append(r.acceptance)
            values.append(ll.cpu())
            ess.append(batch_ess.cpu())
    ll = torch.cat(values)
    result: dict[str, float | int | str] = {"method": method, "examples": n}
    if method == "iwae":
        result["k"] = k
    else:
        result.update(steps=k, chains=chains, leapfrog=leapfrog)
    if model.conditional:
        result["beta"] = float(model.beta if beta is None else beta)
    result["log_likelihood"] = float(ll.mean())
    result["negative_log_likelihood"] = -float(ll.mean())
    result["std_error"] = float(ll.std() / math.sqrt(n)) if n > 1 else math.inf
    if isinstance(data, ImageData):
        result["bits_per_dim"] = -float(ll.mean()) / (math.prod(data.shape) * math.log(2.0))
    result["ess"] = float(torch.cat(ess).mean())
    if acceptance:
        result["acceptance"] = float(torch.cat(acceptance).mean())
    result["seconds"] = time.perf_counter() - start_time
    return result


# --- probabilistic PCA: an exact reference ------------------------------------------------------


def ppca_log_likelihood(W: Tensor, mu: Tensor, sigma: float | Tensor, x: Tensor) -> Tensor:
    """Exact log p(x) [B] (float64) of p(z) = N(0, I_L), p(x|z) = N(Wz + μ, σ²I_D), i.e.
    x ~ N(μ, WWᵀ + σ²I). W [D, L], μ [D], x [B, D]."""
    W, mu, x = (torch.as_tensor(t, dtype=torch.float64) for t in (W, mu, x))
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    cov = W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


def ppca_vae(W: Tensor, mu: Tensor, sigma: float) -> nn.Module:
    """A vaelab ``VAE`` that *is* probabilistic PCA: decoder μ(z) = Wz + μ with fixed σ_x = σ
    (data shape (D,)), prior N(0, I_L), and as encoder the posterior's mean-field optimum

        q(z|x) = N(M⁻¹Wᵀ(x − μ), diag σ²/M_jj),  M = WᵀW + σ²I,

    which has the exact posterior mean and equals the exact posterior N(M⁻¹Wᵀ(x − μ), σ²M⁻¹)
    when W has orthogonal columns (M diagonal); otherwise the ELBO and IWAE are not tight.
    Both networks are BlockNetworks with no blocks and one Linear head (float32)."""
    from ..models.vae import VAE

    W = torch.as_tensor(W, dtype=torch.float64)
    mu = torch.as_tensor(mu, dtype=torch.float64)
    d, latent = W.shape
    M = W.T @ W + sigma**2 * torch.eye(latent, dtype=torch.float64)
    A = torch.linalg.solve(M, W.T)  # [L, D]
    log_var = torch.log(sigma**2 / torch.diagonal(M))
    enc = nn.Linear(d, 2 * latent)
    dec = nn.Linear(latent, d)
    with torch.no_grad():
        enc.weight.copy_(torch.cat([A, torch.zeros_like(A)]))
        enc.bias.copy_(torch.cat([-A @ mu, log_var]))
        dec.weight.copy_(W)
        dec.bias.copy_(mu)
    likelihood = GaussianLikelihood((d,), sigma_mode="fixed", sigma=float(sigma))
    model = VAE(
        BlockNetwork([], enc),
        BlockNetwork([], dec),
        DiagonalGaussian,
        likelihood,
        StandardNormal(latent),
    )
    return model.eval()
