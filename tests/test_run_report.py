"""What every run's report shows: seed, training curves, active units, KL per dimension."""

import json
import math

import torch

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.distributions import kl_per_dimension
from vaelab.distributions.bernoulli_latent import FactorisedBernoulli, UniformBernoulli
from vaelab.runs import train_run


def test_the_report_shows_the_seed_curves_and_the_kl_of_every_latent(tmp_path):
    cfg = Config(
        DataConfig(name="digits", train_limit=300, test_limit=100),
        ModelConfig(latent_dim=3, hidden=[32], sigma_mode="learned-shared"),
        TrainConfig(epochs=3, batch_size=50, log_every=2, progress=False, device="cpu", seed=7),
    )
    run = train_run(cfg, tmp_path)
    latents = json.loads((tmp_path / "latents.json").read_text())
    test = run.state.last_test
    # the per-dimension KLs of an analytic-KL Gaussian VAE add up to its test rate
    assert math.isclose(sum(latents["kl_per_dimension"]), test["rate"], rel_tol=1e-5)
    active = sum(v > latents["threshold"] for v in latents["mean_variance"])
    assert latents["active_units"] == active and len(latents["kl_per_dimension"]) == 3
    report = (tmp_path / "report.md").read_text()
    assert "seed 7" in report and f"{active} of 3" in report
    assert "![training curves](training_curves.png)" in report
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000


def test_bernoulli_kl_per_bit_is_log2_minus_the_entropy_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    q = FactorisedBernoulli(logits)
    p = torch.sigmoid(logits)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    expected = math.log(2) - entropy
    assert torch.allclose(kl_per_dimension(q, UniformBernoulli(3)), expected, atol=1e-6)
    assert kl_per_dimension(q, UniformBernoulli(3))[0, 0].abs() < 1e-7  # p = ½: no information
