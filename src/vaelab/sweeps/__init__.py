"""Sweeps: one grid runner for every study (`vaelab sweep`, `vaelab sweep-report`, and the
recipes that train several models). A sweep is a list of cells run by a target
(`cells.Target`: for `vaelab sweep` the ordinary training run) on Ray or in this process
(`execute`), summarised over seeds with 95 % intervals (`table`)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from ..config import Config, from_dict, read_mapping
from ..errors import VaelabError
from ..files import write_json
from .cells import TRAIN, Cell, Target, grid_cells, make_cell, parse_grid, parse_seeds
from .execute import SweepOptions, run_cells
from .table import SPEC, interval, show, summarise, write_sweep_report

__all__ = [
    "TRAIN",
    "Cell",
    "SweepOptions",
    "Target",
    "grid_cells",
    "interval",
    "make_cell",
    "parse_grid",
    "parse_seeds",
    "run_seeds",
    "run_sweep",
    "show",
    "summarise",
    "sweep",
    "write_sweep_report",
]


def run_sweep(
    cells: list[Cell], run_dir: str | Path, target: Target, options: SweepOptions
) -> list[dict]:
    """Run (or resume) `cells` below `run_dir`, write sweep.json and the sweep table; every
    cell's record (status, test metrics or error, directory), in order."""
    run_dir = Path(run_dir)
    records = run_cells(cells, run_dir, target, options)
    spec = {
        "target": target.name,
        "cells": [r["name"] for r in records],
        "dirs": [r["dir"] for r in records],
        "points": [c.point for c in cells],
        "seeds": [c.seed for c in cells],
    }
    write_json(run_dir / SPEC, spec)
    write_sweep_report(run_dir, records)
    return records


def run_seeds(
    recipe: str,
    target: Target,
    seed_config,
    seeds: list[int],
    run_dir: str | Path,
    options: SweepOptions,
) -> list[dict]:
    """A recipe's runs, one cell `seed<s>` per seed of `seed_config(s)`, by `run_sweep`;
    refuses in one line when no seed finished (the others are reported by the caller)."""
    run_dir = Path(run_dir)
    cells = [make_cell(target, f"seed{s}", seed_config(s), {}, s) for s in seeds]
    records = run_sweep(cells, run_dir, target, options)
    if not any(r["status"] == "done" for r in records):
        raise VaelabError(
            f"{recipe}: no seed finished ("
            + "; ".join(f"seed {r['seed']}: {r.get('error', r['status'])}" for r in records[:3])
            + f"); see {run_dir / 'sweep.md'}, fix and run again"
        )
    return records


def sweep(
    config: Config | dict[str, Any] | str | Path,
    grid: dict[str, list[Any]],
    seeds: list[int] | None = None,
    run_dir: str | Path = "runs/sweep",
    **options: Any,
) -> list[dict]:
    """Train the Cartesian product of `grid` (dotted key → values, e.g. {"model.beta":
    [0.1, 1]}) × `seeds` over `config` (a Config, its mapping or a config file), each cell a
    run directory below `run_dir`; `options`: the fields of `SweepOptions`. Returns the rows
    of the sweep table (one per cell: point, seed, status, test metrics or error)."""
    if isinstance(config, (str, Path)):
        base = read_mapping(config)
    elif dataclasses.is_dataclass(config):
        base = dataclasses.asdict(config)
    else:
        base = copy.deepcopy(config)
    cells = grid_cells(TRAIN, base, grid, seeds)
    return run_sweep(cells, run_dir, TRAIN, from_dict(SweepOptions, options))
