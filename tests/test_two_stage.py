"""Two-stage sampling (Dai & Wipf 2019) and the γ-slices of the loss (Dai et al. 2021)."""

import copy

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.evaluation.loss_slices import loss_slices
from vaelab.evaluation.sample_quality import mmd
from vaelab.experiments.study import fit_second_stage
from vaelab.models import build_vae
from vaelab.models.two_stage import (
    code_data,
    first_stage_codes,
    second_stage_codes,
    two_stage_generate,
)
from vaelab.runs import train_run
from vaelab.training import METRICS


def trained_first_stage(tmp_path, **model):
    cfg = Config(
        data=DataConfig(name="digits"),
        model=ModelConfig(latent_dim=6, hidden=[64], **model),
        train=TrainConfig(epochs=30, batch_size=64, lr=3e-3, progress=False, device="cpu"),
    )
    return train_run(cfg, tmp_path / "first", report=False)


class BimodalEncoder(torch.nn.Module):
    """Codes ±2 (tiny variance) from fixed random projections: q(z) is far from N(0, I)."""

    def __init__(self, dims: int, latent: int):
        super().__init__()
        self.register_buffer(
            "w", torch.randn(dims, latent, generator=torch.Generator().manual_seed(1))
        )

    def forward(self, x, condition=None):
        h = x.flatten(1) @ self.w
        mean = 2 * torch.tanh(10 * (h - h.median(0).values))
        return torch.cat([mean, torch.full_like(mean, -4.0)], dim=-1)


def test_second_stage_matches_the_aggregated_posterior_better_than_the_prior(tmp_path):
    data, _ = load_data(DataConfig(name="digits"))
    first = build_vae(ModelConfig(latent_dim=3, hidden=[32]), data.shape)
    first.encoder = BimodalEncoder(64, 3)
    second = fit_second_stage(
        first, data, [128, 128], 1500, tmp_path / "second", lr=2e-3, progress=False
    )
    codes, _ = first_stage_codes(first, data.batch(slice(0, 500)), None)
    stage_two = second_stage_codes(second, 500)
    prior = torch.randn(500, 3)
    assert mmd(codes, stage_two) < 0.3 * mmd(codes, prior), (
        mmd(codes, stage_two),
        mmd(codes, prior),
    )
    assert two_stage_generate(first, second, 5).shape == (5, 1, 8, 8)


class PriorEncoder(torch.nn.Module):
    """q(z|x) = N(0, I) for every x, so q(z) = N(0, I): nothing for a second stage to encode."""

    def __init__(self, latent: int):
        super().__init__()
        self.latent = latent

    def forward(self, x, condition=None):
        return torch.zeros(len(x), 2 * self.latent)


def test_second_stage_samples_keep_the_spread_of_a_standard_normal_q(tmp_path):
    # the second stage's best model of N(0, I) is noise (σ ≈ 1, rate ≈ 0): its samples, unlike
    # the mean of p(z|u), must still spread like N(0, I)
    data, _ = load_data(DataConfig(name="digits"))
    first = build_vae(ModelConfig(latent_dim=4, hidden=[32]), data.shape)
    first.encoder = PriorEncoder(4)
    second = fit_second_stage(
        first, data, [64, 64], 600, tmp_path / "second", lr=2e-3, progress=False
    )
    torch.manual_seed(1)
    codes = second_stage_codes(second, 4000)
    assert torch.allclose(codes.std(0), torch.ones(4), atol=0.1), codes.std(0)
    assert torch.allclose(codes.mean(0), torch.zeros(4), atol=0.1), codes.mean(0)


def test_a_conditional_second_stage_serves_every_beta(tmp_path):
    run = trained_first_stage(
        tmp_path, conditioning="film", sigma_mode="optimal-shared", beta_range=[0.05, 5.0]
    )
    second = fit_second_stage(
        run.model, run.test_data, [64], 50, tmp_path / "second", progress=False
    )
    assert second.conditional
    for beta in (0.05, 1.0, 5.0):
        assert torch.isfinite(two_stage_generate(run.model, second, 4, beta=beta)).all()


def test_loss_slices_scale_as_one_over_gamma():
    torch.manual_seed(0)
    model = build_vae(ModelConfig(latent_dim=3, hidden=[16]), (1, 8, 8))
    with torch.no_grad():  # q(z|x) with σ = e^−15: z is the encoder mean, whatever the draw
        model.encoder.head.weight[3:] = 0.0
        model.encoder.head.bias[3:] = -30.0
    x = torch.rand(16, 1, 8, 8)
    ts = torch.linspace(-0.5, 0.5, 11)
    gammas = [1e-1, 1e-2, 1e-3]
    losses, direction = loss_slices(model, x, gammas, ts)
    assert torch.all(losses[:, 5] == 0) and torch.all(losses.abs().sum(1) > 0)
    # only the reconstruction term moves with the decoder, and it is ‖x − μ‖²/(2γ)
    for i in range(1, 3):
        torch.testing.assert_close(
            losses[i] * gammas[i], losses[0] * gammas[0], rtol=1e-3, atol=1e-4
        )
    # by hand: loss(θ + t·d) − loss(θ) = mean_x (‖x − μ_θ+td(z)‖² − ‖x − μ_θ(z)‖²) / (2γ)
    # (the KL and (D/2) log 2πγ do not move with the decoder), with d the returned unit vector
    assert float(direction.norm()) == pytest.approx(1.0, abs=1e-6)
    decoder = copy.deepcopy(model.decoder)
    origin = parameters_to_vector(decoder.parameters()).detach()
    with torch.no_grad():
        z = model.encode(x).mean
        sq = []
        for t in ts:
            vector_to_parameters(origin + float(t) * direction, decoder.parameters())
            sq.append(((x - decoder(z)) ** 2).flatten(1).sum(1).mean())
        sq = torch.stack(sq)
    for gamma, row in zip(gammas, losses):
        torch.testing.assert_close(row, (sq - sq[5]) / (2 * gamma), rtol=1e-3, atol=1e-3)


def test_second_stage_codes_are_drawn_once_and_a_beta_per_code(tmp_path):
    run = trained_first_stage(
        tmp_path, conditioning="film", sigma_mode="optimal-shared", beta_range=[0.05, 5.0]
    )  # β drawn per minibatch in training; the second stage's codes still get one β each
    codes, cond = code_data(run.model, run.test_data, seed=3).batch(slice(None))
    again, cond_again = code_data(run.model, run.test_data, seed=3).batch(slice(None))
    assert codes.shape == (len(run.test_data), 6) and cond.shape == (len(run.test_data),)
    assert torch.equal(codes, again) and torch.equal(cond, cond_again)
    assert cond.min() < -0.8 and cond.max() > 0.8 and len(cond.unique()) == len(cond)


def test_a_second_stage_fit_is_a_run_that_is_kept(tmp_path):
    data, _ = load_data(DataConfig(name="digits"))
    first = build_vae(ModelConfig(latent_dim=3, hidden=[16]), data.shape)
    fit = lambda: fit_second_stage(first, data, [16], 30, tmp_path / "s", progress=False)  # noqa: E731
    second = fit()
    log = (tmp_path / "s" / METRICS).read_text()
    assert '"split": "train"' in log
    again = fit()  # finished: loaded, not fitted again
    assert (tmp_path / "s" / METRICS).read_text() == log
    for a, b in zip(second.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
