"""`vaelab rd` and the rd-study recipe, end to end at toy scale on 8×8 digits."""

import csv
import json

import pytest
from scipy import stats

from vaelab.cli import main
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.runs import train_run


def tiny(conditioning=None, beta=1.0):
    return Config(
        data=DataConfig(name="digits", train_limit=400, test_limit=100),
        model=ModelConfig(latent_dim=4, hidden=[32], conditioning=conditioning, beta=beta),
        train=TrainConfig(epochs=2, batch_size=50, progress=False, device="cpu"),
    )


def test_rd_evaluates_conditional_runs_on_the_grid_and_sweeps_at_their_beta(tmp_path):
    train_run(tiny(beta=0.5), tmp_path / "sweep" / "b0.5", report=False)
    train_run(tiny(conditioning="gate"), tmp_path / "conditional", report=False)
    assert main(["rd", str(tmp_path), "--betas", "0.1", "1", "3", "--device", "cpu"]) == 0
    rows = list(csv.DictReader((tmp_path / "rd.csv").open()))
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(float(row["beta"]))
    assert by_run == {"conditional": [0.1, 1.0, 3.0], "sweep/b0.5": [0.5]}
    assert {r["regime"] for r in rows} == {"(ii) decoupled β-VAE", "(iv) decoupled β-conditional"}
    assert (tmp_path / "rd.png").stat().st_size > 0 and "## (iv)" in (
        tmp_path / "rd.md"
    ).read_text()


def test_rd_study_recipe_trains_every_seed_and_reports_intervals(tmp_path):
    args = [
        "run", "rd-study", "--run-dir", str(tmp_path / "study"),
        "--set", "dataset=digits", "--set", "latent_dim=4", "--set", "hidden=[32]",
        "--set", "epochs=2", "--set", "sweep_betas=[0.1,1]", "--set", "rd_points=3",
        "--set", "fid_samples=100", "--set", "progress=false", "--set", "device=cpu",
        "--set", "posterior_channels=2", "--set", "second_stage_steps=20",
        "--set", "seeds=[0,1]",
    ]  # fmt: skip
    assert main(args) == 0
    study = tmp_path / "study"
    report = (study / "report.md").read_text()
    for needle in (
        "classic β-VAE",
        "decoupled β-conditional (ours)",
        "best over β",
        "classifier(digits",
        "With the two-stage sampler",
    ):
        assert needle in report, needle
    for name in ("rd.png", "rd.csv", "fid.json", "aggregate_posteriors.png", "samples_iv.png"):
        assert (study / name).exists(), name
    regimes = {row["regime"] for row in csv.DictReader((study / "rd.csv").open())}
    assert len(regimes) == 4
    fid = json.loads((study / "fid.json").read_text())
    # every regime at every sweep β, from the prior and from the second stage
    assert {(r["regime"], r["sampler"]) for r in fid["rows"]} == {
        (regime, sampler) for regime in regimes for sampler in ("prior", "two-stage")
    }
    assert len(fid["rows"]) == 2 * 2 * (2 + 2 + 2 + 2)  # × 2 seeds
    assert {r["seed"] for r in fid["rows"]} == {0, 1}
    # a FID cell is the mean over the seeds ± the half-width of the 95 % t interval
    ours = [
        r["fid"] for r in fid["rows"]
        if r["regime"] == "(iv) decoupled β-conditional" and r["beta"] == 0.1 and r["sampler"] == "prior"
    ]  # fmt: skip
    half = stats.t.ppf(0.975, 1) * stats.sem(ours)
    assert f"{sum(ours) / 2:.4g} ± {half:.2g}" in report
    # the runs: every regime × setting × seed a cell of the grid runner, with its table
    table = json.loads((study / "sweep_table.json").read_text())
    assert len(table["cells"]) == (2 + 2 + 1 + 1) * 2
    assert all(len(row["seeds"]) == 2 for row in table["summary"])


def test_the_regimes_are_read_from_the_sigma_modes_flags():
    from vaelab.evaluation.rate_distortion import REGIMES, regime_of

    classic, decoupled, classic_conditional, decoupled_conditional = REGIMES
    assert regime_of(ModelConfig(**classic.overrides())) == classic.label
    for sigma_mode in ("learned-shared", "optimal-image", "amortized"):
        assert regime_of(ModelConfig(**decoupled.overrides(sigma_mode))) == decoupled.label
    conditional = dict(conditioning="film")
    assert regime_of(ModelConfig(**classic_conditional.overrides(), **conditional)) == (
        classic_conditional.label
    )
    learned_beta = decoupled_conditional.overrides("learned-beta")
    assert regime_of(ModelConfig(**learned_beta, **conditional)) == decoupled_conditional.label


@pytest.mark.parametrize(
    "key, sigma_mode, expected",
    [
        ("decoupled_sigma_mode", "fixed", "σ_x estimated"),
        ("decoupled_sigma_mode", "learned-beta", "function of β"),
        ("conditional_sigma_mode", "fixed", "σ_x estimated"),
    ],
)
def test_a_sigma_mode_that_does_not_make_its_regime_is_refused(key, sigma_mode, expected):
    from vaelab.experiments.rd_study import RDStudyConfig

    with pytest.raises(ConfigError, match=expected) as error:
        RDStudyConfig(**{key: sigma_mode})
    assert str(error.value).startswith(key)


def test_the_recipes_share_the_architecture_and_budget_fields():
    from vaelab.experiments.base import RecipeConfig
    from vaelab.experiments.demo import DemoConfig
    from vaelab.experiments.disentanglement_study import DisentanglementConfig
    from vaelab.experiments.rd_study import RDStudyConfig

    for cls in (DemoConfig, DisentanglementConfig, RDStudyConfig):
        assert issubclass(cls, RecipeConfig)
    # defaults as before the shared config
    assert RDStudyConfig().architecture() == dict(
        network="mlp", hidden=[512, 256], channels=[32, 64], latent_dim=16
    )
    assert (DemoConfig().epochs, DemoConfig().batch_size, DemoConfig().latent_dim) == (100, 64, 8)
    assert DisentanglementConfig().training().epochs == 5
