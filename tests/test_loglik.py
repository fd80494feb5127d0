"""Log-likelihood estimators for decoder-based models against the exact pPCA likelihood."""

import time

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.data.base import ImageData
from vaelab.estimators.exact import exact_log_likelihood
from vaelab.evaluation.loglik import (
    ais_log_likelihood,
    bdmc,
    evaluate_log_likelihood,
    iwae_log_likelihood,
)
from vaelab.models import build_vae
from vaelab.models.ppca import ppca_log_likelihood, ppca_vae


def ppca(d=6, latent=2, sigma=0.5, n=200, seed=0, orthogonal=False):
    """A pPCA model (W, μ, σ) and n examples drawn from it."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d, latent, generator=g)
    if orthogonal:  # orthogonal columns of different lengths: the exact posterior is diagonal
        q, _ = torch.linalg.qr(W)
        W = q * torch.linspace(2.0, 1.0, latent)
    mu = 0.3 * torch.randn(d, generator=g)
    z = torch.randn(n, latent, generator=g)
    x = z @ W.T + mu + sigma * torch.randn(n, d, generator=g)
    return W, mu, sigma, x


def worse_encoder(model, latent, log_var_shift=1.0, mean_shift=0.3):
    """Move q(z|x) away from the posterior: too wide, and off-centre."""
    with torch.no_grad():
        model.encoder.head.bias[:latent] += mean_shift
        model.encoder.head.bias[latent:] += log_var_shift
    return model


def test_ppca_vae_is_ppca():
    W, mu, sigma, x = ppca(d=5, latent=2, n=50, orthogonal=True)
    model = ppca_vae(W, mu, sigma)
    z = torch.randn(7, 50, 2)
    torch.testing.assert_close(model.likelihood.mean(model.decode(z)), z @ W.T + mu)
    # the encoder is the exact posterior N(M⁻¹Wᵀ(x − μ), σ²M⁻¹), M = WᵀW + σ²I
    M = W.T @ W + sigma**2 * torch.eye(2)
    q = model.encode(x)
    torch.testing.assert_close(q.mean, (x - mu) @ W @ torch.linalg.inv(M).T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        q.log_var.exp(), (sigma**2 * torch.linalg.inv(M)).diag().expand(50, 2)
    )
    # so the ELBO is the exact log-likelihood
    model.samples = 20000
    with torch.no_grad():
        elbo = -model(x).negative_elbo.double()
    torch.testing.assert_close(elbo, ppca_log_likelihood(W, mu, sigma, x), atol=0.03, rtol=0)


def test_iwae_exact_posterior_is_exact_at_any_k():
    W, mu, sigma, x = ppca(d=6, latent=3, n=50, orthogonal=True)
    model = ppca_vae(W, mu, sigma)
    exact = ppca_log_likelihood(W, mu, sigma, x)
    for k in (1, 7, 100):
        torch.testing.assert_close(iwae_log_likelihood(model, x, k), exact, atol=2e-4, rtol=0)


def test_iwae_increases_in_k_and_converges():
    latent = 2
    W, mu, sigma, x = ppca(d=6, latent=latent, n=200)
    model = worse_encoder(ppca_vae(W, mu, sigma), latent)
    exact = ppca_log_likelihood(W, mu, sigma, x)
    means = {}
    for k in (1, 10, 100, 1000):
        runs = torch.stack([iwae_log_likelihood(model, x, k, seed=s) for s in range(4)])
        means[k] = float((runs - exact).mean())
    assert means[1] < means[10] < means[100] < means[1000] <= 0.01, means
    assert means[1] < -1.0  # the encoder is far from the posterior: the ELBO is loose
    error = iwae_log_likelihood(model, x, 5000, seed=1) - exact
    assert error.abs().mean() < 0.05 and error.abs().max() < 0.2, error.abs().max()


def test_iwae_chunks_give_the_same_result():
    W, mu, sigma, x = ppca(n=20)
    model = worse_encoder(ppca_vae(W, mu, sigma), 2)
    whole = iwae_log_likelihood(model, x, 50, chunk=50, seed=3)
    for chunk in (1, 7, None):
        torch.testing.assert_close(iwae_log_likelihood(model, x, 50, chunk=chunk, seed=3), whole)
    assert not torch.equal(iwae_log_likelihood(model, x, 50, seed=4), whole)


def test_iwae_memory_safe_on_784_dimensions():
    cfg = ModelConfig(latent_dim=2, hidden=[16], sigma_mode="fixed", sigma=0.3)
    model = build_vae(cfg, (1, 28, 28))
    x = torch.rand(4, 1, 28, 28)
    rows = []
    model.decoder.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    start = time.perf_counter()
    ll = iwae_log_likelihood(model, x, 4096, chunk=512)
    elapsed = time.perf_counter() - start
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    assert max(rows) == 512 * 4 and len(rows) == 8  # never 4096 × 4 × 784 at once
    assert elapsed < 10.0, elapsed
    rows.clear()
    iwae_log_likelihood(model, x, 4096)  # default chunk: ≈ 4M decoder outputs per call
    assert max(rows) * 784 <= 1 << 22 and len(rows) > 1
    torch.testing.assert_close(
        iwae_log_likelihood(model, x, 64, chunk=5, seed=2),
        iwae_log_likelihood(model, x, 64, chunk=64, seed=2),
    )


def test_iwae_bernoulli_latents_converge_to_enumeration():
    cfg = ModelConfig(latent_dim=3, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
                      estimator="exact", sigma_mode="fixed", sigma=0.5)  # fmt: skip
    model = build_vae(cfg, (1, 2, 2)).eval()
    x = torch.rand(30, 1, 2, 2)
    with torch.no_grad():
        exact = exact_log_likelihood(model, x).double()
        elbo = -model(x).negative_elbo.double()
    iwae = iwae_log_likelihood(model, x, 10000)
    assert (elbo <= exact + 1e-5).all()
    torch.testing.assert_close(iwae, exact, atol=0.03, rtol=0)


def test_iwae_beta_conditional():
    cfg = ModelConfig(latent_dim=2, hidden=[16], conditioning="film", sigma_mode="learned-beta",
                      beta_range=[0.1, 10.0])  # fmt: skip
    model = build_vae(cfg, (1, 4, 4))
    with torch.no_grad():  # move FiLM off its identity initialisation so that β matters
        for p in model.encoder.conditioner.parameters():
            p.add_(0.5 * torch.randn_like(p))
        for p in model.likelihood.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.rand(8, 1, 4, 4)
    at_1 = iwae_log_likelihood(model, x, 100, beta=1.0)
    torch.testing.assert_close(iwae_log_likelihood(model, x, 100, beta=torch.ones(8)), at_1)
    assert not torch.allclose(iwae_log_likelihood(model, x, 100, beta=5.0), at_1)
    assert model.training  # the mode is restored


def test_ais_close_to_exact_on_ppca():
    W, mu, sigma, x = ppca(d=8, latent=3, n=50)
    model = ppca_vae(W, mu, sigma)
    exact = ppca_log_likelihood(W, mu, sigma, x)
    r = ais_log_likelihood(model, x, steps=300, leapfrog=5, chains=8, seed=0, return_chains=True)
    error = r.log_z - exact
    assert error.abs().mean() < 0.5, error.abs().mean()
    assert abs(float(error.mean())) < 0.3
    assert 0.4 < float(r.diagnostics["acceptance"].mean()) < 0.95  # adapted towards 0.65
    assert r.ess.shape == (50,) and (r.ess >= 1).all() and (r.ess <= 8 + 1e-6).all()
    assert r.final.z.shape == (8, 50, 3) and r.log_weights.shape == (8, 50)
    # the final chains are (approximately) posterior samples: their mean is the posterior mean
    post_mean = model.encode(x).mean
    assert (r.final.z.mean(0) - post_mean).abs().mean() < 0.15
    again = ais_log_likelihood(model, x, steps=300, leapfrog=5, chains=8, seed=0)
    torch.testing.assert_close(again.log_z, r.log_z)  # seeded


def test_bdmc_sandwiches_exact_and_gap_shrinks():
    W, mu, sigma, _ = ppca(d=8, latent=3)
    model = ppca_vae(W, mu, sigma)
    gaps = []
    for steps in (10, 100, 1000):
        r = bdmc(model, 20, steps=steps, leapfrog=3, seed=0)
        exact = ppca_log_likelihood(W, mu, sigma, r.x)
        lower, upper = float(r.lower.mean()), float(r.upper.mean())
        assert lower <= float(exact.mean()) + 0.05 and float(exact.mean()) <= upper + 0.05
        gaps.append(float(r.gap.mean()))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 2.0, gaps


def test_evaluate_log_likelihood_on_image_data():
    cfg = ModelConfig(latent_dim=2, hidden=[16], sigma_mode="optimal-image")
    model = build_vae(cfg, (1, 4, 4))
    data = ImageData("random", torch.rand(30, 1, 4, 4))
    iwae = evaluate_log_likelihood(model, data, "iwae", k=500, batch_size=16)
    ais = evaluate_log_likelihood(model, data, "ais", k=200, batch_size=16, chains=4, leapfrog=5)
    assert iwae["examples"] == 30 and iwae["k"] == 500 and ais["steps"] == 200
    for r in (iwae, ais):
        assert set(r) >= {"log_likelihood", "std_error", "bits_per_dim", "ess", "seconds"}
    # the two estimators see the same (frozen) σ_x and agree on this tiny model
    assert abs(iwae["log_likelihood"] - ais["log_likelihood"]) < 0.3, (iwae, ais)
    again = evaluate_log_likelihood(model, data, "iwae", k=500, batch_size=16)
    assert again["log_likelihood"] == iwae["log_likelihood"]  # seeded
    with pytest.raises(ValueError, match="method"):
        evaluate_log_likelihood(model, data, "elbo")
