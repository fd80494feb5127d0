"""Exact ELBO and log-likelihood by enumerating every latent state (binary codes, ≤ 16 bits).

With K = 2^L codes z_k:
    ELBO(x)   = Σ_k q(z_k|x) [log p(x|z_k) + log p(z_k) − log q(z_k|x)]
    log p(x)  = logsumexp_k [log p(x|z_k) + log p(z_k)]
Both are differentiable, so the exact ELBO can be trained on directly (the toy Gaussian
mixture of Shekhovtsov et al. 2022, §4.1, has K = 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..distributions import all_binary_codes, kl_divergence
from ..registry import ESTIMATORS
from .terms import LossTerms


def enumerate_states(model, x: Tensor, condition: Tensor | None = None):
    """(codes [K, L], log q(z_k|x) [K, B], log p(x|z_k) [K, B], MSE [K, B], q) for every code."""
    q = model.encode(x, condition)
    codes = all_binary_codes(q.logits.shape[-1], device=x.device)
    log_q = q.log_prob(codes[:, None, :])
    output = model.decode(codes, condition)  # [K, ...]: the decoder does not see x
    output = output[:, None].expand(len(codes), len(x), *output.shape[1:])
    rec = model.likelihood(x, output, condition)
    return codes, log_q, -rec.nll_samples, rec.mse_samples, q


@ESTIMATORS.register("exact")
def exact(model, x: Tensor, beta: Tensor, condition: Tensor | None) -> LossTerms:
    """D = E_q[−log p(x|z)] and R = KL(q ‖ p), both summed exactly over all codes."""
    codes, log_q, log_px_z, mse, q = enumerate_states(model, x, condition)
    weights = log_q.exp()
    distortion = -(weights * log_px_z).sum(0)
    rate = kl_divergence(q, model.prior)
    return LossTerms(distortion + beta * rate, distortion, rate, (weights * mse).sum(0), None)


def exact_log_likelihood(model, x: Tensor, condition: Tensor | None = None) -> Tensor:
    """log p(x) = logsumexp_k [log p(x|z_k) + log p(z_k)], per example [B]."""
    codes, _, log_px_z, _, _ = enumerate_states(model, x, condition)
    return torch.logsumexp(log_px_z + model.prior.log_prob(codes)[:, None], dim=0)
