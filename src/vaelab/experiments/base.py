"""Named, configurable experiments (`vaelab run NAME`), each writing a run directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..registry import EXPERIMENTS


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


def recipe_training(cfg: Any, **overrides: Any) -> TrainConfig:
    """The TrainConfig of a recipe's runs: its epochs, batch size, learning rate, seed, device
    and progress setting (`overrides` win), a test evaluation only at the end, and sparse
    logs and checkpoints."""
    fields = ("epochs", "batch_size", "lr", "seed", "device", "progress")
    settings = {k: getattr(cfg, k) for k in fields if hasattr(cfg, k)}
    settings |= {"log_every": 100, "checkpoint_every": 2000} | overrides
    return TrainConfig(**settings, eval_every=settings["epochs"])
