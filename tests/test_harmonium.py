"""EF harmoniums (RBMs): exact marginals, partition functions, CD/PCD and exact-likelihood
training, and AIS estimates of log Z against the exact values (DESIGN §1c)."""

import math

import pytest
import torch

from vaelab.config import TrainConfig
from vaelab.distributions import all_binary_codes
from vaelab.distributions.exponential_family import BernoulliEF, GaussianEF
from vaelab.evaluation.harmonium_fit import fit_contrastive, fit_exact
from vaelab.inference import linear_schedule, piecewise_schedule, sigmoid_schedule
from vaelab.models.harmonium import (
    Annealable,
    BernoulliBernoulliRBM,
    GaussianBernoulliRBM,
    ais_log_likelihood,
    ais_log_partition,
)


def randomised(rbm, seed, bias_scale=0.5):
    """The RBM with random visible and hidden biases (its weights come from the constructor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rbm.a.normal_(0.0, bias_scale, generator=g)
        rbm.b.normal_(0.0, bias_scale, generator=g)
    return rbm


def gb_2d(sigma=0.8):
    g = torch.Generator().manual_seed(1)
    rbm = GaussianBernoulliRBM(2, 2, sigma=sigma, weight_scale=1.5, generator=g).double()
    return randomised(rbm, 2)


def train(epochs, batch_size, **options):
    """Training settings that log every step."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, log_every=1, progress=False,
                       device="cpu", **options)  # fmt: skip


def likelihoods(records):
    return [r["log_likelihood"] for r in records]


def log_normal(x, means, sigma):
    """log N(x; μ_k, σ²I) for x [B, D], means [K, D] → [K, B]."""
    d = x.shape[-1]
    sq = ((x[None] - means[:, None]) ** 2).sum(-1)
    return -0.5 * sq / sigma**2 - 0.5 * d * math.log(2 * math.pi * sigma**2)


# ----------------------------------------------------------------------------- Gaussian–Bernoulli
def test_gb_rbm_marginal_is_a_parallelogram_mixture_of_four_gaussians():
    rbm = gb_2d()
    log_w, means, sigma = rbm.mixture()
    assert log_w.shape == (4,) and means.shape == (4, 2)
    torch.testing.assert_close(log_w.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    mu00, mu01, mu10, mu11 = means  # codes in binary counting order
    assert (mu00 - mu01 - mu10 + mu11).abs().max() < 1e-6
    torch.testing.assert_close(mu00, rbm.a.detach())
    x = torch.randn(50, 2, dtype=torch.float64)
    with torch.no_grad():
        mixture_density = torch.logsumexp(log_w[:, None] + log_normal(x, means, sigma), 0)
        torch.testing.assert_close(rbm.log_likelihood(x), mixture_density)


def test_gb_rbm_density_integrates_to_one():
    rbm = gb_2d()
    step = 0.05
    axis = torch.arange(-12.0, 12.0, step, dtype=torch.float64) + step / 2
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = rbm.log_likelihood(grid).exp().sum() * step**2
    assert abs(mass.item() - 1.0) < 1e-6


def test_gb_rbm_posterior_is_bayes_rule_on_the_mixture():
    rbm = gb_2d()
    log_w, means, sigma = rbm.mixture()
    codes = all_binary_codes(2).double()
    x = 2.0 * torch.randn(64, 2, dtype=torch.float64)
    with torch.no_grad():
        joint = log_w[:, None] + log_normal(x, means, sigma)  # [4, B]
        bayes = joint - torch.logsumexp(joint, 0)
        posterior = rbm.posterior(x).log_prob(codes[:, None, :])  # [4, B]
    torch.testing.assert_close(posterior, bayes)


def test_gb_rbm_free_energy_conditional_and_sampling():
    rbm = randomised(
        GaussianBernoulliRBM(3, 4, sigma=0.7, generator=torch.Generator().manual_seed(0)), 3
    ).double()
    codes = all_binary_codes(4).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    with torch.no_grad():
        brute = -torch.logsumexp(rbm.negative_energy(x[:, None], codes[None]), 1)
        torch.testing.assert_close(rbm.free_energy(x), brute)
        # p(x|z) is the exponential family N(a + Wz, σ²I) with natural parameters affine in z
        log_w, _, _ = rbm.mixture()
        joint = rbm.negative_energy(x[:, None], codes[None]) - rbm.log_partition()  # [B, K]
        eta = rbm.conditional_natural_parameters(codes)
        ef = GaussianEF().log_prob(x[:, None], eta[None])
        torch.testing.assert_close(ef, joint - log_w)
        # exact samples have the mixture's mean
        samples = rbm.sample(20000, generator=torch.Generator().manual_seed(0))
        expected = (log_w.exp()[:, None] * rbm.mixture()[1]).sum(0)
    assert (samples.mean(0) - expected).abs().max() < 0.03
    z = torch.zeros(5, 4, dtype=torch.float64)
    torch.testing.assert_close(rbm.conditional_mean(z), rbm.a.detach().expand(5, 3))
    assert rbm.gibbs(x, 3, torch.Generator().manual_seed(0)).shape == x.shape


def test_enumeration_limits_raise_clear_errors():
    with pytest.raises(ValueError, match="17 units"):
        GaussianBernoulliRBM(2, 17).log_partition()
    with pytest.raises(ValueError, match="ais"):
        BernoulliBernoulliRBM(17, 17).log_partition()
    with pytest.raises(ValueError, match="visible layer"):
        BernoulliBernoulliRBM(17, 4).log_partition("visible")
    # 17 visible units: log Z enumerates the 16 hidden states and sums the visible layer
    # analytically; against the brute-force sum over all 2^17 × 2^4 joint states
    g = torch.Generator().manual_seed(3)
    wide = randomised(BernoulliBernoulliRBM(17, 4, weight_scale=0.5, generator=g), 4).double()
    with torch.no_grad():
        xs = ((torch.arange(2**17)[:, None] >> torch.arange(17)) & 1).double()  # every x
        zs = all_binary_codes(4).double()
        brute = torch.logsumexp(wide.negative_energy(xs[:, None], zs[None]).flatten(), 0)
        torch.testing.assert_close(wide.log_partition(), brute, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        fit_exact(BernoulliBernoulliRBM(3, 2), torch.zeros(5, 4), train(1, 5))


# ----------------------------------------------------------------------------- Bernoulli–Bernoulli
def test_bb_rbm_log_partition_equals_brute_force_over_both_layers():
    g = torch.Generator().manual_seed(0)
    rbm = randomised(BernoulliBernoulliRBM(6, 4, weight_scale=1.0, generator=g), 1).double()
    xs, zs = all_binary_codes(6).double(), all_binary_codes(4).double()
    with torch.no_grad():
        negative_energy = rbm.negative_energy(xs[:, None], zs[None])  # [64, 16]
        brute = torch.logsumexp(negative_energy.flatten(), 0)
        for layer in ("auto", "hidden", "visible"):
            torch.testing.assert_close(rbm.log_partition(layer), brute)
        torch.testing.assert_close(rbm.free_energy(xs), -torch.logsumexp(negative_energy, 1))
        torch.testing.assert_close(
            rbm.log_likelihood(xs).exp().sum(), torch.ones((), dtype=xs.dtype)
        )
        # Theorem 1's conditionals: p(x|z) Bernoulli with logits a + Wz, p(z|x) with b + Wᵀx
        log_joint = negative_energy - brute
        log_pz = torch.logsumexp(log_joint, 0)
        ef = BernoulliEF().log_prob(xs[:, None], rbm.visible_logits(zs)[None])
        torch.testing.assert_close(ef, log_joint - log_pz)
        posterior = rbm.posterior(xs).log_prob(zs[:, None, :]).T  # [64, 16]
        torch.testing.assert_close(posterior, log_joint - torch.logsumexp(log_joint, 1, True))
    with pytest.raises(ValueError, match="layer"):
        rbm.log_partition("both")


def test_bb_rbm_exact_sampling_matches_the_marginal():
    g = torch.Generator().manual_seed(0)
    for visible, hidden in ((4, 6), (6, 3)):  # enumerate the visible, then the hidden layer
        rbm = randomised(BernoulliBernoulliRBM(visible, hidden, weight_scale=1.0, generator=g), 2)
        xs = all_binary_codes(visible)
        with torch.no_grad():
            p = rbm.log_likelihood(xs).exp()
            samples = rbm.sample(40000, generator=torch.Generator().manual_seed(1))
        index = (samples * 2 ** torch.arange(visible - 1, -1, -1)).sum(-1).long()
        frequency = torch.bincount(index, minlength=2**visible) / len(samples)
        assert (frequency - p).abs().max() < 0.01


# ----------------------------------------------------------------------------- training
def square_mixture(n, generator, half_side=1.5, sigma=0.5):
    """Equal mixture of N(c, σ²I) at the corners (±h, ±h): a parallelogram, so a GB-RBM with
    2 hidden units holds it exactly. Returns (data, mean log-density under the truth)."""
    corners = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], dtype=torch.float32) * half_side
    k = torch.randint(0, 4, (n,), generator=generator)
    x = corners[k] + sigma * torch.randn(n, 2, generator=generator)
    truth = torch.logsumexp(log_normal(x, corners, sigma), 0) - math.log(4)
    return x, truth.mean().item()


def test_fit_exact_reaches_the_likelihood_of_the_true_mixture():
    data, truth = square_mixture(2000, torch.Generator().manual_seed(0))
    rbm = GaussianBernoulliRBM(2, 2, sigma=1.0, learn_sigma=True)
    before = rbm.log_likelihood(data).mean().item()
    history = likelihoods(fit_exact(rbm, data, train(300, len(data), lr=0.05, seed=0)))
    after = rbm.log_likelihood(data).mean().item()
    assert len(history) == 300 and history[0] == pytest.approx(before, abs=1e-5)
    assert after > before + 0.5
    assert after > truth - 0.02  # the maximum-likelihood fit is at least as good as the truth
    assert rbm.sigma.item() == pytest.approx(0.5, abs=0.05)
    # repeatable: same seed, same history (minibatches and all)
    runs = [
        fit_exact(
            GaussianBernoulliRBM(2, 2, generator=torch.Generator().manual_seed(3)),
            data[:500],
            train(1, 100, lr=1e-2, seed=7),
        )
        for _ in range(2)
    ]
    assert len(runs[0]) == 5 and likelihoods(runs[0]) == likelihoods(runs[1])


def binary_data(n, generator):
    """Three 6-bit prototypes with 5% of the bits flipped."""
    prototypes = torch.tensor(
        [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0]], dtype=torch.float32
    )
    x = prototypes[torch.randint(0, 3, (n,), generator=generator)]
    flips = torch.rand(x.shape, generator=generator) < 0.05
    return torch.where(flips, 1 - x, x)


@pytest.fixture(scope="module")
def binary_problem():
    """Data, and the log-likelihood of the exact maximum-likelihood RBM (6 visible, 4 hidden)."""
    data = binary_data(600, torch.Generator().manual_seed(0))
    rbm = BernoulliBernoulliRBM(6, 4, generator=torch.Generator().manual_seed(0))
    fit_exact(rbm, data, train(400, len(data), lr=0.05))
    return data, rbm.log_likelihood(data).mean().item()


@pytest.mark.parametrize("persistent", [False, True], ids=["CD-1", "PCD-1"])
def test_fit_contrastive_raises_the_exact_likelihood(persistent, binary_problem):
    data, best = binary_problem
    rbm = BernoulliBernoulliRBM(6, 4, generator=torch.Generator().manual_seed(0))
    before = rbm.log_likelihood(data).mean().item()
    cfg = train(34, 50, lr=0.03, seed=0, lr_schedule="linear")  # 34 epochs of 12 steps
    history = likelihoods(fit_contrastive(rbm, data, cfg, k=1, persistent=persistent))
    after = rbm.log_likelihood(data).mean().item()
    assert len(history) == 34 * 12 and history[0] == pytest.approx(before, abs=0.5)
    assert after > before + 1.0 and after > best - 0.4, (before, after, best)
    # surrogate losses only when asked not to track the likelihood
    records = fit_contrastive(
        rbm, data, train(3, len(data)), k=2, persistent=persistent, track_likelihood=False
    )
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    assert not any("log_likelihood" in r for r in records)


def test_a_resumed_pcd_fit_continues_its_persistent_chains(tmp_path):
    data = binary_data(200, torch.Generator().manual_seed(0))

    def pcd(run_dir, epochs):
        rbm = BernoulliBernoulliRBM(6, 4, generator=torch.Generator().manual_seed(0))
        records = fit_contrastive(rbm, data, train(epochs, 50), run_dir, persistent=True)
        return rbm, likelihoods(records)

    whole, whole_history = pcd(tmp_path / "whole", 4)
    pcd(tmp_path / "resumed", 2)  # stopped after 2 epochs, then resumed to 4
    resumed, resumed_history = pcd(tmp_path / "resumed", 4)
    assert resumed_history == whole_history and len(whole_history) == 16
    for a, b in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------- AIS
def bb_20x10(weight_scale=1.0):
    rbm = BernoulliBernoulliRBM(
        20, 10, weight_scale=weight_scale, generator=torch.Generator().manual_seed(0)
    )
    return randomised(rbm, 1)


def test_rbms_implement_the_annealing_interface():
    for rbm in (bb_20x10(), GaussianBernoulliRBM(3, 2)):
        assert isinstance(rbm, Annealable)
        x = rbm.sample_base(7, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(rbm.log_unnormalised_marginal(x, 1.0), -rbm.free_energy(x))
    schedules = (linear_schedule(10), sigmoid_schedule(10), piecewise_schedule())
    for betas in schedules:
        assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() >= 0).all()
    assert len(piecewise_schedule()) == 14501
    with pytest.raises(ValueError, match="rise"):
        ais_log_partition(GaussianBernoulliRBM(3, 2), betas=[0.0, 0.7, 0.5, 1.0], progress=False)


def test_ais_matches_the_exact_log_partition_of_a_bernoulli_rbm():
    rbm = bb_20x10()
    exact = rbm.log_partition().item()
    result = ais_log_partition(rbm, chains=100, betas=1000, seed=0, progress=False)
    assert abs(result.log_z - exact) < 0.1
    assert result.std_error < 0.05
    low, high = result.interval()
    assert low <= result.log_z <= high
    assert result.log_weights.shape == (100,) and 50 < result.ess <= 100
    # a base fitted to data (Salakhutdinov & Murray) is passed through to the model
    data = rbm.sample(500, generator=torch.Generator().manual_seed(0))
    base = rbm.base_from_data(data)
    log_lik, fitted = ais_log_likelihood(
        rbm, data, chains=100, betas=1000, base=base, seed=1, progress=False
    )
    assert fitted.log_z_base != result.log_z_base
    assert abs(fitted.log_z - exact) < 0.1
    torch.testing.assert_close(
        log_lik, rbm.log_likelihood(data).detach() + exact - fitted.log_z, atol=1e-4, rtol=0
    )


def test_ais_matches_the_exact_log_partition_of_a_gaussian_rbm():
    rbm = GaussianBernoulliRBM(
        5, 8, sigma=0.8, weight_scale=0.7, generator=torch.Generator().manual_seed(0)
    )
    rbm = randomised(rbm, 1)
    exact = rbm.log_partition().item()
    result = ais_log_partition(rbm, chains=100, betas=1000, seed=0, progress=False)
    assert abs(result.log_z - exact) < 0.1


def test_ais_error_shrinks_with_more_intermediate_distributions():
    rbm = bb_20x10(weight_scale=1.5)
    exact = rbm.log_partition().item()
    errors, std_errors = [], []
    for steps in (10, 100, 1000):
        results = [
            ais_log_partition(rbm, chains=100, betas=steps, seed=s, progress=False)
            for s in range(3)
        ]
        errors.append(sum(abs(r.log_z - exact) for r in results) / 3)
        std_errors.append(sum(r.std_error for r in results) / 3)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05, errors
    assert std_errors[0] > std_errors[1] > std_errors[2], std_errors
