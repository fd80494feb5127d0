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
        "--set", "seeds=[0,1]", "--set", "fid_bootstrap=3", "--set", "kid_subsets=5",
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
    # the evidence: protocol, FID per regime and β over seeds, computed verdicts
    assert fid["seeds"] == [0, 1] and fid["fid_protocol"]["n_generated"] == 100
    assert len(fid["fid_protocol"]["weights_sha256"]) == 64
    assert {"matches_separate", "best_fid_beats_classic", "posteriors_aligned"} <= set(
        fid["verdicts"]
    )
    assert set(fid["verdicts"].values()) <= {"reproduced", "contradicted", "inconclusive"}
    cell = next(
        s for s in fid["summary"] if s["regime"] == "(i) classic β-VAE" and s["sampler"] == "prior"
    )
    assert cell["n"] == 2 and cell["se"] is not None
    results = json.loads((study / "results.json").read_text())
    assert len(results["monotonicity"]) == 2 * 4  # 4 models per seed
    assert "## Verdicts" in report and (study / "rd_summary.png").stat().st_size > 0


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
    from vaelab.experiments.demo import DemoConfig
    from vaelab.experiments.disentanglement_study import DisentanglementConfig
    from vaelab.experiments.rd_study import RDStudyConfig
    from vaelab.experiments.settings import RecipeConfig

    for cls in (DemoConfig, DisentanglementConfig, RDStudyConfig):
        assert issubclass(cls, RecipeConfig)
    # defaults as before the shared config
    assert RDStudyConfig().architecture() == dict(
        network="mlp", hidden=[512, 256], channels=[32, 64], latent_dim=16
    )
    assert (DemoConfig().epochs, DemoConfig().batch_size, DemoConfig().latent_dim) == (100, 64, 8)
    assert DisentanglementConfig().training().epochs == 5


def test_wasserstein_of_shifted_gaussians_and_alignment_up_to_sign():
    import torch

    from vaelab.evaluation.aggregate_posterior import alignment_across_beta, wasserstein_1d

    grid = torch.linspace(-8, 8, 4001)

    def normal(mu, s=1.0):
        return torch.exp(-0.5 * ((grid - mu) / s) ** 2)

    # W₁(N(0, 1), N(1, 1)) = |Δμ| = 1; W₁(N(0, 1), N(0, 2²)) = E|Z|·(2 − 1) = √(2/π)
    assert abs(float(wasserstein_1d(normal(0.0), normal(1.0), grid)) - 1.0) < 1e-3
    assert (
        abs(float(wasserstein_1d(normal(0.0), normal(0.0, 2.0), grid)) - (2 / torch.pi) ** 0.5)
        < 1e-3
    )
    mirrored = {0.1: normal(1.5)[None], 1.0: normal(-1.5)[None]}
    assert abs(alignment_across_beta(mirrored, grid) - 3.0) < 1e-3
    assert alignment_across_beta(mirrored, grid, up_to_sign=True) < 1e-3


def test_monotonicity_and_matching_are_computed_from_the_points():
    from vaelab.experiments.rd_study import OURS, matches_separate, monotonicity

    sweep = "(ii) decoupled β-VAE"
    points = [
        {
            "regime": sweep,
            "model": "s/seed0",
            "seed": 0,
            "beta": 0.1,
            "rate": 9.0,
            "distortion": 1.0,
            "loss": 100.0,
        },
        {
            "regime": sweep,
            "model": "s/seed0",
            "seed": 0,
            "beta": 1.0,
            "rate": 5.0,
            "distortion": 0.5,
            "loss": 200.0,
        },
        {
            "regime": OURS,
            "model": "c/seed0",
            "seed": 0,
            "beta": 0.1,
            "rate": 8.0,
            "distortion": 1.2,
            "loss": 100.5,
        },
        {
            "regime": OURS,
            "model": "c/seed0",
            "seed": 0,
            "beta": 1.0,
            "rate": 4.0,
            "distortion": 2.0,
            "loss": 210.0,
        },
    ]
    rows = {r["model"]: r for r in monotonicity(points)}
    assert rows["c/seed0"]["monotone"]
    assert not rows["s/seed0"]["monotone"] and rows["s/seed0"]["violations"] == [
        "D falls 0.1→1 by 0.5"
    ]
    # two more seeds: at β = 0.1 the gap is 0.5, 0.4, 0.6 < 1 % of 100 → reproduced;
    # at β = 1 it is 10, 9, 11 > 1 % of 200 = 2 → contradicted
    for seed, (g1, g2) in ((1, (0.4, 9.0)), (2, (0.6, 11.0))):
        points += [
            {"regime": sweep, "seed": seed, "beta": 0.1, "loss": 100.0},
            {"regime": sweep, "seed": seed, "beta": 1.0, "loss": 200.0},
            {"regime": OURS, "seed": seed, "beta": 0.1, "loss": 100.0 + g1},
            {"regime": OURS, "seed": seed, "beta": 1.0, "loss": 200.0 + g2},
        ]
    low, high = matches_separate(points, [0.1, 1.0])
    assert low["verdict"] == "reproduced" and abs(low["gap"]["mean"] - 0.5) < 1e-9
    assert high["verdict"] == "contradicted" and abs(high["gap"]["mean"] - 10.0) < 1e-9
