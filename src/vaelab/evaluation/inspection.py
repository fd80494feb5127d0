"""Looking at a trained model: samples, latent traversals and interpolations.

Plain functions of a model that return tensors and write nothing (the figures are
`evaluation.figures`', the files the command line's: `vaelab sample | traverse |
interpolate`). Each puts the model in eval mode and leaves it there; randomness (only
`sample` draws) comes from its `seed`, in a forked random stream, so the caller's is left as
it was. Decodes are the likelihood's means E[x|z] (`Likelihood.mean`) of the returned codes.

- `sample`: codes z = T·ε with ε ~ p(z) (`temperature` T; for the standard-normal prior
  z ~ N(0, T² I); a prior that is not N(0, I), e.g. the uniform Bernoulli prior of binary
  codes, refuses T ≠ 1), or, with `sampler="two-stage"`, codes from a second-stage VAE fitted
  to the aggregated posterior q(z) (Dai & Wipf 2019; `models.two_stage`): z ~ p(z|u) with
  u = T·η, η ~ N(0, I) of the second stage (T = 1: `two_stage_generate`'s codes). A second
  stage is a `training.fit` directory such as the rd-study writes in
  <study>/second-stage/<run> (`SECOND_STAGE_DIR`, `find_second_stage`,
  `load_second_stage`).
- `traverse`: per latent dimension j, codes equal to a base code — the posterior mean of a
  test example, or 0 — except z_j, which runs over `steps` values from base_j − span to
  base_j + span (prior standard deviations, 1 for N(0, I)). By default the dimensions are the
  active ones (Var_x E[z_j|x] > threshold) ordered by their mean KL(q(z_j|x) ‖ p(z_j)),
  largest first, both from `kl_decomposition.latent_usage` over the examples given.
- `interpolate`: codes between the posterior means of two examples, linear or spherical
  (slerp, Shoemake 1985, as White 2016 uses it for generative models: sin((1−t)θ)/sin θ·a +
  sin(tθ)/sin θ·b with θ the angle between a and b; linear where sin θ ≈ 0 — equal
  directions, opposite ones or a zero endpoint — and `mode` then says "linear").

β-conditional models: every function takes `beta` (default: the model's own β) and runs the
encoder and decoder at ℓ(β); `traverse_betas` gives one traversal per β of a list, of the same
dimensions. An unconditional model refuses a `beta` (its β was fixed in training). Traversals
and interpolations need continuous latents (a Gaussian posterior; the traversal also the
N(0, I) prior its span is measured in).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..checkpoint import load_checkpoint, load_model_weights
from ..distributions import gaussian_log_density
from ..errors import CheckpointError, VaelabError
from ..models import VAE
from ..models.two_stage import SecondStageLoss, build_second_stage
from ..training import CHECKPOINT
from .kl_decomposition import latent_usage

SAMPLERS = ("prior", "two-stage")
MODES = ("linear", "spherical")
SECOND_STAGE_DIR = "second-stage"  # <study>/second-stage/<run>, as experiments/study.py writes
USAGE_EXAMPLES = 5000  # examples of the KL ordering from a data set (as run reports use)
SLERP_EPS = 1e-6  # sin θ below which slerp is taken as linear


class Samples(NamedTuple):
    codes: Tensor  # [n, L]
    means: Tensor  # [n, *data]: E[x|z] of the codes


class Traversal(NamedTuple):
    codes: Tensor  # [D, steps, L]: the base code with z_j replaced, j = dims[d]
    means: Tensor  # [D, steps, *data]
    dims: list[int]  # the latent dimension of each row
    values: Tensor  # [D, steps]: z_j along each row
    kl: list[float] | None  # mean KL(q(z_j|x) ‖ p(z_j)) of each row's dimension (nats)


class BetaTraversals(NamedTuple):
    betas: list[float]
    codes: Tensor  # [K, D, steps, L]
    means: Tensor  # [K, D, steps, *data]
    dims: list[int]
    values: Tensor  # [K, D, steps]
    kl: list[list[float]]  # [K][D] (nats); [] when given dims and no data


class Interpolation(NamedTuple):
    codes: Tensor  # [steps, L]
    means: Tensor  # [steps, *data]
    t: Tensor  # [steps]: 0 at the first example, 1 at the second
    mode: str  # what was done: "linear", or "spherical" unless it fell back


# --- checks ------------------------------------------------------------------------------


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise VaelabError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _at_least(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise VaelabError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return value


def _condition(model: VAE, n: int, beta: float | None) -> Tensor | None:
    """ℓ of `beta` for n examples (None: unconditional), the model put in eval mode; an
    unconditional model refuses a `beta`."""
    model.eval()
    if beta is not None:
        _positive("beta", beta)
        if not model.conditional:
            raise VaelabError(
                f"beta = {beta:g} given, but this model is not β-conditional (trained at "
                f"β = {model.beta:g}, no β input); leave beta out"
            )
    return model.condition(n, beta, _device(model))[1]


def _device(model: VAE) -> torch.device:
    return next(model.parameters()).device


def is_standard_normal(prior) -> bool:
    """Whether `prior`'s density is that of N(0, I) (checked at a few fixed points)."""
    if not prior.continuous:
        return False
    z = torch.linspace(-2.0, 2.0, 3 * prior.latent_dim).reshape(3, prior.latent_dim)
    zero = torch.zeros(())
    expected = gaussian_log_density(z, zero, zero).sum(-1)
    return torch.allclose(prior.log_prob(z), expected, rtol=1e-5, atol=1e-4)


def _require_continuous(model: VAE, what: str, prior: bool = False) -> None:
    if not model.posterior.continuous:
        raise VaelabError(
            f"{what}: this model's latents are discrete codes; it needs continuous ones"
        )
    if prior and not is_standard_normal(model.prior):
        raise VaelabError(
            f"{what}: needs the standard-normal prior N(0, I) (its span is in prior s.d.)"
        )


def _one_example(model: VAE, x: Tensor, what: str) -> Tensor:
    """`x` [*data] or [1, *data] as [1, *data] on the model's device."""
    shape = model.likelihood.data_shape
    x = torch.as_tensor(x, dtype=torch.float32)
    if tuple(x.shape) == shape:
        x = x.unsqueeze(0)
    if tuple(x.shape) != (1, *shape):
        raise VaelabError(
            f"{what}: expected one example of shape {list(shape)}, got {list(x.shape)}"
        )
    return x.to(_device(model))


def _decode_means(model: VAE, codes: Tensor, cond: Tensor | None) -> Tensor:
    return model.likelihood.mean(model.decode(codes, cond))


def beta_outside_range(model: VAE, betas: Sequence[float]) -> list[float]:
    """The βs of `betas` outside a β-conditional model's training range (it extrapolates
    there); [] for an unconditional model."""
    if not model.conditional:
        return []
    low, high = model.beta_prior.low, model.beta_prior.high
    return [b for b in betas if not low <= b <= high]


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global random stream seeded with `seed` inside, restored after."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# --- sampling ------------------------------------------------------------------------------


@torch.no_grad()
def sample(
    model: VAE,
    n: int,
    beta: float | None = None,
    temperature: float = 1.0,
    sampler: str = "prior",
    second_stage: VAE | str | Path | None = None,
    seed: int = 0,
) -> Samples:
    """n codes and their decoder means at `beta` (module docstring): z = T·ε, ε ~ p(z)
    (`sampler="prior"`), or from `second_stage` (a second-stage VAE, or the directory of its
    fit) with `sampler="two-stage"`."""
    _at_least("n", n, 1)
    temperature = _positive("temperature", temperature)
    if sampler not in SAMPLERS:
        raise VaelabError(f"sampler {sampler!r} unknown; known: {', '.join(SAMPLERS)}")
    cond = _condition(model, n, beta)
    device = _device(model)
    if sampler == "prior":
        if temperature != 1.0 and not is_standard_normal(model.prior):
            raise VaelabError(
                "temperature ≠ 1 scales draws of the N(0, I) prior; this model's prior is "
                "another one (e.g. binary codes): use temperature 1"
            )
        with _seeded(seed, device):
            codes = temperature * model.prior.sample(n, device=device)
    else:
        if second_stage is None:
            raise VaelabError("sampler 'two-stage' needs a second stage (second_stage=...)")
        if not isinstance(second_stage, VAE):
            second_stage = load_second_stage(model, second_stage)
        second_stage.eval()
        with _seeded(seed, device):  # `models.two_stage.second_stage_codes` with u scaled by T
            u = temperature * second_stage.prior.sample(n, device=device)
            codes = second_stage.likelihood.sample(second_stage.decode(u, cond), cond)
    return Samples(codes, _decode_means(model, codes, cond))


def load_second_stage(first: VAE, run_dir: str | Path) -> VAE:
    """The second stage fitted to `first` in `run_dir` (`experiments.study.fit_second_stage`:
    a `training.fit` directory whose config says fit.second_stage.hidden), in eval mode; one
    line when `run_dir` holds none or its weights do not fit `first`."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise VaelabError(f"{str(run_dir)!r} holds no {CHECKPOINT}: not a second-stage fit")
    tensors, meta = load_checkpoint(path)
    config = meta.get("config")
    fit = config.get("fit") if isinstance(config, dict) else None
    hidden = fit.get("second_stage", {}).get("hidden") if isinstance(fit, dict) else None
    if not (isinstance(hidden, list) and all(isinstance(h, int) and h > 0 for h in hidden)):
        raise CheckpointError(
            f"{str(path)!r} is not a second-stage fit (its config has no fit.second_stage."
            f"hidden); the rd-study writes them in <study>/{SECOND_STAGE_DIR}/<run>"
        )
    second = build_second_stage(first, hidden)
    load_model_weights(SecondStageLoss(second), tensors, f"second stage {str(path)!r}")
    return second.eval()


def find_second_stage(run_dir: str | Path) -> Path | None:
    """The second stage of the run in `run_dir` where a study keeps it: A/second-stage/R for
    the nearest folder A above the run, R the run's path below A; None when there is none."""
    run_dir = Path(run_dir).resolve()
    for above in run_dir.parents:
        candidate = above / SECOND_STAGE_DIR / run_dir.relative_to(above)
        if (candidate / CHECKPOINT).is_file():
            return candidate
    return None


# --- traversals ----------------------------------------------------------------------------


def active_dims_by_kl(usage: dict[str, Any]) -> list[int]:
    """The active dimensions of a `latent_usage` result (Var_x E[z_j|x] > its threshold),
    ordered by mean KL, largest first (ties by index)."""
    kl, variance = usage["kl_per_dimension"], usage["mean_variance"]
    active = [j for j, v in enumerate(variance) if v > usage["threshold"]]
    return sorted(active, key=lambda j: (-kl[j], j))


def _usage(model: VAE, data, beta: float | None, what: str) -> dict[str, Any]:
    if data is None:
        raise VaelabError(f"{what}: give dims, or data (or usage) to order the dimensions by KL")
    data = data[:USAGE_EXAMPLES] if isinstance(data, Tensor) else data.limit(USAGE_EXAMPLES)
    return latent_usage(model, data, beta=beta)


def _check_dims(dims: Sequence[int], latent_dim: int, what: str) -> list[int]:
    dims = list(dims)
    if not dims:
        raise VaelabError(f"{what}: no dimension to traverse")
    for j in dims:
        if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < latent_dim:
            raise VaelabError(
                f"{what}: dimension {j!r} does not exist (the model has {latent_dim} latent "
                f"dimensions, 0..{latent_dim - 1})"
            )
    if len(set(dims)) < len(dims):
        raise VaelabError(f"{what}: dimensions {dims} name one twice")
    return dims


def _no_active(usage: dict[str, Any], what: str) -> VaelabError:
    return VaelabError(
        f"{what}: no active latent dimension (Var_x E[z_j|x] > {usage['threshold']:g} over the "
        "examples given); name the dimensions to traverse"
    )


@torch.no_grad()
def traverse(
    model: VAE,
    x: Tensor | None,
    dims: Sequence[int] | None = None,
    steps: int = 9,
    span: float = 3.0,
    beta: float | None = None,
    *,
    data=None,
    usage: dict[str, Any] | None = None,
    max_dims: int | None = None,
) -> Traversal:
    """A traversal of each dimension of `dims` around the posterior mean of example `x` at
    `beta` (x None: around z = 0), `steps` values over ±`span` (module docstring). `dims`
    None: the active dimensions by KL, from `usage` (a `latent_usage` result at that β) or
    computed over the first `USAGE_EXAMPLES` of `data`; at most `max_dims` of them."""
    what = "traverse"
    _require_continuous(model, what, prior=True)
    _at_least("steps", steps, 2)
    span = _positive("span", span)
    latent = model.prior.latent_dim
    if usage is None and (dims is None or data is not None):
        usage = _usage(model, data, beta, what)
    if dims is None:
        dims = active_dims_by_kl(usage)[:max_dims]
        if not dims:
            raise _no_active(usage, what)
    dims = _check_dims(dims, latent, what)
    cond = _condition(model, 1, beta)
    device = _device(model)
    if x is None:
        base = torch.zeros(latent, device=device)
    else:
        base = model.encode(_one_example(model, x, what), cond).mean[0]
    index = torch.tensor(dims, device=device)
    grid = torch.linspace(-span, span, steps, device=device)
    values = base[index][:, None] + grid  # [D, steps]
    codes = base.expand(len(dims), steps, latent).clone()
    codes[torch.arange(len(dims), device=device), :, index] = values
    kl = [usage["kl_per_dimension"][j] for j in dims] if usage else None
    return Traversal(codes, _decode_means(model, codes, cond), dims, values, kl)


@torch.no_grad()
def traverse_betas(
    model: VAE,
    x: Tensor | None,
    betas: Sequence[float],
    dims: Sequence[int] | None = None,
    steps: int = 9,
    span: float = 3.0,
    *,
    data=None,
    max_dims: int | None = None,
) -> BetaTraversals:
    """`traverse` of a β-conditional model at every β of `betas`, each around x's posterior
    mean at that β, of the same dimensions: `dims`, or those active at any of the βs ordered
    by their KL averaged over the βs (over the first `USAGE_EXAMPLES` of `data`)."""
    what = "traverse_betas"
    betas = [_positive("beta", b) for b in betas]
    if not betas:
        raise VaelabError(f"{what}: no β given")
    if not model.conditional:
        raise VaelabError(
            f"{what}: this model is not β-conditional (trained at β = {model.beta:g})"
        )
    usages = [_usage(model, data, b, what) for b in betas] if data is not None else None
    if dims is None:
        if usages is None:
            raise VaelabError(f"{what}: give dims, or data to order the dimensions by KL")
        active = set().union(*(active_dims_by_kl(u) for u in usages))
        mean_kl = {j: sum(u["kl_per_dimension"][j] for u in usages) / len(usages) for j in active}
        dims = sorted(active, key=lambda j: (-mean_kl[j], j))[:max_dims]
        if not dims:
            raise _no_active(usages[0], what)
    runs = [
        traverse(model, x, dims, steps, span, b, usage=usages[k] if usages else None)
        for k, b in enumerate(betas)
    ]
    kl = [r.kl for r in runs] if usages else []
    return BetaTraversals(
        betas,
        torch.stack([r.codes for r in runs]),
        torch.stack([r.means for r in runs]),
        runs[0].dims,
        torch.stack([r.values for r in runs]),
        kl,
    )


# --- interpolation -------------------------------------------------------------------------


def slerp(a: Tensor, b: Tensor, t: Tensor) -> tuple[Tensor, bool]:
    """Codes [len(t), L] on the arc from a to b (the standard slerp formula, in float64), and
    whether it was spherical: linear interpolation where sin θ < `SLERP_EPS` or an endpoint
    is 0 (no angle, or no unique arc)."""
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    norms = a64.norm() * b64.norm()
    if norms == 0:
        return torch.lerp(a, b, t[:, None].to(a.dtype)), False
    theta = torch.arccos((a64 @ b64 / norms).clamp(-1.0, 1.0))
    if torch.sin(theta) < SLERP_EPS:
        return torch.lerp(a, b, t[:, None].to(a.dtype)), False
    codes = (torch.sin((1 - t64) * theta) * a64 + torch.sin(t64 * theta) * b64) / torch.sin(theta)
    return codes.to(a.dtype), True


@torch.no_grad()
def interpolate(
    model: VAE,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 9,
    mode: str = "linear",
    beta: float | None = None,
) -> Interpolation:
    """`steps` codes from the posterior mean of example x_a to that of x_b at `beta`
    (endpoints included), linear or spherical (`slerp`), and their decoder means."""
    what = "interpolate"
    if mode not in MODES:
        raise VaelabError(f"{what}: mode {mode!r} unknown; known: {', '.join(MODES)}")
    _require_continuous(model, what)
    _at_least("steps", steps, 2)
    cond = _condition(model, 1, beta)
    x = torch.cat([_one_example(model, x_a, what), _one_example(model, x_b, what)])
    a, b = model.encode(x, cond).mean
    t = torch.linspace(0.0, 1.0, steps, device=a.device)
    if mode == "spherical":
        codes, spherical = slerp(a, b, t)
    else:
        codes, spherical = torch.lerp(a, b, t[:, None]), False
    used = "spherical" if spherical else "linear"
    return Interpolation(codes, _decode_means(model, codes, cond), t, used)
