"""Exact enumeration of binary latent codes: ELBO and log-likelihood."""

import math

import torch

from vaelab.config import ModelConfig
from vaelab.estimators.exact import enumerate_states, exact_log_likelihood
from vaelab.models import build_vae

SHAPE = (1, 3, 3)


def bernoulli_vae(bits=3):
    cfg = ModelConfig(
        latent_dim=bits, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator="exact", sigma_mode="fixed", sigma=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    return build_vae(cfg, SHAPE)


def test_enumerated_elbo_equals_the_monte_carlo_elbo_in_expectation():
    model = bernoulli_vae()
    x = torch.rand(4, *SHAPE)
    exact = model(x).negative_elbo  # [B]
    q = model.encode(x)
    z = q.sample(50_000)  # [S, B, L]
    log_px_z = -model.likelihood(x, model.decode(z)).nll_samples
    terms = log_px_z + model.prior.log_prob(z) - q.log_prob(z)  # single-sample ELBOs [S, B]
    mc, se = -terms.mean(0), terms.std(0) / math.sqrt(len(z))
    assert ((mc - exact).abs() < 4 * se).all(), (mc, exact, se)


def test_exact_log_likelihood_is_the_marginal_and_bounds_the_elbo():
    model = bernoulli_vae()
    x = torch.rand(5, *SHAPE)
    codes, log_q, log_px_z, _, _ = enumerate_states(model, x)
    brute = torch.stack(
        [torch.log(sum(torch.exp(log_px_z[k, b]) * 2**-3 for k in range(8))) for b in range(5)]
    )
    loglik = exact_log_likelihood(model, x)
    torch.testing.assert_close(loglik, brute)
    assert (loglik >= -model(x).negative_elbo - 1e-5).all()
    # the gap is KL(q(z|x) ‖ p(z|x)) ≥ 0, computed independently
    log_post = log_px_z + model.prior.log_prob(codes)[:, None] - loglik
    kl = (log_q.exp() * (log_q - log_post)).sum(0)
    torch.testing.assert_close(loglik + model(x).negative_elbo, kl)


def test_exact_elbo_is_differentiable():
    model = bernoulli_vae()
    model(torch.rand(4, *SHAPE)).loss.mean().backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0


def test_pairwise_terms_equal_the_expanded_forward():
    """The matrix-product terms for every (code, example) pair equal the likelihood's forward
    on outputs expanded to [K, B, ...] — for every likelihood with a per-code σ."""
    from vaelab.distributions import BernoulliLikelihood, GaussianLikelihood, MultinomialLikelihood

    g = torch.Generator().manual_seed(0)
    cases = [
        (
            GaussianLikelihood(SHAPE, "fixed", sigma=0.3),
            torch.randn(5, *SHAPE, generator=g),
            torch.rand(4, *SHAPE, generator=g),
        ),
        (
            GaussianLikelihood(SHAPE, "learned-pixel", sigma=0.5),
            torch.randn(5, *SHAPE, generator=g),
            torch.rand(4, *SHAPE, generator=g),
        ),
        (
            GaussianLikelihood(SHAPE, "amortized"),
            torch.randn(5, 2, 3, 3, generator=g),
            torch.rand(4, *SHAPE, generator=g),
        ),
        (
            BernoulliLikelihood(SHAPE),
            torch.randn(5, *SHAPE, generator=g),
            torch.bernoulli(torch.full((4, *SHAPE), 0.5), generator=g),
        ),
        (
            MultinomialLikelihood((7,)),
            torch.randn(5, 7, generator=g),
            torch.randint(0, 4, (4, 7), generator=g).float(),
        ),
    ]
    for likelihood, output, x in cases:
        pair = likelihood.pairwise(x, output)
        full = likelihood(x, output[:, None].expand(5, 4, *output.shape[1:]))
        torch.testing.assert_close(pair.nll_samples, full.nll_samples, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(pair.mse_samples, full.mse_samples, rtol=1e-4, atol=1e-5)
