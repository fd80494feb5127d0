"""Gradient estimators for binary codes (ARM, DisARM, REINFORCE-RLOO, Gumbel-ST) against exact
enumeration.

Set-up: 6 bits, a tiny MLP decoder (weights scaled up so that f(z) = −log p(x|z) varies a lot
over codes), 3 fixed inputs with fixed logits ℓ. The encoder is replaced by a module that
returns ℓ as a leaf tensor, so the gradient w.r.t. ℓ of each example's surrogate loss is that
example's estimate. Each input is replicated R times in one batch: one call gives R
independent estimates per input, whose mean is compared with the exact gradient (autograd
through the enumerated `exact` loss) coordinate by coordinate, in units of the standard error.
"""

import math

import pytest
import torch
from torch import nn

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.distributions import multinomial
from vaelab.errors import ConfigError
from vaelab.estimators import discrete
from vaelab.estimators.exact import exact
from vaelab.models import build_vae
from vaelab.registry import ESTIMATORS
from vaelab.runs import train_run

SHAPE = (1, 3, 3)
BITS = 6
INPUTS = 3
REPLICAS = 20_000  # estimates per input
GROUPS = 40  # decoder gradients: means over groups of replicas
BETA = torch.tensor(0.7)
UNBIASED = [("arm", 1), ("arm", 3), ("disarm", 1), ("disarm", 3), ("reinforce", 2), ("reinforce", 5)]  # fmt: skip
ALL = ["arm", "disarm", "reinforce", "gumbel-st"]


class FixedLogits(nn.Module):
    """An 'encoder' returning the given logits whatever x is (a leaf to differentiate by)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x, condition=None):
        return self.logits


def problem(likelihood="bernoulli"):
    """(model, x [INPUTS, *SHAPE], logits [INPUTS, BITS]), seeded."""
    cfg = ModelConfig(
        latent_dim=BITS, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator="exact", likelihood=likelihood, sigma_mode="learned-shared", sigma=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_vae(cfg, SHAPE)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
    x = (torch.rand(INPUTS, *SHAPE) > 0.5).float()
    if likelihood == "gaussian":
        x = torch.rand(INPUTS, *SHAPE)
    logits = 1.5 * torch.randn(INPUTS, BITS)
    return model, x, logits


def run(model, name, x, logits, samples, seed=1):
    """(LossTerms, leaf logits) of estimator `name` on x with the encoder fixed to `logits`."""
    leaf = logits.clone().requires_grad_()
    model.encoder = FixedLogits(leaf)
    model.samples = samples
    torch.manual_seed(seed)
    return ESTIMATORS.get(name)(model, x, BETA, None), leaf


def exact_gradients(model, x, logits):
    """∇ of the mean exact loss w.r.t. the logits [INPUTS, BITS] (per input: the sum) and
    w.r.t. the decoder's (and σ_x's) parameters."""
    terms, leaf = run(model, "exact", x, logits, 1)
    params = decoder_params(model)
    grads = torch.autograd.grad(terms.loss.mean(), [leaf, *params])
    return grads[0] * len(x), grads[1:], terms


def decoder_params(model):
    return [*model.decoder.parameters(), *model.likelihood.parameters()]


def logit_estimates(model, name, x, logits, samples, seed=1):
    """Per-example gradients of the surrogate w.r.t. ℓ: [REPLICAS, INPUTS, BITS]."""
    xr, lr = x.repeat(REPLICAS, 1, 1, 1), logits.repeat(REPLICAS, 1)
    terms, leaf = run(model, name, xr, lr, samples, seed)
    (grad,) = torch.autograd.grad(terms.loss.sum(), leaf)
    return grad.view(REPLICAS, INPUTS, BITS)


def z_scores(estimates, exact_value):
    """(mean − exact) / standard error, per coordinate, over the first dimension; a
    coordinate that never varies (e.g. a weight of a dead ReLU unit) must match exactly and
    counts as z = 0."""
    mean = estimates.mean(0)
    se = estimates.std(0) / math.sqrt(len(estimates))
    constant = se == 0
    torch.testing.assert_close(mean[constant], exact_value[constant], rtol=1e-4, atol=1e-6)
    return torch.where(constant, 0.0, (mean - exact_value) / se.where(~constant, 1.0))


def assert_unbiased(z, what):
    # max |z| over ≤ a few hundred coordinates: 5 SE is ~1e-6 per coordinate by chance;
    # the mean of z² is χ²_k/k, ≈ 1 for an unbiased estimator
    assert z.abs().max() < 5, f"{what}: max |z| = {z.abs().max():.2f}"
    assert (z**2).mean() < 2, f"{what}: mean z² = {(z**2).mean():.2f}"


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize(("name", "samples"), UNBIASED)
def test_encoder_gradient_is_unbiased(name, samples, likelihood):
    model, x, logits = problem(likelihood)
    exact_grad, _, _ = exact_gradients(model, x, logits)
    estimates = logit_estimates(model, name, x, logits, samples)
    assert_unbiased(z_scores(estimates, exact_grad), f"{name} S={samples} ∇ℓ")


def test_the_unbiasedness_test_detects_the_bias_of_gumbel_straight_through():
    model, x, logits = problem()
    exact_grad, _, _ = exact_gradients(model, x, logits)
    z = z_scores(logit_estimates(model, "gumbel-st", x, logits, 1), exact_grad)
    assert z.abs().max() > 10
    assert torch.isfinite(z).all()


def test_disarm_has_lower_variance_than_arm():
    """Same u for both (DisARM is ARM averaged over the antithetic pair), so the comparison
    is paired; measured: mean per-coordinate variance ratio ≈ 0.75 here."""
    model, x, logits = problem()
    var_arm = logit_estimates(model, "arm", x, logits, 1, seed=3).var(0)
    var_disarm = logit_estimates(model, "disarm", x, logits, 1, seed=3).var(0)
    ratio = var_disarm / var_arm
    assert ratio.mean() < 0.9, ratio
    assert (ratio < 1.05).all(), ratio
    assert (ratio < 1.0).float().mean() >= 0.9, ratio


@pytest.mark.parametrize("name", ALL)
def test_decoder_gradient_is_unbiased(name):
    """Decoder and σ_x get the Monte-Carlo gradient of f at sampled codes (Gumbel-ST too:
    its forward pass uses hard codes)."""
    model, x, logits = problem("gaussian")  # learned σ_x: a likelihood parameter as well
    _, exact_params, _ = exact_gradients(model, x, logits)
    samples = 2 if name == "reinforce" else 1
    xr, lr = x.repeat(REPLICAS, 1, 1, 1), logits.repeat(REPLICAS, 1)
    terms, _ = run(model, name, xr, lr, samples)
    per_group = terms.loss.view(GROUPS, -1).mean(1)  # each group holds every input equally
    params = decoder_params(model)
    grads = [torch.autograd.grad(g, params, retain_graph=True) for g in per_group]
    estimates = torch.stack([torch.cat([t.flatten() for t in gs]) for gs in grads])
    exact_value = torch.cat([t.flatten() for t in exact_params])
    assert_unbiased(z_scores(estimates, exact_value), f"{name} decoder")


@pytest.mark.parametrize("name", ALL)
def test_loss_value_is_the_monte_carlo_estimate(name):
    model, x, logits = problem()
    samples = 3
    terms, leaf = run(model, name, x, logits, samples, seed=5)
    # value of the surrogate = D̂ + β·R exactly
    torch.testing.assert_close(terms.loss, terms.distortion + BETA * terms.rate, rtol=0, atol=0)
    _, _, exact_terms = exact_gradients(model, x, logits)
    torch.testing.assert_close(terms.rate, exact_terms.rate)
    # D̂ = mean of f over the codes drawn (recomputed from the same random numbers)
    torch.manual_seed(5)
    if name in ("arm", "disarm"):
        _, b, b_anti = discrete.antithetic_pair(logits, samples)
        codes = torch.cat([b, b_anti])
    elif name == "reinforce":
        codes = model.posterior(logits).sample(samples)
    else:
        codes = discrete.relaxed_straight_through(logits, samples, discrete.TEMPERATURE)
    rec = model.likelihood(x, model.decode(codes.detach()))
    torch.testing.assert_close(terms.distortion, rec.nll_samples.mean(0))
    torch.testing.assert_close(terms.mse, rec.mse_samples.mean(0))
    assert ((codes == 0) | (codes == 1)).all()


@pytest.mark.parametrize("name", ALL)
def test_distortion_estimate_is_unbiased(name):
    model, x, logits = problem()
    xr, lr = x.repeat(REPLICAS // 10, 1, 1, 1), logits.repeat(REPLICAS // 10, 1)
    terms, _ = run(model, name, xr, lr, 2)
    _, _, exact_terms = exact_gradients(model, x, logits)
    d = terms.distortion.detach().view(-1, INPUTS)
    assert_unbiased(z_scores(d, exact_terms.distortion.detach()), f"{name} distortion")


def test_gumbel_straight_through_gives_finite_gradients_to_the_whole_model():
    cfg = ModelConfig(
        latent_dim=BITS, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator="gumbel-st", likelihood="bernoulli", samples=2,
    )  # fmt: skip
    model = build_vae(cfg, SHAPE)
    model(torch.rand(8, *SHAPE).round()).loss.mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.head.weight.grad.abs().sum() > 0
    # a lower temperature is a sharper relaxation: still finite
    logits = torch.randn(4, BITS, requires_grad=True)
    z = discrete.relaxed_straight_through(logits, 3, temperature=0.1)
    (z * torch.randn_like(z)).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_reinforce_needs_two_samples():
    model, x, logits = problem()
    with pytest.raises(ConfigError, match="samples"):
        run(model, "reinforce", x, logits, 1)


@pytest.mark.parametrize("name", ALL)
def test_estimators_run_in_a_beta_conditional_model(name):
    cfg = ModelConfig(
        latent_dim=BITS, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator=name, likelihood="bernoulli", samples=2, conditioning="film",
        beta_sampling="example",
    )  # fmt: skip
    model = build_vae(cfg, SHAPE)
    terms = model(torch.rand(5, *SHAPE).round())
    terms.loss.mean().backward()
    assert terms.loss.shape == (5,)
    assert model.encoder.head.weight.grad.abs().sum() > 0


def test_disarm_training_on_binarized_digits_lowers_the_exact_negative_elbo(tmp_path):
    cfg = Config(
        data=DataConfig(name="digits", binarize=True),
        model=ModelConfig(
            latent_dim=8, hidden=[64], likelihood="bernoulli", posterior="bernoulli",
            prior="uniform-bernoulli", estimator="disarm",
        ),
        train=TrainConfig(epochs=5, batch_size=50, lr=1e-2, progress=False, device="cpu"),
    )  # fmt: skip
    _, test = load_data(cfg.data)
    x = test.batch(slice(None))
    torch.manual_seed(cfg.train.seed)
    with torch.no_grad():
        before = exact(build_vae(cfg.model, test.shape), x, torch.tensor(1.0), None)
    model = train_run(cfg, tmp_path, report=False).model
    with torch.no_grad():
        after = exact(model, x, torch.tensor(1.0), None)
    nelbo_before, nelbo_after = before.negative_elbo.mean(), after.negative_elbo.mean()
    assert nelbo_after < nelbo_before - 10, (nelbo_before, nelbo_after)
    # the codes carry information: only the estimator's encoder gradient can teach that
    # (the rate term alone pulls q towards the prior)
    assert after.rate.mean() > 0.2, after.rate.mean()


VOCAB = 12


def multinomial_problem():
    """(model, counts x [INPUTS, VOCAB], logits) for the semantic-hashing likelihood: the
    sparse multinomial formula in the estimators' forward and in exact enumeration's
    `pairwise`, one empty document among the inputs."""
    cfg = ModelConfig(
        latent_dim=BITS, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator="exact", likelihood="multinomial",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_vae(cfg, (VOCAB,))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
    x = torch.randint(0, 5, (INPUTS, VOCAB)) * (torch.rand(INPUTS, VOCAB) < 0.5)
    x[1] = 0
    return model, x.float(), 1.5 * torch.randn(INPUTS, BITS)


def replicate(t, times):
    return t.repeat(times, *(1,) * (t.dim() - 1))


@pytest.fixture(params=[2.0, 0.0], ids=["gathered", "dense"])
def counts_path(request, monkeypatch):
    """The multinomial NLL with the non-zero counts gathered, then with the counts dense."""
    monkeypatch.setattr(multinomial, "SPARSE_BELOW", request.param)


@pytest.mark.parametrize(("name", "samples"), [("arm", 1), ("arm", 3), ("disarm", 1), ("disarm", 3)])  # fmt: skip
def test_multinomial_encoder_gradient_is_unbiased(name, samples, counts_path):
    model, x, logits = multinomial_problem()
    exact_grad, _, _ = exact_gradients(model, x, logits)
    assert exact_grad[0].abs().min() > 0  # the check is not of a vanishing gradient
    terms, leaf = run(model, name, replicate(x, REPLICAS), replicate(logits, REPLICAS), samples)
    (grad,) = torch.autograd.grad(terms.loss.sum(), leaf)
    z = z_scores(grad.view(REPLICAS, INPUTS, BITS), exact_grad)
    assert_unbiased(z, f"multinomial {name} S={samples} ∇ℓ")


@pytest.mark.parametrize("name", ["arm", "disarm"])
def test_multinomial_decoder_gradient_is_unbiased(name, counts_path):
    """One graph, differentiated once per group with retain_graph: the likelihood's backward
    pass, which reuses its forward softmax in place, is called GROUPS times."""
    model, x, logits = multinomial_problem()
    _, exact_params, _ = exact_gradients(model, x, logits)
    terms, _ = run(model, name, replicate(x, REPLICAS), replicate(logits, REPLICAS), 1)
    per_group = terms.loss.view(GROUPS, -1).mean(1)
    params = decoder_params(model)
    grads = [torch.autograd.grad(g, params, retain_graph=True) for g in per_group]
    estimates = torch.stack([torch.cat([t.flatten() for t in gs]) for gs in grads])
    exact_value = torch.cat([t.flatten() for t in exact_params])
    assert_unbiased(z_scores(estimates, exact_value), f"multinomial {name} decoder")
