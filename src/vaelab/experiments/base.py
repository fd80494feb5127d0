"""Named, configurable experiments (`vaelab run NAME`), each writing a run directory; their
settings are in `settings`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
