"""Named, configurable experiments (`vaelab run NAME`), each writing a run directory, and the
settings every recipe of VAE runs shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, at_least, one_of
from ..distributions.log_uniform import PER_EXAMPLE
from ..errors import ConfigError
from ..registry import CONDITIONING, EXPERIMENTS, NETWORKS
from ..sweeps import SweepOptions


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type  # typed dataclass of the experiment's settings
    run: Callable[[Any, Path], dict[str, Any]]  # (config, run_dir) → results
    summary: str


def experiment(name: str, config_cls: type, summary: str):
    """Register `run(config, run_dir)` as experiment `name` with settings `config_cls`."""

    def add(run):
        EXPERIMENTS.register(name)(Experiment(name, config_cls, run, summary))
        return run

    return add


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
    beta_sampling: str = one_of(tuple(PER_EXAMPLE), default="minibatch")
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
