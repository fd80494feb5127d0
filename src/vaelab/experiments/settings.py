"""Every recipe's settings (`vaelab run NAME`): typed dataclasses that import nothing heavier
than `config` and `registry`, so that a recipe's config — its file and `--set` overrides — is
checked for keys, types, ranges and names before torch or the recipe is imported
(`RECIPE_SETTINGS`, what `vaelab run` checks first). Checks that ask registered objects for
their capabilities (which σ modes a regime takes, which estimators are for binary codes) run
in `__post_init__` and import what they need there. Each recipe module registers its class
with `experiment(name, ConfigClass, …)`; `tests/test_contracts.py` keeps the two equal.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, fields
from typing import Any

from ..config import BETA_SAMPLINGS, SweepOptions, TrainConfig, at_least, one_of
from ..errors import ConfigError
from ..registry import CONDITIONING, DATASETS, ESTIMATORS, NETWORKS, SIGMA_MODES

VOTE_METRICS = ("beta_vae", "factor_vae")  # disentanglement metrics sized by vote_metric_scale

# --- what every recipe of VAE runs shares ----------------------------------------------------


@dataclass
class RecipeConfig:
    """The architecture and training budget of a recipe's VAE runs (one for all of them, so
    they compare like for like), the settings of its β-conditional runs, the seeds every run is trained with and where the runs go
    (`sweep`: the grid runner's options; Ray when installed). Defaults are those of
    `ModelConfig`/`TrainConfig`; a recipe extends this class and re-declares the fields whose
    defaults it changes."""

    network: str = one_of(NETWORKS, default="mlp")
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # MLP widths
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv: per stride-2 layer
    latent_dim: int = at_least(1, default=16)
    conditioning: str = one_of(CONDITIONING, default="film")  # of β-conditional runs
    beta_range: list[float] = field(default_factory=lambda: [0.01, 10.0])
    beta_sampling: str = one_of(BETA_SAMPLINGS, default="minibatch")
    epochs: int = at_least(1, default=10)
    batch_size: int = at_least(1, default=128)
    lr: float = at_least(0.0, strict=True, default=1e-3)
    seeds: list[int] = field(default_factory=lambda: [0])  # one run per seed of every setting
    device: str = "auto"  # of the recipe's analyses; its runs go where `sweep` places them
    progress: bool = True
    sweep: SweepOptions = field(default_factory=SweepOptions)

    def __post_init__(self):
        check_seeds(self.seeds)

    def architecture(self) -> dict[str, Any]:
        """The `ModelConfig` fields of the networks."""
        return {
            "network": self.network,
            "hidden": list(self.hidden),
            "channels": list(self.channels),
            "latent_dim": self.latent_dim,
        }

    def conditioning_fields(self) -> dict[str, Any]:
        """The `ModelConfig` fields of a β-conditional run."""
        return {
            "conditioning": self.conditioning,
            "beta_range": list(self.beta_range),
            "beta_sampling": self.beta_sampling,
        }

    def training(self, **overrides: Any) -> TrainConfig:
        return recipe_training(self, **overrides)


def check_seeds(seeds: list[int]) -> None:
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(
            f"seeds: need distinct non-negative integers, e.g. [0, 1, 2]; got {seeds}"
        )


def recipe_training(cfg: Any, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a recipe's runs: its epochs, batch size, learning rate, seed, device
    and progress setting, a test evaluation only at the end, and sparse logs and checkpoints
    (`overrides` win)."""
    fields = ("epochs", "batch_size", "lr", "seed", "device", "progress")
    settings = {k: getattr(cfg, k) for k in fields if hasattr(cfg, k)}
    settings |= {"log_every": 100, "checkpoint_every": 2000} | overrides
    return TrainConfig(**({"eval_every": settings["epochs"]} | settings))


# --- recipes comparing regimes by sample quality: demo, rd-study, disentanglement ---------


@dataclass
class StudyConfig(RecipeConfig):
    """A recipe comparing regimes by sample quality too: the shared architecture, budget and
    β-conditional settings (`RecipeConfig`) and the sample-quality settings."""

    fid_samples: int = at_least(2, default=2000)
    fid_bootstrap: int = at_least(0, default=20)  # resamplings for the FID's standard error
    kid_subsets: int = at_least(1, default=100)
    inception_weights: str | None = None  # pytorch-fid weights file; else a dataset classifier
    # FID also of two-stage samples (Dai & Wipf 2019): a second VAE per run fitted to its
    # aggregated posterior (one β-conditional second stage for a β-conditional run); 0 = off
    second_stage_steps: int = at_least(0, default=2000)
    second_stage_hidden: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class DemoConfig(RecipeConfig):
    latent_dim: int = at_least(1, default=8)
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    epochs: int = at_least(1, default=100)
    batch_size: int = at_least(1, default=64)
    betas: list[float] = field(default_factory=lambda: [0.1, 0.3, 1.0, 3.0])
    beta_range: list[float] = field(default_factory=lambda: [0.1, 3.0])
    sweep_sigma_mode: str = one_of(SIGMA_MODES, default="learned-shared")  # decoupled sweep
    conditional_sigma_mode: str = one_of(SIGMA_MODES, default="learned-beta")  # the one run
    rd_points: int = at_least(2, default=9)  # β grid of the conditional curve
    dataset: str = "digits"

    def __post_init__(self):
        super().__post_init__()
        from ..evaluation.rate_distortion import DECOUPLED_CONDITIONAL, DECOUPLED_SWEEP

        DECOUPLED_SWEEP.check_sigma_mode(self.sweep_sigma_mode, "sweep_sigma_mode")
        DECOUPLED_CONDITIONAL.check_sigma_mode(
            self.conditional_sigma_mode, "conditional_sigma_mode"
        )


@dataclass
class RDStudyConfig(StudyConfig):
    dataset: str = one_of(DATASETS, default="fashion-mnist")
    data_path: str | None = None  # else the data set's environment variable
    train_limit: int | None = at_least(1, default=None)
    test_limit: int | None = at_least(1, default=None)
    sweep_betas: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    # σ_x of the decoupled regimes: analytic optima by default (no lag behind the decoder at
    # CPU budgets); "learned-shared" / "learned-beta" learn it instead
    decoupled_sigma_mode: str = one_of(SIGMA_MODES, default="optimal-shared")  # regime (ii)
    conditional_sigma_mode: str = one_of(SIGMA_MODES, default="optimal-shared")  # regime (iv)
    rd_points: int = at_least(2, default=9)  # β grid of the conditional curves
    posterior_channels: int = at_least(1, default=4)

    def __post_init__(self):
        super().__post_init__()
        if any(b <= 0 for b in self.sweep_betas) or not self.sweep_betas:
            raise ConfigError(f"sweep_betas: need positive values, got {self.sweep_betas}")
        from ..evaluation.rate_distortion import DECOUPLED_CONDITIONAL, DECOUPLED_SWEEP

        DECOUPLED_SWEEP.check_sigma_mode(self.decoupled_sigma_mode, "decoupled_sigma_mode")
        DECOUPLED_CONDITIONAL.check_sigma_mode(
            self.conditional_sigma_mode, "conditional_sigma_mode"
        )


@dataclass
class MeasurementSettings:
    """How every model is measured (the recipe's settings; each evaluation cell's too)."""

    # × disentanglement_lib's sample sizes: MIG, SAP (1.0: 10,000 / 5,000 points), DCI (the
    # same; its 11,300 boosted trees take ~6 of a model's ~8 CPU minutes) …
    metric_scale: float = at_least(0.0, strict=True, default=1.0)
    dci_scale: float = at_least(0.0, strict=True, default=1.0)
    # … and BetaVAE, FactorVAE (1.0: 1.92 M / 0.97 M encoded images per model and β)
    vote_metric_scale: float = at_least(0.0, strict=True, default=0.1)
    # the two bounds on the MI: n images of all of dSprites; for `kl_neighbourhoods` of them,
    # the images within `kl_radius` factor steps are encoded too (≈ 190 each at radius 1)
    kl_examples: int = at_least(10, default=10_000)
    kl_neighbourhoods: int = at_least(2, default=500)
    kl_radius: int = at_least(1, default=1)

    def metric_scales(self) -> dict[str, float]:
        """The per-metric scales of `disentanglement_metrics` (the others: metric_scale)."""
        return dict.fromkeys(VOTE_METRICS, self.vote_metric_scale) | {"dci": self.dci_scale}

    def measurement(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(MeasurementSettings)}


@dataclass
class DisentanglementConfig(MeasurementSettings, StudyConfig):
    network: str = one_of(NETWORKS, default="conv")
    hidden: list[int] = field(default_factory=lambda: [256])  # between convolutions and code
    # 64 → 32 → 16 → 8 → 4 px; half the widths of Higgins et al.'s (32, 32, 64, 64), which
    # cost about twice the CPU time per step
    channels: list[int] = field(default_factory=lambda: [16, 32, 32, 64])
    latent_dim: int = at_least(1, default=10)
    epochs: int = at_least(1, default=5)
    beta_range: list[float] = field(default_factory=lambda: [0.25, 16.0])
    beta_sampling: str = one_of(BETA_SAMPLINGS, default="example")
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fid_samples: int = at_least(2, default=1000)
    train_limit: int = at_least(1, default=20_000)
    test_limit: int = at_least(1, default=2_000)
    betas: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0, 16.0])
    # the KL decomposition over `kl_images` dSprites images (0: all 737,280) with its exact
    # aggregate posterior, from `kl_draws` of them
    kl_images: int = at_least(0, default=0)
    kl_draws: int = at_least(2, default=500)
    # σ_x of the decoupled β-conditional run; with β per example, a σ per example
    decoupled_sigma_mode: str = one_of(SIGMA_MODES, default="optimal-image")
    slice_gammas: list[float] = field(default_factory=lambda: [1e-1, 1e-2, 1e-3, 1e-4])
    slice_images: int = at_least(1, default=256)  # test images the loss slices average over

    def __post_init__(self):
        super().__post_init__()
        from ..evaluation.rate_distortion import DECOUPLED_CONDITIONAL

        DECOUPLED_CONDITIONAL.check_sigma_mode(self.decoupled_sigma_mode, "decoupled_sigma_mode")


@dataclass
class EvaluationConfig(MeasurementSettings):
    """One evaluation cell of the grid runner (`EVALUATE`): the trained run in `run` measured
    at `betas` (none: at its own β), or with `untrained` its architecture at its initial
    weights (the chance level; metrics only). `trained`: the digest of the run's training
    cell, so a retrained run is measured again."""

    run: str = ""
    trained: str = ""
    betas: list[float] = field(default_factory=list)
    untrained: bool = False
    seed: int = 0
    device: str = "cpu"


@dataclass
class KLDecompositionConfig:
    """One KL-decomposition cell of the grid runner (`KL_DECOMPOSE`): the trained run in `run`
    at `betas` (none: at its own β) on `images` dSprites images (0: all), `draws` of them.
    `trained`: the digest of the run's training cell."""

    run: str = ""
    trained: str = ""
    betas: list[float] = field(default_factory=list)
    images: int = at_least(0, default=0)
    draws: int = at_least(2, default=500)
    seed: int = 0
    device: str = "cpu"


# --- gmm-toy ----------------------------------------------------------------------------------


@dataclass
class GMMToySettings:
    """What a seed's run is made of: the truth, the fits and the figure."""

    centres: list[list[float]] = field(
        default_factory=lambda: [[1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 0.0]]
    )  # μ_z for the codes 00, 01, 10, 11 (state index 2·z1 + z2)
    sigma: float = at_least(0.0, strict=True, default=1.0)
    samples: int = at_least(4, default=2000)
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    pretrain_steps: int = at_least(1, default=3000)
    joint_steps: int = at_least(1, default=3000)
    lr: float = at_least(0.0, strict=True, default=3e-3)
    rbm_steps: int = at_least(1, default=1000)  # per start
    rbm_lr: float = at_least(0.0, strict=True, default=3e-2)
    grid: int = at_least(10, default=200)  # resolution of the decision maps

    def __post_init__(self):
        if len(self.centres) != 4 or any(len(c) != 2 for c in self.centres):
            raise ConfigError(
                f"centres: need 4 points in 2-D (one per 2-bit code), got {self.centres}"
            )


@dataclass
class GMMToySeedConfig(GMMToySettings):
    """One seed's run: a cell of the grid runner (`TARGET`), which sets `device` and
    `progress`."""

    seed: int = 0
    device: str = "cpu"
    progress: bool = True


@dataclass
class GMMToyConfig(GMMToySettings):
    """The recipe: a run of every seed of `seeds`, as cells of the grid runner (`sweep`)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    sweep: SweepOptions = field(default_factory=SweepOptions)

    def __post_init__(self):
        super().__post_init__()
        check_seeds(self.seeds)

    def seed_config(self, seed: int) -> GMMToySeedConfig:
        settings = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(GMMToySettings)}
        return GMMToySeedConfig(**settings, seed=seed)


# --- groundtruth ------------------------------------------------------------------------------


@dataclass
class GroundTruthSettings:
    """What a seed's run is made of: the truth, the fits and the measurements."""

    dataset: str = one_of(DATASETS, default="fashion-mnist")
    data_path: str | None = None
    train_limit: int | None = at_least(1, default=None)  # GAN training images (quick runs)
    latent_dim: int = at_least(1, default=16)
    sigma: float = at_least(0.0, strict=True, default=0.1)  # the truth's pixel noise
    gan_epochs: int = at_least(1, default=5)
    gan_lr: float = at_least(0.0, strict=True, default=2e-4)
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64])
    encoder_hidden: list[int] = field(default_factory=lambda: [256])
    pretrain_steps: int = at_least(0, default=3000)
    joint_steps: int = at_least(0, default=3000)
    batch_size: int = at_least(1, default=128)
    lr: float = at_least(0.0, strict=True, default=3e-4)
    eval_samples: int = at_least(2, default=1000)  # held-out ground-truth samples
    iwae_k: int = at_least(1, default=1000)
    # AIS (HMC) on the first `ais_examples` held-out samples, the same for every decoder:
    # IWAE is looser for a decoder with a harder posterior (the truth), so the likelihood
    # comparison rests on AIS; BDMC on `bdmc_examples` samples simulated from each decoder,
    # with the same AIS, bounds its error (0: not run, and the verdict is inconclusive).
    # Defaults: on a full-size run (Fashion-MNIST, 16 latents, σ = 0.1) BDMC gaps were
    # ≈ 65 / 14 / 3.5 nats at 300 / 1000 / 3000 steps with 4 chains, against an effect of
    # ≈ 10 nats; cost ∝ (ais_examples + 2·bdmc_examples) · chains · leapfrog · steps per decoder
    ais_examples: int = at_least(0, default=100)
    ais_steps: int = at_least(1, default=3000)
    ais_chains: int = at_least(1, default=4)
    ais_leapfrog: int = at_least(1, default=5)
    ais_step_size: float = at_least(0.0, strict=True, default=0.01)  # initial; adapted
    bdmc_examples: int = at_least(0, default=20)
    fid_samples: int = at_least(2, default=5000)
    fid_bootstrap: int = at_least(0, default=20)  # resamplings for the FID's SE (< 2: none)
    kid_subsets: int = at_least(1, default=100)
    inception_weights: str | None = None

    def __post_init__(self):
        if self.ais_examples > self.eval_samples:
            raise ConfigError(
                f"ais_examples = {self.ais_examples} > eval_samples = {self.eval_samples}: AIS "
                "runs on the first held-out samples; raise eval_samples"
            )
        for name in ("ais_examples", "bdmc_examples"):
            if getattr(self, name) == 1:
                raise ConfigError(f"{name}: 0 (not run) or ≥ 2 (for a standard error), got 1")


@dataclass
class GroundTruthSeedConfig(GroundTruthSettings):
    """One seed's run: a cell of the grid runner (`TARGET`), which sets `device` and
    `progress`."""

    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class GroundTruthConfig(GroundTruthSettings):
    """The recipe: a run of every seed of `seeds`, as cells of the grid runner (`sweep`). No
    `device` or `progress`: the runner places every cell (CPU with `sweep.cpus_per_run`
    threads; CUDA with `sweep.gpus_per_run` > 0) and reports a line per finished cell."""

    seeds: list[int] = field(default_factory=lambda: [0])
    sweep: SweepOptions = field(default_factory=SweepOptions)

    def __post_init__(self):
        super().__post_init__()
        check_seeds(self.seeds)

    def seed_config(self, seed: int) -> GroundTruthSeedConfig:
        settings = {
            f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(GroundTruthSettings)
        }
        return GroundTruthSeedConfig(**settings, seed=seed)


# --- semhash, semhash-table ---------------------------------------------------------------

SCHEDULES = {"paper": (1000, 500), "short": (20, 2)}  # epochs with 1 sample, then with 10
# which test NELBO a cell reports: after the last epoch, or the lowest of the per-epoch test
# estimates (the paper's and its reproduction's rule: it looks at the test set, and a minimum
# of noisy estimates is biased low)
SELECTIONS = ("final", "lowest")
# preprocessing → data set (`data.bow`'s presets)
DATASETS_BY_PREPROCESSING = {"vaelab": "20newsgroups", "rainbow": "20newsgroups-rainbow"}
ENCODERS = ("e1", "e2", "e3")


def check_discrete_estimator(name: str) -> None:
    """The codes are bits: refuse an estimator that is not for discrete latents (asks the
    registered estimators, so it fills that registry)."""
    if not ESTIMATORS.get(name).discrete:
        usable = ", ".join(n for n in ESTIMATORS if ESTIMATORS.get(n).discrete)
        raise ConfigError(
            f"estimator: {name!r} is not an estimator for binary codes; use one of: {usable}"
        )


@dataclass
class SemhashSettings:
    """What the VAEs of a semantic-hashing recipe share: the corpus, the estimator, the
    two-phase schedule and the optimiser."""

    data_path: str | None = None  # 20news-bydate.tar.gz or a load_files folder; else $VAELAB_20NEWS
    vocab_size: int = at_least(1, default=10_000)
    estimator: str = one_of(ESTIMATORS, default="disarm")  # one for discrete codes
    schedule: str = one_of(tuple(SCHEDULES), default="short")
    epochs_single: int | None = at_least(0, default=None)  # overrides the schedule's phase 1
    epochs_multi: int | None = at_least(0, default=None)  # … and phase 2
    samples_multi: int = at_least(2, default=10)
    batch_size: int = at_least(1, default=100)
    lr: float = at_least(0.0, strict=True, default=1e-3)
    train_limit: int | None = at_least(1, default=None)
    test_limit: int | None = at_least(1, default=None)
    selection: str = one_of(SELECTIONS, default="final")  # "lowest": test set every epoch
    preprocessing: str = one_of(tuple(DATASETS_BY_PREPROCESSING), default="vaelab")
    strip_headers: bool | str = "auto"  # "auto" | true | false, as data.strip_headers
    count_smoothing: bool = False  # the reproduction's pseudo-word per document

    def __post_init__(self):
        check_discrete_estimator(self.estimator)
        if isinstance(self.strip_headers, str) and self.strip_headers != "auto":
            raise ConfigError(f'strip_headers: "auto", true or false, got {self.strip_headers!r}')
        if self.total_epochs == 0:
            raise ConfigError("epochs_single + epochs_multi: need at least one epoch")

    @property
    def word_counts(self) -> dict:
        """The runs' `runs.WORD_COUNTS` settings ({} without count smoothing, so runs
        started before the option resume)."""
        return {"count_smoothing": True} if self.count_smoothing else {}

    def data_label(self) -> str:
        """The data settings in words, for reports."""
        smoothing = (
            "count smoothing (the reproduction's)" if self.count_smoothing else "no count smoothing"
        )
        return (
            f"preprocessing {self.preprocessing!r}, strip_headers = "
            f"{json.dumps(self.strip_headers)}, {smoothing}"
        )

    @property
    def phases(self) -> list[tuple[int, int]]:
        """(epochs, samples) of each phase."""
        single, multi = SCHEDULES[self.schedule]
        single = single if self.epochs_single is None else self.epochs_single
        multi = multi if self.epochs_multi is None else self.epochs_multi
        return [(single, 1), (multi, self.samples_multi)]

    @property
    def total_epochs(self) -> int:
        """Epochs over both phases."""
        return sum(epochs for epochs, _ in self.phases)


@dataclass
class SemhashConfig(SemhashSettings):
    """One semantic-hashing VAE: the shared settings, its encoder, code length and decoder."""

    encoder: str = one_of(ENCODERS, default="e1")
    bits: int = at_least(1, default=64)
    decoder_depth: int = at_least(0, default=0)
    decoder_width: int = at_least(1, default=512)
    seed: int = 0
    device: str = "auto"
    threads: int | None = at_least(1, default=None)  # torch threads (None: torch's default)
    progress: bool = True


@dataclass
class SemhashTableConfig(SemhashSettings):
    """Table 2: a `SemhashConfig` per encoder × bits × decoder depth × seed, each a cell of
    the grid runner (`sweep`: its options; Ray when installed)."""

    encoders: list[str] = one_of(ENCODERS, default_factory=lambda: list(ENCODERS))
    bits: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    depths: list[int] = field(default_factory=lambda: [0, 1, 2])
    seeds: list[int] = field(default_factory=lambda: [0])  # one run per seed of every cell
    sweep: SweepOptions = field(default_factory=SweepOptions)

    def __post_init__(self):
        super().__post_init__()
        if any(b < 1 for b in self.bits) or any(d < 0 for d in self.depths):
            raise ConfigError("bits must be ≥ 1 and depths ≥ 0")
        check_seeds(self.seeds)


# --- name → settings ---------------------------------------------------------------------------

RECIPE_SETTINGS: dict[str, type] = {
    "demo": DemoConfig,
    "rd-study": RDStudyConfig,
    "disentanglement": DisentanglementConfig,
    "gmm-toy": GMMToyConfig,
    "groundtruth": GroundTruthConfig,
    "semhash": SemhashConfig,
    "semhash-table": SemhashTableConfig,
}
