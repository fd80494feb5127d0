"""Optimal σ_x modes are densities at evaluation (DESIGN §1a): fitted to the training batch,
frozen from training in evaluation mode; with enumerated codes, fitted to the q-weighted
E_q[MSE]."""

import math

import pytest
import torch

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.evaluation import evaluate
from vaelab.models import build_vae
from vaelab.runs import load_run, train_run

SHAPE = (1, 3, 3)
DIMS = 9


def exact_vae(sigma_mode: str):
    cfg = ModelConfig(
        latent_dim=3, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator="exact", sigma_mode=sigma_mode, log_sigma_min=-50.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_vae(cfg, SHAPE)
    with torch.no_grad():  # a peaked q and a decoder whose output depends on the code
        for p in model.parameters():
            p.mul_(4.0)
    return model


def enumerated_distortion(model, x, weighted: bool, shared: bool) -> torch.Tensor:
    """By hand: every code, its q(z|x), its squared error, σ² from E_q[MSE] (or, with
    `weighted=False`, the uniform mean over codes, the old defect)."""
    q = model.encode(x)
    codes = torch.tensor([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)]).float()
    probs = torch.stack([q.log_prob(c).exp() for c in codes])  # [K, B]
    mse = torch.stack(
        [((x - model.decode(c[None].expand(len(x), 3))) ** 2).flatten(1).mean(1) for c in codes]
    )  # [K, B]
    per_example = (probs * mse).sum(0) if weighted else mse.mean(0)
    sigma2 = per_example.mean().expand(len(x)) if shared else per_example
    per_code = DIMS * mse / (2 * sigma2) + DIMS / 2 * torch.log(2 * math.pi * sigma2)
    return (probs * per_code).sum(0)


@pytest.mark.parametrize("sigma_mode, shared", [("optimal-shared", True), ("optimal-image", False)])
def test_exact_estimator_fits_sigma_to_the_q_weighted_error(sigma_mode, shared):
    model = exact_vae(sigma_mode).train()
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(1))
    distortion = model(x).distortion
    torch.testing.assert_close(distortion, enumerated_distortion(model, x, True, shared))
    uniform = enumerated_distortion(model, x, False, shared)
    assert (distortion - uniform).abs().max() > 1e-3  # the test can tell the two apart


def test_exact_estimator_distortion_has_the_gradient_of_its_enumeration():
    model = exact_vae("optimal-shared").train()
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(2))
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(model(x).distortion.sum(), params)
    want = torch.autograd.grad(enumerated_distortion(model, x, True, True).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def trained_optimal_run(tmp_path, sigma_mode="optimal-shared"):
    """Binary codes enumerated exactly: the test terms carry no Monte-Carlo noise."""
    cfg = Config(
        data=DataConfig(name="digits", train_limit=400, test_limit=150),
        model=ModelConfig(
            latent_dim=4,
            hidden=[32],
            sigma_mode=sigma_mode,
            posterior="bernoulli",
            prior="uniform-bernoulli",
            estimator="exact",
        ),  # fmt: skip
        train=TrainConfig(epochs=3, batch_size=50, progress=False, device="cpu"),
    )
    return train_run(cfg, tmp_path / "run", report=False)


def test_optimal_shared_test_elbo_does_not_depend_on_the_evaluation_batch_size(tmp_path):
    run = trained_optimal_run(tmp_path)
    model, test = run.model, run.test_data
    by_size = [evaluate(model, test, batch_size=n)["negative_elbo"] for n in (7, 50, 150)]
    assert max(by_size) - min(by_size) < 1e-5 * abs(by_size[0]), by_size
    # the batch-fitted ("profile") value does move with the batch: what the frozen σ removes
    model.train()
    profile = []
    with torch.no_grad():
        for n in (7, 150):
            total = sum(
                float(model(test.batch(slice(i, i + n))).negative_elbo.sum())
                for i in range(0, len(test), n)
            )
            profile.append(total / len(test))
    assert abs(profile[0] - profile[1]) > max(1e-2, 100 * (max(by_size) - min(by_size)))


def test_the_frozen_sigma_is_the_running_training_optimum_and_survives_reloading(tmp_path):
    run = trained_optimal_run(tmp_path)
    model = run.model.eval()
    sigma = model.likelihood.describe()["sigma"]
    train, _ = load_data(run.config.data)
    with torch.no_grad():
        x = train.batch(slice(0, 400))
        q = model.encode(x)
        codes = q.enumerate_support()
        mean = model.likelihood.mean(model.decode(codes))  # [K, *data]
        mse = ((x[None] - mean[:, None]) ** 2).flatten(2).mean(-1)  # [K, B]
        training_optimum = float((q.log_prob(codes[:, None]).exp() * mse).sum(0).mean().sqrt())
    assert 0.7 * training_optimum < sigma < 1.3 * training_optimum
    reloaded = load_run(tmp_path / "run", device="cpu")
    assert reloaded.model.likelihood.describe()["sigma"] == pytest.approx(sigma)
    assert evaluate(reloaded.model, run.test_data) == pytest.approx(run.state.last_test)
    samples = reloaded.model.likelihood.sample(mean[:4])  # a density: it can be sampled
    assert samples.shape == mean[:4].shape and not torch.equal(samples, mean[:4])
