"""β-conditional VAE (DESIGN §1b): conditioning, β sampling, σ_x within β groups."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.distributions import GaussianLikelihood
from vaelab.distributions.log_uniform import LogUniformBeta
from vaelab.errors import ConfigError
from vaelab.evaluation import evaluate
from vaelab.models import build_vae
from vaelab.runs import train_run

SHAPE = (1, 8, 8)


def pair(network, conditioning, sigma_mode="learned-shared"):
    """An unconditioned model and its conditioned twin with the same base weights."""
    base = dict(network=network, hidden=[32], channels=[8, 16], latent_dim=4, sigma_mode=sigma_mode)
    torch.manual_seed(3)
    plain = build_vae(ModelConfig(**base), SHAPE)
    torch.manual_seed(3)
    conditioned = build_vae(ModelConfig(**base, conditioning=conditioning), SHAPE)
    return plain, conditioned


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("conditioning", ["film", "gate"])
def test_identity_initialised_conditioning_reproduces_the_unconditioned_forward(
    network, conditioning
):
    plain, conditioned = pair(network, conditioning)
    x = torch.rand(5, *SHAPE)
    for beta in (0.01, 0.5, 10.0):
        torch.manual_seed(0)
        a = plain(x, beta=beta)
        torch.manual_seed(0)
        conditioned.eval()  # evaluation mode: β is the one given, not sampled
        b = conditioned(x, beta=beta)
        for name in ("loss", "distortion", "rate", "mse"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)
    # and the modulators are trained: they receive gradients
    conditioned.train()
    conditioned(x).loss.mean().backward()
    grads = [p.grad for n, p in conditioned.named_parameters() if "conditioner" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_per_example_log_beta_is_log_uniform_on_the_range():
    prior = LogUniformBeta(0.01, 10.0, per_example=True)
    torch.manual_seed(0)
    log_beta = prior.sample(20_000).numpy()
    low, high = math.log(0.01), math.log(10.0)
    assert log_beta.min() >= low and log_beta.max() <= high
    assert stats.kstest(log_beta, stats.uniform(low, high - low).cdf).pvalue > 0.01
    # a plain uniform on β itself would fail: most of its mass is above 1
    assert stats.kstest(np.exp(log_beta), stats.uniform(0.01, 10 - 0.01).cdf).pvalue < 1e-6
    ell = prior.standardise(torch.tensor([low, (low + high) / 2, high]))
    torch.testing.assert_close(ell, torch.tensor([-1.0, 0.0, 1.0]))


def test_per_minibatch_beta_is_shared_within_a_batch_and_log_uniform_across_batches():
    prior = LogUniformBeta(0.01, 10.0, per_example=False)
    torch.manual_seed(1)
    draws = [prior.sample(64) for _ in range(3000)]
    assert all(d.shape == (1,) for d in draws)
    low, high = math.log(0.01), math.log(10.0)
    values = torch.cat(draws).numpy()
    assert stats.kstest(values, stats.uniform(low, high - low).cdf).pvalue > 0.01


def test_training_draws_beta_and_evaluation_uses_the_given_beta():
    _, model = pair("mlp", "film")  # β-range [0.01, 10]: log β ∈ [−2 log 10, log 10]
    x = torch.rand(6, *SHAPE)
    mid, half = -0.5 * math.log(10), 1.5 * math.log(10)  # ℓ = (log β − mid) / half
    model.train()
    beta, ell = model.condition(len(x), None, "cpu")
    assert beta.shape == (1,) and 0.01 <= beta.item() <= 10
    assert ell.item() == pytest.approx((math.log(beta.item()) - mid) / half, abs=1e-5)
    model.eval()
    beta, ell = model.condition(len(x), 2.0, "cpu")
    assert beta.item() == pytest.approx(2.0)
    # ℓ(2) = (log 2 + ½ log 10) / (1.5 log 10) = 0.5340
    assert ell.item() == pytest.approx((math.log(2) - mid) / half, abs=1e-6)
    assert ell.item() == pytest.approx(0.5340, abs=1e-4)
    _, ell = model.condition(len(x), 10.0, "cpu")
    assert ell.item() == pytest.approx(1.0, abs=1e-6)  # the ends of the range map to ±1
    _, ell = model.condition(len(x), torch.tensor([0.01, 0.1, 1.0]), "cpu")
    torch.testing.assert_close(ell, torch.tensor([-1.0, -1 / 3, 1 / 3]), atol=1e-6, rtol=0)


def test_optimal_shared_sigma_is_the_optimum_of_a_one_beta_batch_and_refuses_several():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, *SHAPE, generator=g)
    mean = torch.rand(1, 6, *SHAPE, generator=g)
    lik = GaussianLikelihood(SHAPE, "optimal-shared", log_sigma_min=-50.0)
    sigma2 = ((x - mean[0]) ** 2).mean()
    expected = GaussianLikelihood(SHAPE, "fixed", sigma=math.sqrt(sigma2))(x, mean).nll
    torch.testing.assert_close(lik(x, mean, torch.tensor([0.3])).nll, expected)
    with pytest.raises(ValueError, match="several β"):
        lik(x, mean, torch.tensor([0.3, -0.5, 0.3, 0.3, -0.5, 0.9]))


def test_optimal_shared_with_per_example_beta_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="beta_sampling = 'minibatch'.*optimal-image"):
        ModelConfig(sigma_mode="optimal-shared", conditioning="film", beta_sampling="example")
    ModelConfig(sigma_mode="optimal-image", conditioning="film", beta_sampling="example")


@pytest.mark.parametrize("sigma_mode", ["learned-beta", "optimal-image"])
def test_rate_decreases_as_beta_increases_on_a_trained_conditional_model(tmp_path, sigma_mode):
    cfg = Config(
        data=DataConfig(name="digits"),
        model=ModelConfig(
            latent_dim=8,
            hidden=[64],
            sigma_mode=sigma_mode,
            conditioning="film",
            beta_range=[0.03, 10.0],
        ),
        train=TrainConfig(
            epochs=25, batch_size=64, lr=3e-3, progress=False, device="cpu", eval_every=100
        ),
    )
    run = train_run(cfg, tmp_path / "run", report=False)
    _, test = load_data(cfg.data)
    rates = [evaluate(run.model, test, beta=beta)["rate"] for beta in (0.03, 0.3, 3.0)]
    assert rates[0] > rates[1] > rates[2], rates
    assert rates[0] > 2 * rates[2]
