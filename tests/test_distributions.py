"""The likelihood, posterior and KL formulas against their definitions (DESIGN §1a)."""

import math

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.distributions import (
    BernoulliLikelihood,
    DiagonalGaussian,
    GaussianLikelihood,
    StandardNormal,
    kl_divergence,
    soft_lower_bound,
)
from vaelab.models import build_vae

SHAPE = (1, 4, 5)  # D = 20
D = 20
NO_BOUND = -50.0  # a soft lower bound far below every σ used here


def batch(seed=0, b=6, s=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *SHAPE, generator=g)
    mean = torch.rand(s, b, *SHAPE, generator=g)
    return x, mean


def distortion_sum(x, mean, sigma):
    lik = GaussianLikelihood(SHAPE, "fixed", sigma=sigma)
    return lik(x, mean).nll.sum()


def test_optimal_shared_sigma_is_batch_mse_and_minimises_distortion():
    x, mean = batch()
    rec = GaussianLikelihood(SHAPE, "optimal-shared", log_sigma_min=NO_BOUND)(x, mean)
    mse = ((x - mean) ** 2).mean()
    assert rec.sigma.item() ** 2 == pytest.approx(mse.item(), rel=1e-5)
    best = rec.nll.sum().item()
    assert best == pytest.approx(distortion_sum(x, mean, math.sqrt(mse)).item(), rel=1e-6)
    for factor in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
        assert distortion_sum(x, mean, factor * math.sqrt(mse)).item() > best
    # stationary: d D / d log σ = 0 at the optimum
    lik = GaussianLikelihood(SHAPE, "learned-shared", sigma=math.sqrt(mse), log_sigma_min=NO_BOUND)
    lik(x, mean).nll.sum().backward()
    assert abs(lik.sigma_mode.raw.grad.item()) < 1e-3


def test_optimal_image_distortion_is_half_d_one_plus_log_2pi_mse():
    x, mean = batch(s=3)
    rec = GaussianLikelihood(SHAPE, "optimal-image", log_sigma_min=NO_BOUND)(x, mean)
    mse_i = ((x - mean) ** 2).mean(dim=(0, 2, 3, 4))  # over samples of z and dimensions
    expected = (D / 2) * (1 + torch.log(2 * math.pi * mse_i))
    torch.testing.assert_close(rec.nll, expected, rtol=1e-5, atol=1e-5)
    # and each example's σ_i is optimal for that example
    for i in range(len(x)):
        for factor in (0.9, 1.1):
            sigma = factor * mse_i[i].sqrt().item()
            worse = GaussianLikelihood(SHAPE, "fixed", sigma=sigma)(
                x[i : i + 1], mean[:, i : i + 1]
            ).nll
            assert worse.item() > rec.nll[i].item()


def test_gaussian_nll_matches_torch_normal_for_per_pixel_and_amortized_sigma():
    x, mean = batch(s=2)
    log_sigma = torch.randn(SHAPE) * 0.3 - 1.0
    lik = GaussianLikelihood(SHAPE, "learned-pixel", log_sigma_min=NO_BOUND)
    lik.sigma_mode.raw.data.copy_(log_sigma)
    expected = (
        -torch.distributions.Normal(mean, log_sigma.exp()).log_prob(x).flatten(2).sum(-1).mean(0)
    )
    torch.testing.assert_close(lik(x, mean).nll, expected)

    amortized = GaussianLikelihood(SHAPE, "amortized", log_sigma_min=NO_BOUND)
    head = log_sigma.expand_as(mean)
    output = torch.cat([mean, head], dim=-3)
    torch.testing.assert_close(amortized(x, output).nll, expected)


def test_soft_lower_bound_keeps_sigma_above_the_bound_without_nan():
    raw = torch.tensor([-1e4, -30.0, -6.0, 0.0, 3.0], requires_grad=True)
    bounded = soft_lower_bound(raw, -6.0)
    assert (bounded > -6.0 - 1e-6).all() and torch.isfinite(bounded).all()
    assert bounded[-1].item() == pytest.approx(3.0, abs=1e-3)
    bounded.sum().backward()
    assert torch.isfinite(raw.grad).all()
    # optimal σ on a perfect reconstruction: finite loss and gradients
    x, _ = batch()
    mean = x[None].clone().requires_grad_(True)
    rec = GaussianLikelihood(SHAPE, "optimal-shared")(x, mean)
    rec.nll.sum().backward()
    assert torch.isfinite(rec.nll).all() and torch.isfinite(mean.grad).all()


def test_bernoulli_nll_matches_torch_bernoulli():
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((5, *SHAPE), 0.4), generator=g)
    logits = torch.randn(2, 5, *SHAPE, generator=g)
    rec = BernoulliLikelihood(SHAPE)(x, logits)
    expected = -torch.distributions.Bernoulli(logits=logits).log_prob(x).flatten(2).sum(-1).mean(0)
    torch.testing.assert_close(rec.nll, expected)


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(2)
    q = DiagonalGaussian(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.5)
    p = StandardNormal(3)
    analytic = kl_divergence(q, p)
    z = q.rsample(200_000)
    log_ratio = q.log_prob(z) - p.log_prob(z)  # [S, B]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    assert ((mc - analytic).abs() < 4 * se + 1e-3).all(), (mc, analytic, se)
    # and the entropy of q: −E log q
    torch.testing.assert_close(-q.log_prob(z).mean(0), q.entropy(), atol=0.02, rtol=0)


def test_log_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(3)
    q = DiagonalGaussian(torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g))
    z = torch.randn(7, 4, 3, generator=g)
    ref = torch.distributions.Normal(q.mean, q.std).log_prob(z).sum(-1)
    torch.testing.assert_close(q.log_prob(z), ref)
    torch.testing.assert_close(
        StandardNormal(3).log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    )


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_classic_beta_vae_equals_gaussian_with_sigma_squared_beta_over_two(beta):
    """Σ(x−μ)² + β·KL has the gradients of −ELBO with fixed σ² = β/2, times β = 2σ²."""
    cfg = ModelConfig(
        latent_dim=3, hidden=[16], sigma_mode="fixed", sigma=math.sqrt(beta / 2), beta=1.0
    )
    torch.manual_seed(0)
    model = build_vae(cfg, SHAPE)
    x = torch.rand(8, *SHAPE)

    def grads(loss_fn):
        model.zero_grad()
        torch.manual_seed(5)  # the same ε in both passes
        loss_fn().backward()
        return [p.grad.clone() for p in model.parameters()]

    def classic():
        q = model.encode(x)
        mean = model.likelihood.mean(model.decode(q.rsample(1)))
        return (
            ((x - mean) ** 2).flatten(2).sum(-1).mean(0) + beta * kl_divergence(q, model.prior)
        ).sum()

    g_classic = grads(classic)
    g_gauss = grads(lambda: model(x).loss.sum())
    for a, b in zip(g_classic, g_gauss):
        torch.testing.assert_close(a, beta * b, rtol=1e-4, atol=1e-6)
    # the losses differ by the constant (D/2)·log(2πσ²) per example, times β
    torch.manual_seed(5)
    c = classic().item()
    torch.manual_seed(5)
    nelbo = model(x).loss.sum().item()
    assert c == pytest.approx(
        beta * (nelbo - len(x) * (D / 2) * math.log(2 * math.pi * beta / 2)), rel=1e-4
    )
