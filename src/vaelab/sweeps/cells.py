"""What a sweep is made of: a *target* (what one cell runs) and *cells* (one config each),
and the grid × seeds that `vaelab sweep` turns into cells.

A cell is an ordinary run directory below the sweep's directory, `<point>/seed<s>`, holding
`cell.json` (its config, grid point, seed, status, test metrics or one-line error) beside
what its target writes (for `TRAIN`: resolved config, checkpoint, metrics, report). A cell
is known by the digest of its config, so a changed grid keeps the cells it still contains.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, apply_override, from_dict
from ..errors import ConfigError
from ..runs import train_run

CELL_RECORD = "cell.json"


@dataclass(frozen=True)
class Target:
    """The contract of what one cell of a sweep runs.

    - `config_cls`: the typed config of one cell, read from its mapping by `config.from_dict`;
    - `run(config, cell_dir) → {metric: float}`: trains (resuming from whatever `cell_dir`
      holds) and returns the cell's test metrics. It must be a module-level function: Ray
      ships it to workers by reference;
    - `seed_key`: the dotted key of the seed in the mapping (what `--seeds` sets);
    - `device_key`: the dotted key of the device, set by the runner to the device it gives
      the cell (so it is not part of a cell's identity);
    - `quiet`: dotted key → value set in every cell (progress bars off: cells run at once).
    """

    name: str
    config_cls: type
    run: Callable[[Any, Path], dict[str, float]]
    seed_key: str
    device_key: str
    quiet: dict[str, Any] = field(default_factory=dict)

    def placed(self, mapping: dict[str, Any], device: str) -> Any:
        """The typed config of a cell's mapping, on `device`, quiet."""
        mapping = copy.deepcopy(mapping)
        for key, value in {**self.quiet, self.device_key: device}.items():
            apply_override(mapping, key.split("."), value)
        return from_dict(self.config_cls, mapping)


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: `config` (the full mapping of the target's config), the grid
    `point` it stands for (axis → value; what the table groups seeds by) and its `seed`."""

    name: str  # sub-directory of the sweep
    point: dict[str, Any]
    seed: int
    config: dict[str, Any]

    def digest(self, target: Target) -> str:
        """What identifies the cell: its config without the keys the runner sets."""
        mapping = copy.deepcopy(self.config)
        for key in [target.device_key, *target.quiet]:
            node = mapping
            *parents, last = key.split(".")
            for k in parents:
                node = node.get(k, {})
            node.pop(last, None)
        text = json.dumps(mapping, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_cell(target: Target, name: str, config: Any, point: dict[str, Any], seed: int) -> Cell:
    """A cell of `config` (a typed config or its mapping) with the seed set to `seed`,
    checked by building the typed config (bad values fail here, before any cell runs)."""
    mapping = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    mapping = copy.deepcopy(mapping)
    apply_override(mapping, target.seed_key.split("."), seed)
    resolved = dataclasses.asdict(from_dict(target.config_cls, mapping))
    return Cell(name, dict(point), seed, resolved)


# --- `vaelab sweep`: a grid × seeds over one config ------------------------------------------


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """'model.beta=0.1,1,10' → ('model.beta', [0.1, 1, 10]); values are YAML scalars or
    flow lists ('model.hidden=[64],[128,64]'), split at commas outside brackets."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. model.beta=0.1,1,10")
    parts, depth, current = [], 0, ""
    for char in raw:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    values = []
    for part in (p.strip() for p in parts):
        if not part:
            raise ConfigError(f"--grid {key}: empty value in {raw!r}; give V1,V2,... non-empty")
        try:
            values.append(yaml.safe_load(part))
        except yaml.YAMLError:
            values.append(part)
    if len({json.dumps(v, sort_keys=True) for v in values}) < len(values):
        raise ConfigError(f"--grid {key}: a value appears twice in {raw!r}")
    return key, values


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' → [0, 1, 2] (distinct non-negative integers)."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(
            f"--seeds {text!r}: expected distinct non-negative integers separated by commas, "
            "e.g. 0,1,2"
        )
    return seeds


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "x".join(_label(v) for v in value) or "none"
    return str(value).replace("/", "_").replace(" ", "_")


def point_name(point: dict[str, Any]) -> str:
    """'beta=0.1,sigma_mode=learned-shared': each key by its last part unless two share it."""
    lasts = [k.split(".")[-1] for k in point]
    parts = [
        f"{last if lasts.count(last) == 1 else key}={_label(value)}"
        for key, last, value in zip(point, lasts, point.values())
    ]
    return ",".join(parts) or "base"


def grid_cells(
    target: Target, base: dict[str, Any], grid: dict[str, list[Any]], seeds: list[int] | None
) -> list[Cell]:
    """The Cartesian product of `grid` (dotted key → values) × `seeds` over the mapping
    `base`, every cell checked (an unknown key or a value of the wrong type fails here,
    naming the cell). `seeds=None`: the base config's own seed."""
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"--grid {key}: no values; give KEY=V1,V2,...")
    if seeds is None:
        seeds = [_get(dataclasses.asdict(from_dict(target.config_cls, base)), target.seed_key)]
    cells = []
    for combination in itertools.product(*grid.values()):
        mapping = copy.deepcopy(base)
        for key, value in zip(grid, combination):
            apply_override(mapping, key.split("."), value)
        for seed in seeds:
            try:
                cell = make_cell(target, "", mapping, {}, seed)
            except ConfigError as exc:
                where = point_name(dict(zip(grid, combination)))
                raise ConfigError(f"sweep cell {where} (seed {seed}): {exc}") from None
            point = {key: _get(cell.config, key) for key in grid}  # as the config reads them
            cells.append(
                dataclasses.replace(cell, name=f"{point_name(point)}/seed{seed}", point=point)
            )
    return cells


def _get(mapping: dict[str, Any], key: str) -> Any:
    for k in key.split("."):
        mapping = mapping[k]
    return mapping


# --- the ordinary training run as a target ---------------------------------------------------


def train_cell(cfg: Config, cell_dir: Path) -> dict[str, float]:
    """`runs.train_run` in `cell_dir` (resumes); its test metrics."""
    return dict(train_run(cfg, cell_dir).state.last_test)


TRAIN = Target("train", Config, train_cell, "train.seed", "train.device", {"train.progress": False})
