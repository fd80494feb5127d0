"""β-conditioning variants (issue 18): the laws and schemes of β, the switches of where, how
strongly and with how wide a conditioner β enters, the once-per-batch conditioner, and
`vaelab rd --against` a sweep."""

import csv
import math

import numpy as np
import pytest
import torch
from scipy import stats

from vaelab.cli import main
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig, from_dict
from vaelab.distributions import log_uniform
from vaelab.distributions.log_uniform import LogUniformBeta, beta_prior
from vaelab.errors import ConfigError
from vaelab.evaluation import evaluate
from vaelab.models import build_vae
from vaelab.networks.conditioning import FiLM, Gate
from vaelab.runs import train_run
from vaelab.training import Trainer

SHAPE = (1, 8, 8)
LOW, HIGH = 0.01, 10.0


def position(log_beta) -> np.ndarray:
    """u = (log β − log a) / (log b − log a) ∈ [0, 1]."""
    values = np.asarray(log_beta, dtype=np.float64)
    return (values - math.log(LOW)) / (math.log(HIGH) - math.log(LOW))


def truncated_exponential(c: float):
    """The tilted law of u: density c·e^{−cu}/(1 − e^{−c}) on [0, 1]."""
    return stats.truncexpon(b=c, scale=1 / c)


# --- the laws and schemes of β -----------------------------------------------------------


def test_config_name_tables_equal_the_code_tables():
    from vaelab import config
    from vaelab.models import vae
    from vaelab.networks import conditioning

    assert set(config.BETA_SAMPLINGS) == set(log_uniform.PER_EXAMPLE) == set(log_uniform.STRATIFIED)
    assert set(config.BETA_LAWS) == set(log_uniform.TAKES_TILT)
    assert config.GATE_DECODERS == conditioning.GATE_DECODERS
    assert config.CONDITION_SITES == vae.CONDITION_SITES


@pytest.mark.parametrize("c", [1.0, 3.0])
def test_tilted_log_beta_follows_the_truncated_exponential_and_not_the_uniform(c):
    prior = LogUniformBeta(LOW, HIGH, per_example=True, tilt=c)
    torch.manual_seed(0)
    u = position(prior.sample(20_000))
    assert u.min() >= 0 and u.max() <= 1
    assert stats.kstest(u, truncated_exponential(c).cdf).pvalue > 0.01
    assert stats.kstest(u, stats.uniform(0, 1).cdf).pvalue < 1e-6
    # more mass at the small-β end: P(u < ½) = (1 − e^{−c/2}) / (1 − e^{−c})
    expected = math.expm1(-c / 2) / math.expm1(-c)
    assert np.mean(u < 0.5) == pytest.approx(expected, abs=0.015)
    assert expected > 0.6


def test_the_laws_cdf_inverts_their_quantile():
    prior = LogUniformBeta(LOW, HIGH, per_example=True, tilt=2.0)
    v = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(prior.cdf(prior.quantile(v)), v)
    torch.testing.assert_close(
        prior.cdf(torch.tensor([0.5], dtype=torch.float64)),
        torch.tensor([math.expm1(-1.0) / math.expm1(-2.0)], dtype=torch.float64),
    )


def test_tilted_per_minibatch_beta_is_one_per_batch_with_the_tilted_law_across_batches():
    prior = beta_prior(LOW, HIGH, "minibatch", "tilted", 2.0)
    torch.manual_seed(1)
    draws = [prior.sample(64) for _ in range(3000)]
    assert all(d.shape == (1,) for d in draws)
    assert stats.kstest(position(torch.cat(draws)), truncated_exponential(2.0).cdf).pvalue > 0.01


@pytest.mark.parametrize("law, tilt", [("log-uniform", None), ("tilted", 2.0)])
def test_stratified_beta_has_one_draw_per_stratum_and_the_laws_marginal(law, tilt):
    prior = beta_prior(LOW, HIGH, "stratified", law, tilt)
    n, batches = 32, 2000
    torch.manual_seed(0)  # over seeds these KS p-values are uniform, as they should be
    draws = torch.stack([prior.sample(n) for _ in range(batches)]).double()
    u = torch.as_tensor(position(draws))
    strata = torch.floor(prior.cdf(u) * n).long()  # the stratum of F(u) in [0, 1]
    assert all(sorted(row.tolist()) == list(range(n)) for row in strata)
    cdf = stats.uniform(0, 1).cdf if tilt is None else truncated_exponential(tilt).cdf
    assert stats.kstest(u.flatten().numpy(), cdf).pvalue > 0.01
    # every position of the batch has the law's marginal too (the strata are shuffled)
    assert stats.kstest(u[:, 0].numpy(), cdf).pvalue > 0.01
    # lower variance of a batch's mean than independent draws (theory: 1/n² of it)
    iid = beta_prior(LOW, HIGH, "example", law, tilt)
    independent = torch.stack([iid.sample(n) for _ in range(batches)]).double()
    assert u.mean(1).var() < 0.05 * torch.as_tensor(position(independent)).mean(1).var()


def test_beta_prior_names_and_the_default_tilt():
    assert beta_prior(LOW, HIGH, "minibatch", "log-uniform", None).tilt == 0
    assert beta_prior(LOW, HIGH, "example", "tilted", None).tilt == log_uniform.DEFAULT_TILT
    stratified = beta_prior(LOW, HIGH, "stratified", "tilted", 0.5)
    assert stratified.per_example and stratified.stratified and stratified.tilt == 0.5
    cfg = ModelConfig(conditioning="film", beta_law="tilted", beta_tilt=1.5, beta_range=[0.1, 1])
    prior = build_vae(cfg, SHAPE).beta_prior
    assert (prior.low, prior.high, prior.tilt, prior.per_example) == (0.1, 1, 1.5, False)


# --- one-line refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(beta_law="tilted"), "model.beta_law: an option of a β-conditional model"),
        (dict(condition_at=["latent"]), "model.condition_at: an option of a β-conditional"),
        (dict(condition_hidden=8), "model.condition_hidden: an option of a β-conditional"),
        (dict(conditioning="film", beta_tilt=2.0), "beta_tilt: the 'log-uniform' law has no tilt"),
        (dict(conditioning="film", gate_decoder="mr-vae"), "gate_decoder: the 'film' conditioning"),
        (dict(conditioning="film", condition_at=[]), "condition_at: need one or more distinct"),
        (
            dict(conditioning="film", condition_at=["heads", "heads"]),
            "condition_at: need one or more distinct",
        ),
        (
            dict(conditioning="film", beta_sampling="stratified", sigma_mode="optimal-shared"),
            "needs one β per batch; set model.beta_sampling = 'minibatch'",
        ),
        (
            dict(
                conditioning="film", beta_sampling="stratified", sigma_mode="learned-shared",
                likelihood="bernoulli", posterior="bernoulli", prior="uniform-bernoulli",
                estimator="exact", latent_dim=4,
            ),
            "'exact' decodes every code once for the whole batch",
        ),
    ],
)  # fmt: skip
def test_conditioning_options_that_would_be_ignored_or_wrong_are_refused_in_one_line(fields, match):
    with pytest.raises(ConfigError, match=match) as info:
        ModelConfig(**fields)
    assert "\n" not in str(info.value)


def test_unknown_site_and_law_names_are_refused_when_the_config_is_read():
    with pytest.raises(ConfigError, match="choose one of: blocks, latent, heads"):
        from_dict(Config, {"model": {"conditioning": "film", "condition_at": ["everywhere"]}})
    with pytest.raises(ConfigError, match="log-uniform"):
        from_dict(Config, {"model": {"conditioning": "film", "beta_law": "tilt"}})


def test_latent_site_on_a_network_without_blocks_is_refused_in_one_line():
    cfg = ModelConfig(conditioning="film", condition_at=["latent"], hidden=[])
    with pytest.raises(ConfigError, match="'latent' modulates the encoder's block") as info:
        build_vae(cfg, SHAPE)
    assert "\n" not in str(info.value)


# --- the switches: identity at initialisation, and where they reach ----------------------

SWITCHES = [
    dict(conditioning="film"),
    dict(conditioning="film", condition_at=["latent"]),
    dict(conditioning="film", condition_at=["heads"]),
    dict(conditioning="film", condition_at=["blocks", "heads"], condition_scale=0.5),
    dict(conditioning="film", condition_hidden=8),
    dict(conditioning="gate"),
    dict(conditioning="gate", gate_decoder="mr-vae"),
    dict(conditioning="gate", condition_at=["latent", "heads"], condition_hidden=8),
    dict(conditioning="gate", condition_scale=3.0, gate_decoder="mr-vae"),
]


def twins(network: str, switch: dict, hidden=(32, 16), sigma_mode="learned-shared"):
    """An unconditioned model and its conditioned twin with the same base weights."""
    base = dict(
        network=network, hidden=list(hidden), channels=[8, 16], latent_dim=4, sigma_mode=sigma_mode
    )
    torch.manual_seed(3)
    plain = build_vae(ModelConfig(**base), SHAPE)
    torch.manual_seed(3)
    conditioned = build_vae(ModelConfig(**base, **switch), SHAPE)
    return plain, conditioned


@pytest.mark.parametrize("network", ["mlp", "conv", "resnet"])
@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: "-".join(map(str, s.values())))
def test_every_switch_starts_as_the_unconditioned_forward(network, switch):
    plain, conditioned = twins(network, switch, sigma_mode="amortized")  # a σ_x head
    x = torch.rand(5, *SHAPE)
    conditioned.eval()
    for beta in (0.01, 0.7, 10.0):
        torch.manual_seed(0)
        a = plain(x, beta=beta)
        torch.manual_seed(0)
        b = conditioned(x, beta=beta)
        for name in ("loss", "distortion", "rate", "mse"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)
    conditioned.train()
    conditioned(x).loss.mean().backward()
    grads = [p.grad for n, p in conditioned.named_parameters() if "conditioner" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def modulated_widths(network) -> list[int]:
    """The widths (dimension 1) of the tensors the conditioner modulates in one forward."""
    widths = []
    original = network.conditioner.modulate

    def record(h, modulation):
        widths.append(h.shape[1])
        return original(h, modulation)

    network.conditioner.modulate = record
    return widths


@pytest.mark.parametrize(
    "sites, encoder, decoder",
    [
        (["blocks"], [32, 16], [16, 32]),
        (["latent"], [16], [16]),
        (["heads"], [8], [2]),  # 2·L posterior parameters; μ and log σ channels
        (["blocks", "heads"], [32, 16, 8], [16, 32, 2]),
        (["latent", "heads"], [16, 8], [16, 2]),
    ],
)
def test_condition_at_chooses_which_outputs_are_modulated(sites, encoder, decoder):
    _, model = twins("mlp", dict(conditioning="film", condition_at=sites), sigma_mode="amortized")
    seen = modulated_widths(model.encoder), modulated_widths(model.decoder)
    model.eval()
    model(torch.rand(3, *SHAPE), beta=0.5)
    assert seen == (encoder, decoder)
    assert sum(model.encoder.conditioner.features) == sum(encoder)


def block_outputs_differ(network, x, ell_a, ell_b) -> list[bool]:
    """For each Block of `network` and its head: whether its output changes between ℓ_a and
    ℓ_b (outputs taken before any modulation of them)."""
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.clone()))
             for m in [*(b for b in network.blocks if hasattr(b, "features")), network.head]]  # fmt: skip
    with torch.no_grad():
        network(x, ell_a)
        network(x, ell_b)
    for h in hooks:
        h.remove()
    half = len(outputs) // 2
    return [not torch.equal(a, b) for a, b in zip(outputs[:half], outputs[half:])]


@pytest.mark.parametrize(
    "sites, encoder, decoder",
    [
        (["blocks"], [False, True, True], [False, True, True]),
        (["latent"], [False, False, True], [False, True, True]),
        (["heads"], [False, False, False], [False, False, False]),
    ],
)
def test_a_trained_modulation_reaches_only_what_follows_its_sites(sites, encoder, decoder):
    _, model = twins("mlp", dict(conditioning="film", condition_at=sites))
    torch.manual_seed(5)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)  # no longer the identity
    a, b = torch.tensor([-0.8]), torch.tensor([0.9])
    x = torch.rand(4, *SHAPE)
    assert block_outputs_differ(model.encoder, x, a, b) == encoder
    z = torch.randn(4, 4)
    assert block_outputs_differ(model.decoder, z, a, b) == decoder
    # ... while with heads the results themselves do depend on β
    with torch.no_grad():
        assert not torch.equal(model.encoder(x, a), model.encoder(x, b))
        assert not torch.equal(model.decoder(z, a), model.decoder(z, b))


def test_film_scale_and_width_are_the_conditioners():
    film = FiLM([3, 2], hidden=7, scale=0.5)
    assert film.net[0].out_features == 7
    with torch.no_grad():
        film.net[-1].bias.copy_(torch.arange(10.0))  # s = 0..4, t = 5..9
    (scale_a, shift_a), (scale_b, shift_b) = film(torch.tensor([0.3]))
    torch.testing.assert_close(scale_a, 1 + 0.5 * torch.tensor([[0.0, 1, 2]]))
    torch.testing.assert_close(shift_b, 0.5 * torch.tensor([[8.0, 9]]))
    assert FiLM([3]).net[0].out_features == 32 and FiLM([3]).scale == 0.1  # today's defaults


def test_the_mr_vae_decoder_gate_is_the_papers_form_and_the_encoder_keeps_the_sigmoid():
    ell = torch.tensor([0.5])
    a = torch.tensor([-2.0, 0.0, 0.5, math.log(2), 1.0])
    decoder = Gate([5], side="decoder", decoder_form="mr-vae", scale=2.0)
    encoder = Gate([5], side="encoder", decoder_form="mr-vae", scale=2.0)
    for gate in (decoder, encoder):
        with torch.no_grad():
            gate.weight.copy_(a / 2 / 0.5)  # k·(w·ℓ + b) = a with k = 2, b = 0
    # √2·ReLU(1 − e^{a − log 2})^{1/2}, floored: a unit is off for a ≥ log 2
    expected = torch.sqrt(torch.clamp(2 * (1 - torch.exp(a - math.log(2))), min=1e-4))
    torch.testing.assert_close(decoder(ell)[0][0], expected)
    assert decoder(ell)[0][0, 3:].max() <= 0.0101 and decoder(ell)[0][0, 1] == 1
    torch.testing.assert_close(encoder(ell)[0][0], 2 * torch.sigmoid(a))
    decoder(ell)[0].sum().backward()
    assert torch.isfinite(decoder.weight.grad).all()
    assert Gate([2], hidden=4).net is not None and Gate([2]).net is None


# --- the step stays cheap: the conditioner runs once per batch ---------------------------


def conditioner_calls(model) -> list[tuple[str, tuple]]:
    calls = []
    for side in ("encoder", "decoder"):
        getattr(model, side).conditioner.register_forward_hook(
            lambda m, inputs, out, side=side: calls.append((side, tuple(inputs[0].shape)))
        )
    return calls


@pytest.mark.parametrize("samples", [1, 3])
def test_with_one_beta_per_minibatch_each_conditioner_runs_once_on_one_row(tmp_path, samples):
    cfg = ModelConfig(hidden=[32], latent_dim=4, conditioning="film", samples=samples)
    torch.manual_seed(0)
    model = build_vae(cfg, SHAPE)
    calls = conditioner_calls(model)
    from vaelab.data.base import TensorData

    trainer = Trainer(
        model, TensorData(torch.rand(64, *SHAPE)), TrainConfig(batch_size=32, progress=False,
        device="cpu"), tmp_path, {},
    )  # fmt: skip
    batches = trainer.train_data.batches(torch.arange(64).split(32))
    trainer._step(batches, [32], measure_grad=False)
    trainer._step(batches, [32], measure_grad=False)
    assert calls == [("encoder", (1,)), ("decoder", (1,))] * 2


def test_per_example_beta_with_several_samples_runs_the_decoders_conditioner_on_b_rows():
    cfg = ModelConfig(
        hidden=[32], latent_dim=4, conditioning="film", samples=3, beta_sampling="example",
        sigma_mode="learned-beta",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_vae(cfg, SHAPE)
    for p in model.decoder.conditioner.parameters():
        torch.nn.init.normal_(p)  # a modulation that differs per β
    calls = conditioner_calls(model)
    model(torch.rand(6, *SHAPE))
    assert calls == [("encoder", (6,)), ("decoder", (6,))]
    # the tiled modulations equal the decoder run on ℓ repeated for every code
    z, ell = torch.randn(3, 6, 4), torch.linspace(-1, 1, 6)
    with torch.no_grad():
        tiled = model.decode(z, ell)
        repeated = model.decoder(z.reshape(-1, 4), ell.repeat(3)).reshape(tiled.shape)
    torch.testing.assert_close(tiled, repeated)
    with pytest.raises(ValueError, match="do not end in the batch of 6"):
        model.decode(torch.randn(12, 4), ell)


# --- vaelab rd --against -----------------------------------------------------------------


def tiny(tmp_path, name, seed=0, **model) -> str:
    cfg = Config(
        data=DataConfig(name="digits", train_limit=200, test_limit=100),
        model=ModelConfig(hidden=[16], latent_dim=2, **model),
        train=TrainConfig(epochs=1, batch_size=50, progress=False, device="cpu", seed=seed),
    )
    train_run(cfg, tmp_path / name, report=False)
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("against")
    conditional = tiny(root, "conditional", conditioning="film", beta_range=[0.1, 1.0])
    for beta, seed in ((0.1, 0), (0.1, 1), (1.0, 0)):
        tiny(root, f"sweep/beta{beta:g}-seed{seed}", seed=seed, beta=beta)
    return root, conditional, str(root / "sweep")


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_rd_against_gives_each_beta_the_gap_to_the_sweeps_seeds(runs, capsys):
    root, conditional, sweep = runs
    assert main(["rd", conditional, "--against", sweep, "--betas", "0.1", "0.5", "1",
                 "--device", "cpu"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    from vaelab.runs import load_run

    model = load_run(conditional, device="cpu")
    sep = {}
    for name in ("beta0.1-seed0", "beta0.1-seed1", "beta1-seed0"):
        run = load_run(f"{sweep}/{name}", device="cpu")
        sep.setdefault(run.model.beta, []).append(evaluate(run.model, run.test_data)["loss"])
    table = {float(r["beta"]): r for r in rows(f"{conditional}/rd.csv")}
    gaps = {}
    for beta in (0.1, 1.0):
        c = evaluate(model.model, model.test_data, beta=beta)["loss"]
        gaps[beta] = [(c - s) / abs(s) for s in sep[beta]]
        r = table[beta]
        assert float(r["separate_loss"]) == pytest.approx(np.mean(sep[beta]), rel=1e-6)
        assert float(r["relative_gap"]) == pytest.approx(np.mean(gaps[beta]), rel=1e-6)
        assert int(r["separate_runs"]) == len(gaps[beta])
    # two seeds at β = 0.1: the Student-t interval with 1 degree of freedom
    half = stats.t.ppf(0.975, 1) * np.std(gaps[0.1], ddof=1) / math.sqrt(2)
    width = float(table[0.1]["gap_high"]) - float(table[0.1]["gap_low"])
    assert width == pytest.approx(2 * half, rel=1e-6) and width > 0
    assert table[1.0]["gap_low"] == "" and table[0.5]["separate_runs"] == "0"
    assert table[0.5]["relative_gap"] == ""
    md = open(f"{conditional}/rd.md").read()
    assert "gap to the sweep (95 % CI)" in md and "no sweep run at this β" in md
    assert "(2 runs)" in md and "(1 run)" in md
    assert out.count("gap ") == 3 and "no sweep run at this β" in out


def test_rd_against_defaults_to_the_sweeps_betas(runs):
    root, conditional, sweep = runs
    assert main(["rd", conditional, "--against", sweep, "--device", "cpu"]) == 0
    betas = sorted(float(r["beta"]) for r in rows(f"{conditional}/rd.csv"))
    assert betas == [0.1, 1.0]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "--against sweep directory '{x}' does not exist"),
        ("file", "--against sweep directory '{x}' is a file, not a directory"),
        ("empty", "--against: no readable separately trained (unconditional) run"),
        ("conditional-only", "--against: no readable separately trained (unconditional) run"),
        ("unconditional-run", "--against: no β-conditional run in or below"),
    ],
)
def test_rd_against_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, case, message):
    root, conditional, sweep = runs
    run, against = conditional, str(tmp_path / "nothing")
    if case == "file":
        (tmp_path / "f.txt").write_text("x")
        against = str(tmp_path / "f.txt")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        against = str(tmp_path / "empty")
    elif case == "conditional-only":
        against = conditional
    elif case == "unconditional-run":
        run, against = f"{sweep}/beta1-seed0", sweep
    assert main(["rd", run, "--against", against, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(x=against) in err
