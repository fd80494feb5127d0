"""Exact ELBO and log-likelihood by enumerating every latent state (binary codes, ≤ 16 bits).

With K = 2^L codes z_k:
    ELBO(x)   = Σ_k q(z_k|x) [log p(x|z_k) + log p(z_k) − log q(z_k|x)]
    log p(x)  = logsumexp_k [log p(x|z_k) + log p(z_k)]
Both are differentiable, so the exact ELBO can be trained on directly (the toy Gaussian
mixture of Shekhovtsov et al. 2022, §4.1, has K = 4). A σ_x fitted to the batch is fitted to
the q-weighted error Σ_k q(z_k|x)·MSE_k, the exact E_q[MSE] (the likelihood's `weights`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import estimator
from .terms import LossTerms


def enumerate_states(model, x: Tensor, condition: Tensor | None = None, budget: int = 2**22):
    """(codes [K, L], log q(z_k|x) [K, B], log p(x|z_k) [K, B], MSE [K, B], q) for every code.

    The decoder runs on chunks of codes (about `budget` numbers of output at a time), each
    chunk's terms for all examples from the likelihood's `pairwise` (matrix products, no
    [K, B, D] tensor). A σ_x fitted to the training batch needs every code's error at once,
    so in training such a likelihood gets all codes in one chunk."""
    q = model.encode(x, condition)
    codes = q.enumerate_support()
    log_q = q.log_prob(codes[:, None, :])
    weights = log_q.exp()
    likelihood = model.likelihood
    fitted_to_batch = likelihood.batch_dependent and likelihood.training
    chunk = len(codes) if fitted_to_batch else max(1, budget // math.prod(x.shape[1:]))
    log_px_z, mse = [], []
    for start in range(0, len(codes), chunk):
        part = slice(start, start + chunk)
        output = model.decode(codes[part], condition)  # the decoder does not see x
        rec = likelihood.pairwise(x, output, condition, weights[part])
        log_px_z.append(-rec.nll_samples)
        mse.append(rec.mse_samples)
    return codes, log_q, torch.cat(log_px_z), torch.cat(mse), q


@estimator("exact", discrete=True, enumerates=True)
def exact(model, x: Tensor, beta: Tensor, condition: Tensor | None) -> LossTerms:
    """D = E_q[−log p(x|z)] and R = KL(q ‖ p), both summed exactly over all codes."""
    codes, log_q, log_px_z, mse, q = enumerate_states(model, x, condition)
    weights = log_q.exp()
    distortion = -(weights * log_px_z).sum(0)
    return LossTerms.compose(distortion, q, model.prior, beta, (weights * mse).sum(0), None)


def exact_log_likelihood(model, x: Tensor, condition: Tensor | None = None) -> Tensor:
    """log p(x) = logsumexp_k [log p(x|z_k) + log p(z_k)], per example [B]."""
    codes, _, log_px_z, _, _ = enumerate_states(model, x, condition)
    return torch.logsumexp(log_px_z + model.prior.log_prob(codes)[:, None], dim=0)
