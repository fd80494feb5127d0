"""Every registered likelihood, σ mode, posterior and prior through its base-class contract
(vaelab/distributions/base.py): a newly registered class that breaks it fails here."""

import math

import pytest
import torch

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.distributions import Likelihood, Posterior, Prior, kl_divergence
from vaelab.registry import LIKELIHOODS, POSTERIORS, PRIORS, SIGMA_MODES
from vaelab.runs import train_run

S, B, LATENT = 3, 4, 5
IMAGE = (1, 4, 4)
DATA_SHAPE = {"multinomial": (12,)}  # word counts; images otherwise


def data_for(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if name == "multinomial":
        return torch.randint(0, 4, (B, *shape), generator=g).float()
    return (
        torch.rand(B, *shape, generator=g).round()
        if name == "bernoulli"
        else torch.rand(B, *shape, generator=g)
    )


def likelihood_cases() -> list:
    cases = []
    for name in LIKELIHOODS:
        takes_mode = "sigma_mode" in LIKELIHOODS.get(name).config_fields.values()
        for mode in SIGMA_MODES.names() if takes_mode else [None]:
            cases.append(pytest.param(name, mode, id=f"{name}-{mode}" if mode else name))
    return cases


@pytest.mark.parametrize("name, mode", likelihood_cases())
def test_likelihood_contract(name, mode):
    shape = DATA_SHAPE.get(name, IMAGE)
    options = {"sigma_mode": mode, "conditioning": "film"} if mode else {}
    cfg = ModelConfig(likelihood=name, **options)
    check_likelihood_contract(LIKELIHOODS.get(name).from_config(shape, cfg), name, shape)


def check_likelihood_contract(lik, name: str, shape: tuple[int, ...]) -> None:
    assert isinstance(lik, Likelihood)
    x = data_for(name, shape)
    out_shape = (shape[0] * lik.outputs_per_dim, *shape[1:])
    output = torch.randn(S, B, *out_shape)
    condition = torch.zeros(1) if lik.needs_condition else None
    for training in (True, False):
        lik.train(training)
        rec = lik(x, output, condition)
        assert rec.nll_samples.shape == rec.mse_samples.shape == (S, B)
        assert rec.nll.shape == (B,) and torch.isfinite(rec.nll).all()
        assert lik.log_prob(x, output, condition).shape == (S, B)
        weights = torch.softmax(torch.randn(S, B), 0)
        pair = lik.pairwise(x, output[:, 0], condition, weights)
        full = lik(x, output[:, 0:1].expand(S, B, *out_shape), condition, weights)
        torch.testing.assert_close(pair.nll_samples, full.nll_samples, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(pair.nll, full.nll, rtol=1e-4, atol=1e-3)
    assert lik.mean(output).shape == (S, B, *shape)
    if lik.can_sample:
        assert lik.sample(output, condition).shape == (S, B, *shape)
    if lik.exponential_family:
        eta = lik.natural_parameters(output[0], condition)
        nu = lik.family.sufficient_statistics(x.flatten(1))
        assert eta.shape == nu.shape
    info = lik.describe()
    assert info["likelihood"] == name and all(isinstance(k, str) for k in info)


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_posterior_contract(name):
    cls = POSTERIORS.get(name)
    params = torch.randn(B, cls.param_size(LATENT))
    q = cls.from_params(params)
    assert isinstance(q, Posterior)
    torch.testing.assert_close(cls.from_params(q.params).mean, q.mean)
    assert q.mean.shape == q.variance.shape == (B, LATENT)
    z = q.sample(S)
    assert z.shape == (S, B, LATENT) and not z.requires_grad
    assert q.draw(S).shape == (S, B, LATENT)
    assert q.log_prob(z).shape == (S, B) and q.entropy().shape == (B,)
    if q.has_rsample:
        params.requires_grad_(True)
        cls.from_params(params).rsample(S).sum().backward()
        assert params.grad is not None and params.grad.abs().sum() > 0
    else:
        with pytest.raises(NotImplementedError):
            q.rsample(S)
    if q.has_enumerate_support:
        assert q.enumerable
        codes = q.enumerate_support()
        total = q.log_prob(codes[:, None, :]).exp().sum(0)
        torch.testing.assert_close(total, torch.ones(B))
    assert q.sufficient_statistics(z).shape[:-1] == (S, B)
    assert q.natural_parameters.shape[:-1] == (B,)


@pytest.mark.parametrize("name", PRIORS.names())
def test_prior_contract(name):
    p = PRIORS.get(name)(LATENT)
    assert isinstance(p, Prior)
    z = p.sample(B)
    assert z.shape == (B, LATENT) and p.log_prob(z).shape == (B,)
    if p.continuous:
        z = z.requires_grad_(True)
        (grad,) = torch.autograd.grad(p.log_prob(z).sum(), z)
        torch.testing.assert_close(p.grad_log_prob(z.detach()), grad)


@pytest.mark.parametrize("posterior", POSTERIORS.names())
def test_every_posterior_has_a_kl_to_some_prior(posterior):
    q = POSTERIORS.get(posterior).from_params(
        torch.randn(B, POSTERIORS.get(posterior).param_size(LATENT))
    )
    rates = []
    for prior in PRIORS.names():
        try:
            rates.append(kl_divergence(q, PRIORS.get(prior)(LATENT)))
        except NotImplementedError:
            continue
    assert rates and all(r.shape == (B,) and (r >= -1e-5).all() for r in rates)


def test_exact_enumeration_of_too_many_bits_is_refused_in_one_line():
    from vaelab.errors import ConfigError

    with pytest.raises(ConfigError, match="17 latent dimensions have too many"):
        ModelConfig(
            posterior="bernoulli", prior="uniform-bernoulli", estimator="exact", latent_dim=17
        )
    ModelConfig(posterior="bernoulli", prior="uniform-bernoulli", estimator="exact", latent_dim=16)


class _LaplaceLikelihood(Likelihood):
    """What a newcomer writes to add a decoder: p(x|z) = Π_d exp(−|x_d − μ_d|/b) / (2b)."""

    def __init__(self, data_shape):
        super().__init__(data_shape)
        self.log_scale = torch.nn.Parameter(torch.zeros(()))

    def mean(self, output):
        return output

    def forward(self, x, output, condition=None, weights=None):
        from vaelab.distributions import Reconstruction

        nll = (x - output).abs() / self.log_scale.exp() + self.log_scale + math.log(2.0)
        mse = ((x - output) ** 2).flatten(2).mean(-1)
        return Reconstruction(nll.flatten(2).sum(-1), mse, weights=weights)

    def sample(self, output, condition=None):
        return output + self.log_scale.exp() * torch.distributions.Laplace(0.0, 1.0).sample(
            output.shape
        )

    def describe(self, condition=None):
        return {"likelihood": "laplace", "scale": float(self.log_scale.detach().exp())}


def test_a_likelihood_written_in_one_class_trains_and_reports_through_the_contract(
    tmp_path, monkeypatch
):
    check_likelihood_contract(_LaplaceLikelihood(IMAGE), "laplace", IMAGE)
    monkeypatch.setitem(LIKELIHOODS._entries, "laplace", _LaplaceLikelihood)
    cfg = Config(
        data=DataConfig(name="digits", train_limit=200, test_limit=50),
        model=ModelConfig(likelihood="laplace", latent_dim=2, hidden=[16]),
        train=TrainConfig(epochs=2, batch_size=50, progress=False, device="cpu"),
    )
    run = train_run(cfg, tmp_path / "laplace")
    assert math.isfinite(run.state.last_test["negative_elbo"])
    assert "scale = " in (tmp_path / "laplace" / "report.md").read_text()


def test_every_registry_declares_exactly_the_names_its_package_registers():
    """Configs check names against the declarations before torch is imported: a name added
    to a package without its declaration (or the reverse) would be refused (or accepted) by
    the first pass and not by the second."""
    from vaelab import registry

    registries = [r for r in vars(registry).values() if isinstance(r, registry.Registry)]
    assert len(registries) == 11
    for r in registries:
        assert r.declared and sorted(r.declared) == r.names(), r.kind


def test_every_recipe_checks_its_config_with_the_settings_class_it_registers():
    from vaelab.experiments.settings import RECIPE_SETTINGS
    from vaelab.registry import EXPERIMENTS

    for name, settings in RECIPE_SETTINGS.items():
        assert EXPERIMENTS.get(name).config_cls is settings, name


def test_the_configs_name_tables_equal_the_tables_of_the_layers_that_define_them():
    from vaelab.config import BETA_SAMPLINGS, MULTINOMIAL_CONVENTIONS
    from vaelab.distributions.log_uniform import PER_EXAMPLE
    from vaelab.distributions.multinomial import CONVENTIONS

    assert set(BETA_SAMPLINGS) == set(PER_EXAMPLE)
    assert MULTINOMIAL_CONVENTIONS == CONVENTIONS


def test_semhash_preprocessings_name_registered_data_sets():
    from vaelab.experiments.settings import DATASETS_BY_PREPROCESSING
    from vaelab.registry import DATASETS

    assert all(name in DATASETS for name in DATASETS_BY_PREPROCESSING.values())
