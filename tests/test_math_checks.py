"""Tests that fail when the math is wrong (issue 13, item 9): each module's output against a
value written out by hand — the MR-VAE gate's formula, MIG on a representation whose mutual
informations are known exactly, BDMC on a non-linear decoder whose log-likelihood is computed
by dense quadrature, and every term of the rate's MI / TC / dimension-wise-KL split."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import nn

from vaelab.config import ModelConfig
from vaelab.data.ground_truth import GroundTruthData
from vaelab.distributions import DiagonalGaussian, GaussianLikelihood, StandardNormal
from vaelab.evaluation.disentanglement import mig
from vaelab.evaluation.kl_decomposition import decompose_posteriors
from vaelab.evaluation.loglik import bdmc
from vaelab.models import VAE, build_vae
from vaelab.models.ppca import ppca_log_likelihood
from vaelab.networks.blocks import Block, BlockNetwork, mlp_blocks
from vaelab.networks.conditioning import Gate


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tiny networks run on one thread: with two, and the cores shared with other jobs,
    the threads spin against each other (BDMC below: 35 s of CPU instead of 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- 1. the Gate conditioner: h ← ReLU(W h + c) · 2σ(w ℓ + b), per unit, per block ----------


def test_gate_output_is_the_mr_vae_gate_written_out_by_hand():
    # one block Linear(1 → 2) + ReLU, gated, then a Linear(2 → 1) head; ℓ = log 3 so that
    # σ(ℓ) = 3/4 and σ(−ℓ) = 1/4:
    #   pre-activation  W x + c = [2, −1]·1 + [0.5, 1.5] = [2.5, 0.5]      (ReLU keeps both)
    #   gates 2σ(w ℓ + b), w = [1, −1], b = 0:  [2 · 3/4, 2 · 1/4] = [1.5, 0.5]
    #   gated           [2.5 · 1.5, 0.5 · 0.5] = [3.75, 0.25]
    #   head            1 · 3.75 + 2 · 0.25 + 0.1 = 4.35
    net = BlockNetwork(mlp_blocks([1, 2]), nn.Linear(2, 1))
    net.add_conditioning(Gate)
    with torch.no_grad():
        net.blocks[0][0].weight.copy_(torch.tensor([[2.0], [-1.0]]))
        net.blocks[0][0].bias.copy_(torch.tensor([0.5, 1.5]))
        net.conditioner.weight.copy_(torch.tensor([1.0, -1.0]))
        net.conditioner.bias.zero_()
        net.head.weight.copy_(torch.tensor([[1.0, 2.0]]))
        net.head.bias.fill_(0.1)
        out = net(torch.ones(1, 1), torch.tensor([math.log(3.0)]))
    assert out.item() == pytest.approx(4.35, abs=1e-6)
    # at ℓ = 0 every gate is 2σ(0) = 1: the ungated network, 2.5 + 2 · 0.5 + 0.1 = 3.6
    with torch.no_grad():
        assert net(torch.ones(1, 1), torch.zeros(1)).item() == pytest.approx(3.6, abs=1e-6)


def test_gate_on_two_blocks_with_a_condition_per_example_and_mr_vae_preactivation_form():
    g = torch.Generator().manual_seed(0)
    sizes = [3, 4, 2]
    net = BlockNetwork(mlp_blocks(sizes), nn.Linear(2, 3))
    net.add_conditioning(Gate)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(5, 3, generator=g)
    ell = torch.tensor([-1.0, -0.3, 0.0, 0.6, 1.0])  # one ℓ per example
    (W1, c1), (W2, c2) = [(b[0].weight, b[0].bias) for b in net.blocks]
    w, b = net.conditioner.weight, net.conditioner.bias  # units of block 1 first, then block 2

    def gate(units):
        return 2 * torch.sigmoid(ell[:, None] * w[units] + b[units])  # [B, units]

    with torch.no_grad():
        g1, g2 = gate(slice(0, 4)), gate(slice(4, 6))
        h1 = torch.relu(x @ W1.T + c1) * g1
        h2 = torch.relu(h1 @ W2.T + c2) * g2
        expected = h2 @ net.head.weight.T + net.head.bias
        torch.testing.assert_close(net(x, ell), expected, rtol=1e-6, atol=1e-6)
        # MR-VAE (Bae et al. 2023) gates each layer's pre-activation: W(β) = σ ⊙_row W,
        # c(β) = σ ⊙ c, then the activation; for the positive gate of a ReLU block the two agree
        h1_mr = torch.relu(g1 * (x @ W1.T + c1))
        h2_mr = torch.relu(g2 * (h1_mr @ W2.T + c2))
        torch.testing.assert_close(h2_mr, h2, rtol=1e-6, atol=1e-6)
        # and each example's own ℓ matters: one ℓ for the whole batch gives another output
        assert not torch.allclose(net(x, torch.full((5,), 0.6)), expected, atol=1e-3)


def test_gate_through_a_vae_uses_the_standardised_log_beta_and_gates_conv_channels():
    # β-range [0.1, 10]: ℓ = (log β − log 1) / log 10, so β = 10 ↦ ℓ = 1 and β = 0.1 ↦ ℓ = −1
    cfg = ModelConfig(network="conv", channels=[2, 2], hidden=[3], latent_dim=2,
                      conditioning="gate", beta_range=[0.1, 10.0], sigma_mode="fixed")  # fmt: skip
    torch.manual_seed(1)
    model = build_vae(cfg, (1, 8, 8)).eval()
    dec = model.decoder
    with torch.no_grad():
        for p in dec.conditioner.parameters():
            p.copy_(torch.randn(p.shape))
    z = torch.randn(3, 2)
    # decoder blocks: Linear(2 → 3) + ReLU, Linear(3 → 2·2·2) + ReLU, unflatten to [2, 2, 2],
    # ConvTranspose(2 → 2) + ReLU to [2, 4, 4] (gated per channel), head ConvTranspose(2 → 1)
    lin1, lin2, _, deconv = (b[0] if isinstance(b, Block) else b for b in dec.blocks)
    w, b = dec.conditioner.weight, dec.conditioner.bias
    assert dec.conditioner.features == [3, 8, 2]
    for beta, ell in ((10.0, 1.0), (0.1, -1.0), (1.0, 0.0), (math.sqrt(10.0), 0.5)):
        gates = 2 * torch.sigmoid(ell * w + b)
        with torch.no_grad():
            h = torch.relu(lin1(z)) * gates[:3]
            h = (torch.relu(lin2(h)) * gates[3:11]).reshape(3, 2, 2, 2)
            h = torch.relu(deconv(h)) * gates[11:13][None, :, None, None]
            expected = dec.head(h)
            _, cond = model.condition(3, beta, "cpu")
            torch.testing.assert_close(cond, torch.full((1,), ell), atol=1e-6, rtol=0)
            torch.testing.assert_close(model.decode(z, cond), expected, rtol=1e-5, atol=1e-6)


# --- 2. MIG on a representation whose mutual informations are known exactly ----------------


class BalancedGrid(GroundTruthData):
    """Factors (4 classes, 3 classes): every one of the 12 combinations equally often in any
    sample of a multiple of 12 rows (shuffled), so plug-in entropies and mutual informations
    equal the population ones exactly; the observation is the factor row itself."""

    factor_sizes = (4, 3)
    factor_names = ("four", "three")

    def sample_factors(self, n, rng):
        assert n % 12 == 0
        grid = np.array([(a, b) for a in range(4) for b in range(3)], dtype=np.int64)
        return np.tile(grid, (n // 12, 1))[rng.permutation(n)]

    def sample_observations_from_factors(self, factors, rng):
        return factors.astype(np.float32)


def parity_code(observations):
    """z0 = f0, z1 = f1 + 3·(f0 mod 2), z2 = 0 (a constant)."""
    f0, f1 = observations[:, 0], observations[:, 1]
    return np.c_[f0, f1 + 3 * (f0 % 2), np.zeros(len(f0))]


def test_mig_equals_the_gap_computed_by_hand():
    # With 20 bins every distinct value of z0 (0..3, range 3) and z1 (0..5, range 5) has its own
    # bin, z2 one bin. In nats, with f0 uniform on 4 and f1 uniform on 3, independent:
    #   H(f0) = log 4, H(f1) = log 3
    #   I(z0; f0) = log 4,  I(z0; f1) = 0
    #   I(z1; f0) = H(z1) − H(z1|f0) = log 6 − log 3 = log 2   (z1 knows the parity of f0)
    #   I(z1; f1) = H(z1) − H(z1|f1) = log 6 − log 2 = log 3
    #   I(z2; ·) = 0
    # MIG(f0) = (log 4 − log 2) / log 4 = 1/2;  MIG(f1) = (log 3 − 0) / log 3 = 1;  mean 3/4.
    m = mig(BalancedGrid(), parity_code, random_state=np.random.default_rng(0), num_train=1200)
    assert m["mig_four"] == pytest.approx(0.5, abs=1e-12)
    assert m["mig_three"] == pytest.approx(1.0, abs=1e-12)
    assert m["discrete_mig"] == pytest.approx(0.75, abs=1e-12)


def test_mig_with_coarse_bins_by_hand():
    # 3 equal-width bins, edges at the range's thirds, the maximum in the last bin:
    #   z0 ∈ {0,1,2,3}: edges 0, 1, 2 → bins {0}, {1}, {2,3}: I(z0; f0) = H(¼, ¼, ½) = 1.5 log 2
    #   z1 ∈ {0..5}: edges 0, 5/3, 10/3 → bins {0,1}, {2,3}, {4,5}. f0 even: z1 ∈ {0,1,2} →
    #   bins (1,1,2); odd: z1 ∈ {3,4,5} → bins (2,3,3). So z1's bin is uniform on 3 values,
    #   I(z1; f0) = log 3 − H(⅔, ⅓) = (2/3) log 2, and given f1 it takes 2 values equally:
    #   I(z1; f1) = log 3 − log 2.
    # MIG(f0) = (1.5 − 2/3) log 2 / (2 log 2) = 5/12;  MIG(f1) = log(3/2) / log 3.
    m = mig(BalancedGrid(), parity_code, random_state=3, num_train=1200, num_bins=3)
    assert m["mig_four"] == pytest.approx(5 / 12, abs=1e-12)
    assert m["mig_three"] == pytest.approx(math.log(1.5) / math.log(3), abs=1e-12)
    # 2 bins: z0 → {0,1}, {2,3} and z1 → {0,1,2}, {3,4,5} both carry exactly the parity (log 2)
    # of f0 and nothing of f1: both gaps are 0
    m = mig(BalancedGrid(), parity_code, random_state=3, num_train=1200, num_bins=2)
    assert m["mig_four"] == pytest.approx(0.0, abs=1e-12)
    assert m["mig_three"] == pytest.approx(0.0, abs=1e-12)


# --- 3. BDMC on a tanh decoder, against log p(x) by quadrature over a 2-D latent -------------

LATENT, HIDDEN, DATA, SIGMA = 2, 8, 3, 0.3


def tanh_decoder_weights():
    g = torch.Generator().manual_seed(0)
    return (
        1.5 * torch.randn(HIDDEN, LATENT, generator=g),
        0.5 * torch.randn(HIDDEN, generator=g),
        2.0 * torch.randn(DATA, HIDDEN, generator=g) / math.sqrt(HIDDEN),
        0.2 * torch.randn(DATA, generator=g),
    )


def tanh_vae(A, a, V, c) -> VAE:
    """p(z) = N(0, I₂), p(x|z) = N(V tanh(A z + a) + c, σ² I₃), σ = 0.3 (the encoder is unused
    by AIS and BDMC)."""
    hidden, head = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, DATA)
    with torch.no_grad():
        hidden.weight.copy_(A)
        hidden.bias.copy_(a)
        head.weight.copy_(V)
        head.bias.copy_(c)
    return VAE(
        BlockNetwork([], nn.Linear(DATA, 2 * LATENT)),
        BlockNetwork([Block(hidden, nn.Tanh(), features=HIDDEN)], head),
        DiagonalGaussian,
        GaussianLikelihood((DATA,), sigma_mode="fixed", sigma=SIGMA),
        StandardNormal(LATENT),
    ).eval()


def quadrature_log_likelihood(x, weights, h, half=8.0):
    """log ∫ N(z; 0, I) N(x; f(z), σ²I) dz [n] on the grid (h ℤ)² ∩ [−8, 8]², float64. The
    integrand is smooth and negligible at the border, so the grid sum converges faster than
    any power of h; the prior mass outside the square is < 4Φ(−8) ≈ 2.5e−15."""
    A, a, V, c = (t.double() for t in weights)
    t = torch.arange(-half, half + h / 2, h, dtype=torch.float64)
    z = torch.cartesian_prod(t, t)
    mean = torch.tanh(z @ A.T + a) @ V.T + c  # [G, D]
    x = x.double()
    sq = (x * x).sum(1)[None] - 2 * mean @ x.T + (mean * mean).sum(1)[:, None]  # [G, n]
    log_lik = -sq / (2 * SIGMA**2) - DATA / 2 * math.log(2 * math.pi * SIGMA**2)
    log_prior = -(z * z).sum(1) / 2 - math.log(2 * math.pi)
    return torch.logsumexp(log_prior[:, None] + log_lik, 0) + 2 * math.log(h)


def test_bdmc_brackets_the_quadrature_log_likelihood_of_a_tanh_decoder():
    weights = tanh_decoder_weights()
    model = tanh_vae(*weights)
    n, chains = 50, 16
    # HMC with a fixed step size, so that every transition leaves its p_β invariant and the
    # bounds hold exactly in expectation (the default adapts ε to each chain's own acceptance
    # history, which biases both directions slightly: see the last check)
    fixed = dict(step_size=0.25, adapt=(1.0, 1.0))
    results = {steps: bdmc(model, n, steps=steps, chains=chains, leapfrog=3, seed=0, **fixed)
               for steps in (10, 100, 1000)}  # fmt: skip
    x = results[10].x  # the same seed simulates the same (z, x) for every schedule
    assert all(torch.equal(r.x, x) for r in results.values())
    exact = quadrature_log_likelihood(x, weights, 0.05)
    # grid error: halving the spacing from 0.1 moves the value by ~1e−5 (measured 9e−6), and
    # the error falls like exp(−c/h²), so at h = 0.05 it is far below the AIS tolerances here
    coarse = quadrature_log_likelihood(x, weights, 0.1)
    assert (exact - coarse).abs().max() < 1e-4
    # the prior mass outside the grid, times the largest possible likelihood, against p(x)
    outside = 4 * stats.norm.sf(8.0) * (2 * math.pi * SIGMA**2) ** (-DATA / 2)
    assert outside / float(exact.exp().min()) < 1e-9
    # the decoder is far from linear: pPCA with its Jacobian at z = 0 is off by > 1 nat
    A, a, V, c = weights
    jacobian = V @ torch.diag(1 - torch.tanh(a) ** 2) @ A
    linearised = ppca_log_likelihood(jacobian, V @ torch.tanh(a) + c, SIGMA, x)
    assert (linearised - exact).abs().mean() > 1.0

    def three_se(d):  # 3 standard errors of the mean over the examples
        return 3 * float(d.std()) / math.sqrt(n)

    gaps = []
    for steps, r in results.items():
        lower, upper = r.lower - exact, r.upper - exact  # per example, nats
        # stochastic bounds: E[lower] ≤ log p(x) ≤ E[upper], on the mean over the examples
        # (resolution 3 s.e. ≈ 0.03–0.05 nats at 1000 steps, 0.1–0.4 at 10)
        assert float(lower.mean()) <= three_se(lower), (steps, float(lower.mean()))
        assert float(upper.mean()) >= -three_se(upper), (steps, float(upper.mean()))
        gaps.append(float(r.gap.mean()))
    # measured over seeds 0–5: gaps ≈ 0.8–1.3, 0.04–0.18, −0.01–0.04 nats
    assert gaps[0] > 0.5 and gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.1, gaps
    for bound in (results[1000].lower, results[1000].upper):
        assert abs(float((bound - exact).mean())) < 0.05

    # the default, adaptive step size: within 0.1 nats. (Measured over 6 seeds × 50 examples,
    # 32 chains: forward +0.021 ± 0.005 and reverse +0.024 nats above log p(x), against −0.002
    # and +0.002 with the fixed step: a small upward bias of adapting ε during annealing.)
    adaptive = bdmc(model, n, steps=1000, chains=chains, leapfrog=3, seed=0)
    assert torch.equal(adaptive.x, x)
    for bound in (adaptive.lower, adaptive.upper):
        assert abs(float((bound - exact).mean())) < 0.1
    assert abs(float(adaptive.gap.mean())) < 0.1


# --- 4. MI + TC + dimension-wise KL = rate, every term against its definition ---------------


def test_kl_terms_of_separated_posteriors_by_hand():
    # posteriors with σ = e^−15 ≈ 3e−7 at means ±1: every other component's density at a draw is
    # exp(−(2/σ)²/2) = 0 in float64, so log q(z) and log q(z_j) count the components that share
    # the draw's mean (in all coordinates, resp. in coordinate j), whatever the draws:
    #   grid means (±1, ±1), one example each: log q(z) = log q(z|x) − log 4 → MI = log 4,
    #     log q(z_j) = log q(z_j|x_j) − log 2 → TC = −log 4 + 2 log 2 = 0
    #   coupled means (−1,−1), (−1,−1), (1,1), (1,1): MI = log 2 and TC = 2 log 2 − log 2 = log 2
    # the rate is KL(N(±1, σ²) ‖ N(0, 1)) = ½(σ² + 1 − 1 − log σ²) = 15 + ½σ² per coordinate.
    log_var = torch.full((4, 2), -30.0, dtype=torch.float64)
    grid = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    coupled = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [1.0, 1.0], [1.0, 1.0]])
    for mean, mi, tc in ((grid, math.log(4), 0.0), (coupled.double(), math.log(2), math.log(2))):
        r = decompose_posteriors(mean, log_var, random_state=0, samples=250)
        assert r["mi"] == pytest.approx(mi, abs=1e-9)
        assert r["tc"] == pytest.approx(tc, abs=1e-9)
        assert r["rate_analytic"] == pytest.approx(2 * (15 + 0.5 * math.exp(-30)), abs=1e-9)
        assert r["mi"] + r["tc"] + r["dwkl"] == pytest.approx(r["rate"], abs=1e-9)
        assert abs(r["rate"] - r["rate_analytic"]) < 4 * r["rate_stderr"]


def reference_terms(mean, log_var, z, own, component_weights):
    """MI, TC, dwKL and the MC rate from their definitions (scipy), for draws z [R, L] of the
    posteriors own [R] and the aggregate q(z) = Σ_m w_rm q(z|x_m), w = component_weights [R, n]
    (the same weights for the joint and for every marginal)."""
    std = np.exp(0.5 * log_var)
    comp = stats.norm.logpdf(z[:, None, :], mean[None], std[None])  # [R, n, L]
    with np.errstate(divide="ignore"):  # weight 0: a component outside the draw's minibatch
        log_w = np.log(component_weights)[:, :, None]
    log_q_joint = special.logsumexp(comp.sum(2) + log_w[:, :, 0], axis=1)  # [R]
    log_q_dims = special.logsumexp(comp + log_w, axis=1)  # [R, L]
    log_q_cond = stats.norm.logpdf(z, mean[own], std[own]).sum(1)
    log_p = stats.norm.logpdf(z)
    return {
        "mi": np.mean(log_q_cond - log_q_joint),
        "tc": np.mean(log_q_joint - log_q_dims.sum(1)),
        "dwkl": np.mean((log_q_dims - log_p).sum(1)),
        "rate": np.mean(log_q_cond - log_p.sum(1)),
    }


def test_every_kl_term_against_its_definition_for_the_full_and_stratified_estimators():
    # The identity MI + TC + dwKL = rate holds per draw for any estimate of q(z) and q(z_j) as
    # long as MI and TC use the same log q(z) and TC and dwKL the same log q(z_j): the sum
    # telescopes to log q(z|x) − log p(z), the MC rate of the same draws. Both estimators here
    # ("full": the n posteriors weighted 1/n; "mss": within each minibatch, the draw's own
    # posterior 1/N and the others (N − 1)/(N (M − 1))) share their q(z) that way, so the
    # identity holds to rounding (1e−9) — which only means something together with each term
    # checked against its definition. The draws are replayed: ε are the first standard normals
    # of the given seed, z = μ + σ ε, and mss then draws one permutation per sample.
    g = torch.Generator().manual_seed(0)
    n, latent, samples, seed = 7, 3, 2, 11
    mean = torch.randn(n, latent, generator=g, dtype=torch.float64)
    log_var = torch.randn(n, latent, generator=g, dtype=torch.float64) * 0.5 - 1.0
    mu, lv = mean.numpy(), log_var.numpy()
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((samples, n, latent))
    z = (mu + np.exp(0.5 * lv) * eps).reshape(samples * n, latent)
    own = np.arange(samples * n) % n
    # closed-form mean KL(N(μ, σ²) ‖ N(0, 1)), summed over coordinates
    kl = 0.5 * (np.exp(lv) + mu**2 - 1 - lv).sum(1).mean()

    full = decompose_posteriors(mean, log_var, seed, samples)
    expected = reference_terms(mu, lv, z, own, np.full((samples * n, n), 1 / n))
    for term in ("mi", "tc", "dwkl", "rate"):
        assert full[term] == pytest.approx(expected[term], abs=1e-9), term
    assert full["mi"] + full["tc"] + full["dwkl"] == pytest.approx(full["rate"], abs=1e-9)
    assert full["rate_analytic"] == pytest.approx(kl, abs=1e-9)

    # minibatches of M = 3 out of a data set of N = 20: the 7 draws of a sample in batches of 4 and 3
    big_n, m = 20, 3
    mss = decompose_posteriors(
        mean, log_var, seed, samples, estimator="mss", minibatch_size=m, dataset_size=big_n
    )
    weights = np.zeros((samples * n, n))
    for s in range(samples):
        for batch in np.array_split(rng.permutation(n), n // m):
            for i in batch:
                weights[s * n + i, batch] = (big_n - 1) / (big_n * (len(batch) - 1))
                weights[s * n + i, i] = 1 / big_n
    expected = reference_terms(mu, lv, z, own, weights)
    for term in ("mi", "tc", "dwkl", "rate"):
        assert mss[term] == pytest.approx(expected[term], abs=1e-9), term
    assert mss["mi"] + mss["tc"] + mss["dwkl"] == pytest.approx(mss["rate"], abs=1e-9)
    assert mss["rate"] == pytest.approx(full["rate"], abs=1e-12)  # the same draws
    assert mss["mi"] != pytest.approx(full["mi"], abs=1e-3)  # and another estimate of q(z)
