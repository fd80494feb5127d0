"""Test-set rate, distortion and negative ELBO, averaged per example (nats)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.base import ImageSet


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data,
    batch_size: int = 500,
    device: torch.device | str | None = None,
    seed: int = 0,
    beta: float | None = None,
) -> dict[str, float]:
    """Mean of every per-example term of `model(x)` over `data`, plus bits per dimension.

    The Monte-Carlo noise is drawn from a fixed `seed`, so the same model gives the same
    numbers. The model runs in evaluation mode, so a σ_x that training fits to each batch (the
    optimal modes) is the one frozen from training: the terms do not depend on the test data's
    errors or on `batch_size`, and −ELBO bounds −log p(x). `beta`: the β
    at which to run a β-conditional model (default: its configured β), or the β weighting
    the rate in `loss` for an unconditional one.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else [device]):
        torch.manual_seed(seed)
        for start in range(0, len(data), batch_size):
            x = data.batch(slice(start, start + batch_size)).to(device)
            for name, value in model(x, beta=beta).sums().items():
                totals[name] = totals.get(name, 0.0) + value
    model.train(was_training)
    means = {name: float(total) / len(data) for name, total in totals.items()}
    if "negative_elbo" in means and isinstance(data, ImageSet):
        dims = math.prod(data.shape)
        means["bits_per_dim"] = means["negative_elbo"] / (dims * math.log(2.0))
    return means
