"""`fit`: the trainer for anything that is not a whole run — a second stage, a harmonium, a
feature classifier, a recipe's sub-model. Each fit is a run directory of its own, so it has
progress, seeding, the NaN guard, exact resume and a metrics log like every run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ..config import TrainConfig
from .trainer import Trainer, TrainState


def fit(
    model: nn.Module,
    data,
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    description: dict[str, Any] | None = None,
) -> TrainState:
    """Train `model` (forward(batch) → terms with `.loss` [B] and `.sums()`) on `data` in
    `run_dir`, resuming what is there. `description` (JSON-able) is stored as the run's
    config beside the training settings; a run directory holding another description is
    refused, like a run with another config."""
    run_config = {"train": dataclasses.asdict(cfg), "fit": description or {}}
    return Trainer(model, data, cfg, run_dir, run_config, evaluate=evaluate).fit()
