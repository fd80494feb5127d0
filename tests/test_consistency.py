"""Distance to the consistent set (Theorem 1 of Shekhovtsov et al. 2022)."""

import pytest
import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.distributions import FactorisedBernoulli, GaussianLikelihood, UniformBernoulli
from vaelab.errors import VaelabError
from vaelab.estimators.exact import exact
from vaelab.evaluation.consistency import affine_fit, consistency
from vaelab.models import VAE, build_vae
from vaelab.networks.blocks import BlockNetwork


class Centres(nn.Module):
    """Decoder mean a + W z on 2-D points stored as [.., 1, 1, 2]."""

    def __init__(self, a, w):
        super().__init__()
        self.a, self.w = nn.Parameter(a), nn.Parameter(w)

    def forward(self, z, condition=None):
        return (self.a + z @ self.w.T).view(*z.shape[:-1], 1, 1, 2)


def consistent_vae(sigma=0.7):
    """Uniform prior, orthogonal W (a rectangle of centres), and the exact posterior as encoder:
    logit_j(x) = W_jᵀ(x − a)/σ² − ‖W_j‖²/(2σ²)."""
    a, w = (
        torch.tensor([0.3, -0.2]),
        torch.tensor([[1.5, 0.0], [0.0, -1.0]]) @ torch.tensor([[0.8, -0.6], [0.6, 0.8]]),
    )
    w = w.T  # columns W_1, W_2 are orthogonal
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(w.T / sigma**2)
        linear.bias.copy_(-(w.T @ a) / sigma**2 - (w**2).sum(0) / (2 * sigma**2))
    encoder = BlockNetwork([nn.Flatten()], linear)
    likelihood = GaussianLikelihood((1, 1, 2), sigma_mode="fixed", sigma=sigma)
    return VAE(
        encoder,
        Centres(a, w),
        FactorisedBernoulli,
        likelihood,
        UniformBernoulli(2),
        estimator=exact,
    )


def test_vae_inside_the_consistent_set_has_no_gap_and_no_residual():
    model = consistent_vae()
    x = torch.randn(500, 1, 1, 2) * 1.5
    r = consistency(model, x)
    assert abs(r["gap"]) < 1e-5, r
    assert (
        r["decoder_residual"] < 1e-10
        and r["encoder_residual"] < 1e-10
        and r["tied_encoder_residual"] < 1e-10
    )


def test_breaking_consistency_opens_the_gap_and_the_residual():
    model = consistent_vae()
    with torch.no_grad():
        model.decoder.w[0, 1] += 0.8  # columns no longer orthogonal: posterior not factorised
    r = consistency(model, torch.randn(500, 1, 1, 2) * 1.5)
    assert r["gap"] > 1e-3 and r["tied_encoder_residual"] > 1e-3


def test_a_nonlinear_decoder_has_a_positive_harmonium_residual():
    cfg = ModelConfig(latent_dim=4, hidden=[32, 32], posterior="bernoulli", prior="uniform-bernoulli",
                      estimator="exact", sigma_mode="fixed", sigma=0.5)  # fmt: skip
    torch.manual_seed(0)
    model = build_vae(cfg, (1, 4, 4))
    r = consistency(model, torch.rand(200, 1, 4, 4))
    assert r["decoder_residual"] > 0.05 and r["gap"] > 0


def test_affine_fit_recovers_an_affine_map_and_weights_matter():
    g = torch.Generator().manual_seed(0)
    feats, coef = torch.randn(50, 3, generator=g), torch.randn(3, 2, generator=g)
    fit = affine_fit(feats, feats @ coef + 0.5)
    torch.testing.assert_close(fit.coef.float(), coef, atol=1e-5, rtol=0)
    assert fit.residual < 1e-12
    noisy = feats @ coef + torch.randn(50, 2, generator=g)
    assert 0 < affine_fit(feats, noisy).residual < 1


def test_an_optimal_sigma_is_frozen_at_evaluation_so_the_decoder_is_an_exponential_family():
    model = consistent_vae()
    model.likelihood = GaussianLikelihood((1, 1, 2), sigma_mode="optimal-shared", sigma=0.7)
    x = torch.randn(500, 1, 1, 2) * 1.5
    model.train()
    model(x)  # a training batch moves the running optimum of σ²
    model.eval()
    frozen = model.likelihood.describe()["sigma"]
    assert abs(frozen - 0.7) > 1e-3
    r = consistency(model, x)
    model.likelihood = GaussianLikelihood((1, 1, 2), sigma_mode="fixed", sigma=frozen)
    same = consistency(model, x)
    assert r == pytest.approx(same, rel=1e-4, abs=1e-6)


def test_a_likelihood_that_is_not_an_exponential_family_is_refused():
    class NoFamily(GaussianLikelihood):
        family = None

    model = consistent_vae()
    model.likelihood = NoFamily((1, 1, 2), sigma_mode="fixed", sigma=0.7)
    with pytest.raises(VaelabError, match="not an exponential family"):
        consistency(model, torch.randn(10, 1, 1, 2))
