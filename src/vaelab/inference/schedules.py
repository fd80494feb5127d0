"""Annealing schedules: the inverse temperatures 0 = β_0 < β_1 < … < β_K = 1 of AIS (float64,
K + 1 values)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"need at least one intermediate step, got {steps}")


def linear_schedule(steps: int) -> Tensor:
    """K = `steps` transitions, β uniform on [0, 1]."""
    _check_steps(steps)
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def sigmoid_schedule(steps: int, scale: float = 4.0) -> Tensor:
    """β_k ∝ σ(scale·(2k/K − 1)) rescaled to [0, 1] (Grosse et al. 2013): denser at both ends."""
    _check_steps(steps)
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


SCHEDULES = {"linear": linear_schedule, "sigmoid": sigmoid_schedule}


def as_schedule(betas: int | str | Sequence[float] | Tensor, steps: int | None = None) -> Tensor:
    """The inverse temperatures from an int K (K steps of `linear_schedule`), a name in
    `SCHEDULES` (with `steps` steps), or the values themselves (checked to rise from 0 to 1)."""
    if isinstance(betas, int):
        return linear_schedule(betas)
    if isinstance(betas, str):
        if betas not in SCHEDULES:
            raise ValueError(f"unknown schedule {betas!r}; one of {', '.join(SCHEDULES)}")
        if steps is None:
            raise ValueError(f"the {betas} schedule needs a number of steps")
        return SCHEDULES[betas](steps)
    betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if len(betas) < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or (betas.diff() < 0).any():
        raise ValueError("the inverse temperatures must rise from 0 to 1")
    return betas
