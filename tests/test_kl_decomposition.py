"""The rate split into index-code MI, total correlation and dimension-wise KL, and active units,
on encoders built to have a known answer; encoding a data set in batches."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.data.base import ImageData
from vaelab.distributions import (
    DiagonalGaussian,
    FactorisedBernoulli,
    StandardNormal,
    UniformBernoulli,
)
from vaelab.errors import VaelabError
from vaelab.evaluation.encoding import encode_data
from vaelab.evaluation.kl_decomposition import (
    active_units,
    decompose_posteriors,
    kl_decomposition,
    posterior_mean_variance,
)
from vaelab.models import VAE, build_vae


class MeanEncoder(nn.Module):
    """q(z|x) = N(mean_fn(x), exp(log_var)) with a fixed log-variance per dimension."""

    def __init__(self, mean_fn, log_var):
        super().__init__()
        self.mean_fn = mean_fn
        self.register_buffer("log_var", torch.as_tensor(log_var, dtype=torch.float32))
        self.dummy = nn.Parameter(torch.zeros(()))  # so the model has a device

    def forward(self, x, condition=None):
        mean = self.mean_fn(x)
        return torch.cat([mean, self.log_var.expand_as(mean)], dim=-1)


def model_of(mean_fn, log_var):
    latent = len(log_var)
    return VAE(
        MeanEncoder(mean_fn, log_var),
        nn.Identity(),
        DiagonalGaussian,
        nn.Identity(),
        StandardNormal(latent),
    )


def grid(values_per_dim, dims):
    """Every combination of `values_per_dim` evenly spaced values in each of `dims` coords."""
    axes = [torch.linspace(-1.5, 1.5, values_per_dim)] * dims
    return torch.cartesian_prod(*axes).reshape(-1, dims)


def test_terms_sum_to_the_rate_which_matches_the_analytic_kl():
    torch.manual_seed(0)
    weight = torch.randn(6, 4)
    model = model_of(lambda x: x @ weight * 0.5, [-2.0, -1.0, 0.0, -0.5])
    x = torch.randn(1500, 6)
    for estimator in ("full", "mss"):
        r = kl_decomposition(
            model, x, n=None, random_state=0, samples=2, estimator=estimator, minibatch_size=200
        )
        assert r["sum_of_terms"] == pytest.approx(r["rate"], abs=1e-9)
        assert r["mi"] + r["tc"] + r["dwkl"] == pytest.approx(r["rate"], abs=1e-9)
        assert sum(r["dwkl_per_dim"]) == pytest.approx(r["dwkl"], abs=1e-9)
        assert abs(r["rate"] - r["rate_analytic"]) < 4 * r["rate_stderr"]
        assert r["rate_stderr"] < 0.05 * r["rate_analytic"]
        assert r["mi"] > 1.0 and r["dwkl"] > 0.0
        assert r["mi"] <= math.log(1500) + 1e-9  # the empirical-distribution bound
        assert r["n"] == 1500 and r["samples"] == 2


def test_stratified_estimator_with_the_whole_set_as_minibatch_is_the_full_estimator():
    mean, log_var = torch.randn(300, 3), torch.randn(300, 3) * 0.3 - 1.0
    full = decompose_posteriors(mean, log_var, 5)
    mss = decompose_posteriors(mean, log_var, 5, estimator="mss", minibatch_size=300)
    for term in ("mi", "tc", "dwkl", "rate"):
        assert mss[term] == pytest.approx(full[term], abs=1e-9)


def test_blocks_over_components_give_the_same_terms(monkeypatch):
    # blocks of rows × components (as for a whole data set of 10⁵–10⁶ examples) combine their
    # logsumexps exactly, the own component of mss included when it falls in any block
    import vaelab.evaluation.kl_decomposition as kd

    mean, log_var = torch.randn(300, 3), torch.randn(300, 3) * 0.3 - 1.0
    one_block = [decompose_posteriors(mean, log_var, 5, estimator=e, minibatch_size=100)
                 for e in ("full", "mss")]  # fmt: skip
    monkeypatch.setattr(kd, "BLOCK_ELEMENTS", 3 * 7)  # 7 components per block, one row
    many = [decompose_posteriors(mean, log_var, 5, estimator=e, minibatch_size=100)
            for e in ("full", "mss")]  # fmt: skip
    for a, b in zip(one_block, many):
        for term in ("mi", "tc", "dwkl", "rate"):
            assert b[term] == pytest.approx(a[term], abs=1e-9)


def test_drawn_rows_of_a_whole_data_set_estimate_its_exact_mutual_information():
    # a data set of two examples, q(z|x) = N(±a, 1) in 1-D: I(x; z) = H(z) − H(z|x), with
    # q(z) the equal mixture — by quadrature; every draw's log-ratio uses the exact q(z)
    a = 1.0
    mean = torch.tensor([[a], [-a]]).repeat(500, 1)  # the data set: 1,000 examples, two images
    log_var = torch.zeros(1000, 1)
    grid_z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    density = 0.5 * (torch.exp(-0.5 * (grid_z - a) ** 2) + torch.exp(-0.5 * (grid_z + a) ** 2))
    density = density / math.sqrt(2 * math.pi)
    h_z = -float(torch.trapezoid(density * torch.log(density), grid_z))
    exact = h_z - 0.5 * math.log(2 * math.pi * math.e)
    r = decompose_posteriors(mean, log_var, 0, samples=40, rows=torch.arange(0, 1000, 5))
    assert r["draws"] == 40 * 200 and r["n"] == 1000
    assert abs(r["mi"] - exact) < 4 * r["mi_stderr"] and r["mi_stderr"] < 0.02
    assert r["mi"] + r["tc"] + r["dwkl"] == pytest.approx(r["rate"], abs=1e-9)
    assert r["rate_analytic"] == pytest.approx(0.5 * a**2)  # KL(N(±a, 1) ‖ N(0, 1))
    # every row, one draw each: the plain estimator's draws exactly
    every_row = decompose_posteriors(mean, log_var, 3, rows=torch.arange(1000))
    assert every_row == decompose_posteriors(mean, log_var, 3)
    with pytest.raises(VaelabError, match="rows need estimator 'full'"):
        decompose_posteriors(mean, log_var, estimator="mss", rows=torch.arange(4))


def test_factorised_encoder_has_zero_total_correlation():
    # x runs over a full product grid, so the empirical p(x) is a product distribution; means
    # act on each coordinate separately, so q(z) = Π_j q(z_j) exactly and TC = 0 per draw
    x = grid(10, 3)
    model = model_of(lambda x: x * torch.tensor([1.0, 0.5, 2.0]), [-1.0, -2.0, 0.0])
    r = kl_decomposition(model, x, n=None, random_state=0)
    assert abs(r["tc"]) < 1e-9
    assert r["mi"] > 1.0 and r["dwkl"] > 0.0
    # the same codes with the second dimension copying the first are dependent
    coupled = model_of(lambda x: x[:, [0, 0, 2]] * torch.tensor([1.0, 0.5, 2.0]), [-1.0, -2.0, 0.0])
    r_coupled = kl_decomposition(coupled, x, n=None, random_state=0)
    assert r_coupled["tc"] > max(0.2, 10 * r_coupled["tc_stderr"])


def test_encoder_that_ignores_x_has_no_mi_tc_or_dwkl():
    x = torch.randn(500, 3)
    prior = model_of(lambda x: torch.zeros(len(x), 4), [0.0] * 4)  # q(z|x) = p(z)
    r = kl_decomposition(prior, x, n=None, random_state=1, samples=2)
    for term in ("rate", "mi", "tc", "dwkl", "rate_analytic"):
        assert abs(r[term]) < 1e-9, term
    # q(z|x) = N(c, s²) for every x: nothing about x, no dependence, all rate is dwKL
    fixed = model_of(lambda x: torch.full((len(x), 2), 0.7), [-1.0, 0.5])
    r = kl_decomposition(fixed, x, n=None, random_state=1, samples=4)
    assert abs(r["mi"]) < 1e-9 and abs(r["tc"]) < 1e-9
    assert r["dwkl"] == pytest.approx(r["rate"], abs=1e-9)
    assert abs(r["rate"] - r["rate_analytic"]) < 4 * r["rate_stderr"]


def test_subsets_seeds_and_image_data():
    torch.manual_seed(0)
    weight = torch.randn(64, 3) * 0.3
    model = model_of(lambda x: x.flatten(1) @ weight, [-1.0, -1.0, -1.0])
    data = ImageData("toy", torch.rand(400, 1, 8, 8))
    a = kl_decomposition(model, data, n=150, random_state=3)
    b = kl_decomposition(model, data, n=150, random_state=np.random.default_rng(3))
    c = kl_decomposition(model, data.images, n=150, random_state=3)
    assert a == b == c and a["n"] == 150
    assert kl_decomposition(model, data, n=150, random_state=4) != a


def test_beta_conditional_model_at_two_betas():
    torch.manual_seed(0)
    cfg = ModelConfig(network="mlp", hidden=[16], latent_dim=3, conditioning="film")
    model = build_vae(cfg, (1, 8, 8))
    for conditioner in (p for n, p in model.named_parameters() if "conditioner" in n):
        nn.init.normal_(conditioner, std=0.5)  # make β matter (identity at initialisation)
    x = torch.rand(200, 1, 8, 8)
    low = kl_decomposition(model, x, n=None, beta=0.1)
    high = kl_decomposition(model, x, n=None, beta=10.0)
    assert low["rate_analytic"] != pytest.approx(high["rate_analytic"], rel=1e-3)
    for r in (low, high):
        assert r["sum_of_terms"] == pytest.approx(r["rate"], abs=1e-9)


def test_active_units_counts_the_informative_dimensions():
    x = torch.randn(2000, 4)
    # dims 0, 1 follow x (variance ≈ 1, 0.25), dim 2 barely (≈ 1e-4), dim 3 not at all
    scales = torch.tensor([1.0, 0.5, 0.01, 0.0])
    model = model_of(lambda x: x * scales, [-3.0, -3.0, 0.0, 0.0])
    variance = posterior_mean_variance(model, x)
    np.testing.assert_allclose(variance.numpy(), (scales**2).numpy(), rtol=0.1, atol=1e-6)
    assert active_units(model, x) == 2
    assert active_units(model, x, threshold=1e-5) == 3
    assert active_units(model, x, threshold=0.5) == 1


def test_decompose_posteriors_rejects_bad_input():
    with pytest.raises(Exception, match="estimator"):
        decompose_posteriors(torch.zeros(4, 2), torch.zeros(4, 2), estimator="mws")
    with pytest.raises(Exception, match=r"\[n, L\]"):
        decompose_posteriors(torch.zeros(4, 2), torch.zeros(4, 3))
    model = model_of(lambda x: x, [0.0, 0.0])
    model.prior = UniformBernoulli(2)
    with pytest.raises(VaelabError, match="standard-normal"):
        kl_decomposition(model, torch.zeros(4, 2))
    model = model_of(lambda x: x, [0.0, 0.0])
    model.posterior = FactorisedBernoulli  # its mean and variance are not those of a Gaussian
    with pytest.raises(VaelabError, match="diagonal-Gaussian posterior"):
        kl_decomposition(model, torch.zeros(4, 2))


def test_encode_data_joins_batches_into_one_posterior_at_a_beta():
    torch.manual_seed(0)
    cfg = ModelConfig(network="mlp", hidden=[16], latent_dim=3, conditioning="film")
    model = build_vae(cfg, (1, 8, 8))
    for conditioner in (p for n, p in model.named_parameters() if "conditioner" in n):
        nn.init.normal_(conditioner, std=0.5)
    x = torch.rand(30, 1, 8, 8)
    model.train()
    q = encode_data(model, ImageData("toy", x), beta=4.0, batch_size=7)
    assert not model.training and q.mean.shape == q.variance.shape == (30, 3)
    with torch.no_grad():
        _, cond = model.condition(len(x), 4.0, "cpu")
        whole = model.encode(x, cond)
    torch.testing.assert_close(q.mean, whole.mean)
    torch.testing.assert_close(q.variance, whole.variance)
    for inputs in (x, x.numpy()):
        first = encode_data(model, inputs, beta=4.0, limit=12)
        torch.testing.assert_close(first.mean, whole.mean[:12])
    assert not torch.allclose(encode_data(model, x, beta=0.1).mean, q.mean)
    with pytest.raises(VaelabError, match="no examples"):
        encode_data(model, x[:0])
