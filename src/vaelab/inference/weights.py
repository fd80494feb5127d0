"""Statistics of importance weights, given as log w (float64 where it matters).

For an estimate Ẑ = (1/n) Σ_i w_i of a normaliser (IWAE's p̂(x), AIS's Ẑ):

- `logmeanexp`: log Ẑ, computed stably;
- `effective_sample_size`: (Σw)²/Σw² (Kong 1992) — n for equal weights, 1 when one weight
  dominates;
- `log_mean_exp_std_error`: the delta-method standard error of log Ẑ,
  sd(w) / (√n · mean(w)) — itself unreliable when the weights are heavy-tailed (check the
  effective sample size);
- `bootstrap_interval`: a percentile interval of log Ẑ over resampled weights;
- `standard_error`: sd/√n of a plain mean (of per-example estimates, say).

All measure the spread of the weights only, not the downward bias of log Ẑ (Jensen: E[Ẑ] = Z
makes E[log Ẑ] ≤ log Z).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def logmeanexp(log_w: Tensor, dim: int = 0) -> Tensor:
    """log (1/n) Σ_i exp(log_w_i) along `dim`."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def ess_from_sums(log_sum: Tensor, log_sum_sq: Tensor) -> Tensor:
    """(Σw)²/Σw² from log Σw and log Σw² (for weights accumulated in chunks)."""
    return torch.exp(2.0 * log_sum - log_sum_sq)


def effective_sample_size(log_w: Tensor, dim: int = 0) -> Tensor:
    """(Σw)²/Σw² of the weights along `dim`."""
    return ess_from_sums(torch.logsumexp(log_w, dim), torch.logsumexp(2.0 * log_w, dim))


def log_mean_exp_std_error(log_w: Tensor, dim: int = 0) -> Tensor:
    """Delta-method standard error of logmeanexp(log_w) along `dim`: sd(w)/(√n·mean(w))
    (∞ for a single weight)."""
    n = log_w.shape[dim]
    if n < 2:
        return torch.full_like(logmeanexp(log_w, dim), math.inf)
    w = torch.exp(log_w - log_w.amax(dim, keepdim=True))
    return w.std(dim) / (math.sqrt(n) * w.mean(dim))


def standard_error(values: Tensor) -> float:
    """sd(values)/√n of the mean of `values` (all its entries); ∞ for fewer than two."""
    n = values.numel()
    return float(values.std() / math.sqrt(n)) if n > 1 else math.inf


def bootstrap_interval(
    log_w: Tensor, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Percentile interval (low, high) of logmeanexp(log_w, 0) from `resamples` resamplings
    of the weights along dimension 0 (seeded), each [*batch]."""
    log_w = log_w.cpu()
    n = len(log_w)
    index = torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))
    estimates = logmeanexp(log_w[index], dim=1)  # [resamples, *batch]
    tail = (1.0 - confidence) / 2.0
    levels = torch.tensor([tail, 1.0 - tail], dtype=estimates.dtype)
    low, high = torch.quantile(estimates, levels, dim=0)
    return low, high
