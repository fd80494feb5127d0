"""Probabilistic PCA (Tipping & Bishop 1999) as a reference model whose log-likelihood is exact:

    p(z) = N(0, I_L),   p(x|z) = N(Wz + μ, σ²I_D),   so   p(x) = N(μ, WWᵀ + σ²I).

`ppca_vae` builds it as a vaelab `VAE`, to check the log-likelihood estimators (IWAE, AIS,
BDMC) against `ppca_log_likelihood`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributions import DiagonalGaussian, GaussianLikelihood, StandardNormal
from ..networks.blocks import BlockNetwork
from .vae import VAE


def ppca_log_likelihood(W: Tensor, mu: Tensor, sigma: float | Tensor, x: Tensor) -> Tensor:
    """Exact log p(x) [B] (float64). W [D, L], μ [D], x [B, D]."""
    W, mu, x = (torch.as_tensor(t, dtype=torch.float64) for t in (W, mu, x))
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    cov = W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)


def ppca_vae(W: Tensor, mu: Tensor, sigma: float) -> VAE:
    """A `VAE` that *is* probabilistic PCA: decoder μ(z) = Wz + μ with fixed σ_x = σ (data
    shape (D,)), prior N(0, I_L), and as encoder the posterior's mean-field optimum

        q(z|x) = N(M⁻¹Wᵀ(x − μ), diag σ²/M_jj),  M = WᵀW + σ²I,

    which has the exact posterior mean and equals the exact posterior N(M⁻¹Wᵀ(x − μ), σ²M⁻¹)
    when W has orthogonal columns (M diagonal); otherwise the ELBO and IWAE are not tight.
    Both networks are BlockNetworks with no blocks and one Linear head (float32); the model
    is returned in evaluation mode."""
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
