"""Distance to the consistent set (Theorem 1 of Shekhovtsov et al. 2022), and its exact form for
the 2-bit, uniform-prior model of gmm-toy: the rectangle condition."""

import pytest
import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.distributions import FactorisedBernoulli, GaussianLikelihood, UniformBernoulli
from vaelab.errors import VaelabError
from vaelab.estimators.exact import exact
from vaelab.evaluation.consistency import affine_fit, consistency
from vaelab.experiments.gmm_toy import (
    CodeTable,
    best_factorised_gap,
    interaction_rms,
    log_joint_uniform,
    measure_rbm,
    nearest_rbm,
    parallelogram_residual,
    rectangle_residual,
)
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


# --- the rectangle condition (gmm-toy: 2 bits, uniform prior, one free centre per code) -------

TRUTH = [[1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 0.0]]  # μ00, μ01, μ10, μ11 (gmm-toy's)
RECTANGLE = [[0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [2.0, 1.0]]  # a = 0, W1 = (2, 0), W2 = (0, 1)
PARALLELOGRAM = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]]  # W1 = (1, 1), W2 = (1, 0)


def test_the_residuals_against_hand_computed_values():
    t = torch.tensor
    # truth: μ00 − μ01 − μ10 + μ11 = (−1, 2); about the centroid (¼, 0) the squared norms are
    # 1.5625, 1.5625, 0.0625, 1.5625 → 1.5625 − 1.5625 − 0.0625 + 1.5625 = 1.5
    assert parallelogram_residual(t(TRUTH)) == pytest.approx(5**0.5, abs=1e-12)
    assert rectangle_residual(t(TRUTH)) == pytest.approx(1.5, abs=1e-12)
    assert parallelogram_residual(t(RECTANGLE)) == 0 and rectangle_residual(t(RECTANGLE)) == 0
    # a parallelogram: 2 W1·W2 = 2, wherever the origin is (0 − 1 − 2 + 5 = 2 at the origin)
    assert parallelogram_residual(t(PARALLELOGRAM)) == 0
    assert rectangle_residual(t(PARALLELOGRAM)) == pytest.approx(2.0, abs=1e-12)
    assert rectangle_residual(t(PARALLELOGRAM) + t([5.0, -3.0])) == pytest.approx(2.0, abs=1e-12)
    # its posterior interaction Δ(x) = −2/(2σ²) everywhere: RMS 1/σ² = 4 at σ = 0.5
    x = torch.randn(50, 2)
    lj = log_joint_uniform(x, t(PARALLELOGRAM), 0.5)
    assert interaction_rms(lj) == pytest.approx(4.0, rel=1e-9)
    assert interaction_rms(log_joint_uniform(x, t(RECTANGLE), 0.5)) < 1e-12


class Lookup(nn.Module):
    """An encoder that returns fixed logits for the (fixed) batch it was made for."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x, condition=None):
        return self.logits


def vae_with_best_encoder(centres, x, sigma):
    """The uniform-prior VAE with one centre per code and, as its encoder, the best factorised
    q(z|x) of every example of x [N, 2]; and that q's gap."""
    gap, q = best_factorised_gap(log_joint_uniform(x, torch.tensor(centres), sigma))
    logits = torch.logit(q.clamp(1e-12, 1 - 1e-12)).float()
    likelihood = GaussianLikelihood((1, 1, 2), sigma_mode="fixed", sigma=sigma)
    model = VAE(Lookup(logits), CodeTable(torch.tensor(centres)), FactorisedBernoulli, likelihood,
                UniformBernoulli(2), estimator=exact)  # fmt: skip
    return model, gap


@pytest.mark.parametrize("centres, consistent", [(RECTANGLE, True), (PARALLELOGRAM, False)])
def test_only_a_rectangle_of_centres_has_no_exact_gap_with_its_best_factorised_encoder(
    centres, consistent
):
    torch.manual_seed(0)
    sigma = 0.7
    x = torch.tensor(centres)[torch.randint(0, 4, (400,))] + sigma * torch.randn(400, 2)
    model, best = vae_with_best_encoder(centres, x, sigma)
    r = consistency(model, x.view(-1, 1, 1, 2))  # the library's exact ELBO and log-likelihood
    assert r["gap"] == pytest.approx(float(best.mean()), abs=1e-5)
    if consistent:
        assert float(best.max()) < 1e-10 and abs(r["gap"]) < 1e-5
    else:
        assert float(best.mean()) > 0.02  # clearly positive, though a parallelogram
        assert r["decoder_residual"] < 1e-10  # … which the harmonium residual does not see


def test_the_best_factorised_encoder_beats_a_fine_grid_of_factorised_encoders():
    torch.manual_seed(1)
    x = torch.randn(20, 2) * 1.5
    lj = log_joint_uniform(x, torch.tensor(PARALLELOGRAM), 0.5)  # strong interaction
    best, _ = best_factorised_gap(lj)
    grid = torch.sigmoid(torch.linspace(-25, 25, 801, dtype=torch.float64))  # in logits
    q1, q2 = torch.meshgrid(grid, grid, indexing="ij")
    log_post = (lj - torch.logsumexp(lj, 1, keepdim=True)).view(-1, 1, 1, 2, 2)
    q = torch.stack([1 - q1, q1], -1)[..., :, None] * torch.stack([1 - q2, q2], -1)[..., None, :]
    kl = (q * (q.log() - log_post)).sum((-1, -2)).flatten(1).min(1).values
    assert (best <= kl + 1e-12).all()  # never worse than any encoder on the grid
    assert (kl - best).max() < 1e-4 and float(best.max()) > 0.1  # and the grid comes close


def test_an_rbm_is_consistent_for_its_own_prior_though_its_centres_are_no_rectangle():
    torch.manual_seed(2)
    rbm = nearest_rbm(torch.tensor(PARALLELOGRAM), 0.7)
    x = rbm.sample(300, generator=torch.Generator().manual_seed(0))
    m = measure_rbm(rbm, x)
    assert m["loglik"] == pytest.approx(float(rbm.log_likelihood(x).detach().mean()), abs=1e-5)
    assert abs(m["gap"]) < 1e-10 and 0 <= m["best_gap"] < 1e-10 and m["interaction_rms"] < 1e-10
    assert m["parallelogram_residual"] < 1e-6 and m["decoder_residual"] < 1e-10
    assert m["tied_encoder_residual"] < 1e-10
    assert m["rectangle_residual"] == pytest.approx(2.0, abs=1e-5)  # its prior makes up for it
    # the same centres under the VAE's uniform prior: not consistent
    uniform_gap, _ = best_factorised_gap(log_joint_uniform(x, torch.tensor(m["centres"]), 0.7))
    assert float(uniform_gap.mean()) > 0.02
