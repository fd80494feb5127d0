"""How estimators are registered: a function (model, x, β, ℓ) → `LossTerms`, entered in
`ESTIMATORS` with the capability flags that configs and callers read instead of names."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import ESTIMATORS


def estimator(
    name: str, *, discrete: bool, needs_rsample: bool = False, enumerates: bool = False
) -> Callable:
    """Register an estimator under `name`. `discrete`: it serves codes of finite support (a
    posterior with `has_enumerate_support`); `needs_rsample`: it differentiates through
    reparameterised samples (a posterior with `has_rsample`); `enumerates`: it sums over
    every code (a posterior that `can_enumerate` the latent size)."""

    def add(fn: Callable) -> Callable:
        fn.discrete = discrete
        fn.needs_rsample = needs_rsample
        fn.enumerates = enumerates
        return ESTIMATORS.register(name)(fn)

    return add
