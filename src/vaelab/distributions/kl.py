"""KL(q ‖ p) between a posterior and a prior, analytic where known, dispatched by type: one
formula per pair, per latent dimension."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from .bernoulli_latent import FactorisedBernoulli, UniformBernoulli
from .normal import DiagonalGaussian, StandardNormal

_ANALYTIC: dict[tuple[type, type], Callable[[object, object], Tensor]] = {}


def register_kl(q_type: type, p_type: type):
    def add(fn):
        _ANALYTIC[(q_type, p_type)] = fn
        return fn

    return add


def kl_per_dimension(q, p) -> Tensor:
    """Per-example KL(q_j ‖ p_j) of every latent dimension j, in nats, [..., L] (the
    registered pairs factorise over dimensions)."""
    try:
        fn = _ANALYTIC[(type(q), type(p))]
    except KeyError:
        raise NotImplementedError(
            f"no analytic KL({type(q).__name__} ‖ {type(p).__name__}) is registered"
        ) from None
    return fn(q, p)


def kl_divergence(q, p) -> Tensor:
    """Per-example KL(q ‖ p) in nats, summed over latent dimensions."""
    return kl_per_dimension(q, p).sum(-1)


@register_kl(DiagonalGaussian, StandardNormal)
def _kl_diagonal_gaussian_standard_normal(q: DiagonalGaussian, p: StandardNormal) -> Tensor:
    """½ (μ_j² + σ_j² − log σ_j² − 1) per dimension (DESIGN §1a; their sum is the rate R(x))."""
    return 0.5 * (q.mean**2 + q.log_var.exp() - q.log_var - 1.0)


@register_kl(FactorisedBernoulli, UniformBernoulli)
def _kl_bernoulli_uniform(q: FactorisedBernoulli, p: UniformBernoulli) -> Tensor:
    """log 2 − H(q_j) per bit: the rate of a binary code under the uniform prior."""
    return math.log(2.0) - q.entropy_per_dimension()
