"""Encoding a whole data set: q(z|x) of every example, at one β, as one posterior."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..distributions.base import Posterior
from ..errors import VaelabError


@torch.no_grad()
def encode_data(
    model,
    data,
    beta: float | None = None,
    batch_size: int = 500,
    limit: int | None = None,
) -> Posterior:
    """q(z|x) of every example of `data` (a data set with `len` and `batch(index)`, such as
    `ImageData` or `BowData`, or inputs [N, ...] as a tensor or array), or of its first `limit`
    examples, encoded in batches of `batch_size` with the model in eval mode.

    A β-conditional model's encoder runs at ℓ(β) (`model.condition`; default: the model's own
    β); for an unconditional model `beta` changes nothing. The encoder outputs of all batches
    are joined into one posterior with batch shape [N] (`model.posterior.from_params`), on the
    CPU. The model is left in eval mode."""
    if isinstance(data, (Tensor, np.ndarray)):
        inputs = torch.as_tensor(data, dtype=torch.float32)
        n_total, batch = len(inputs), lambda index: inputs[index]
    else:
        n_total, batch = len(data), data.batch
    n_total = n_total if limit is None else min(limit, n_total)
    if n_total == 0:
        raise VaelabError("encode_data: no examples to encode")
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, n_total, batch_size):
        x = batch(slice(start, min(start + batch_size, n_total))).to(device)
        _, cond = model.condition(len(x), beta, device)
        outputs.append(model.encoder(x, cond).cpu())
    return model.posterior.from_params(torch.cat(outputs))
