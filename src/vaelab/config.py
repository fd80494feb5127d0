"""Typed run configuration: dataclasses loaded from TOML, YAML or JSON, with overrides.

Every field is checked for its type and range when loaded; unknown keys and names fail with
one line that names the key and suggests the closest valid one. Loading checks in two passes:
keys, types, ranges and the registries' declared names first, without importing torch or
anything that fills a registry (so a bad config is answered at once), then the registered
names and the combinations of `ModelConfig`, which ask registered objects for their
capabilities. The resolved config is stored next to the weights of every run, so a
checkpoint always says how it was made.

Field constraints: `at_least(low)` / `one_of(choices)` on a field, and two rules by name that
every config (recipes' too) gets: a field named `seed`, `seeds` or `*_seed` holds seeds, in
[0, 2^63); one named `sigma` or `*_sigma` is a standard deviation whose square must be a
normal finite float32. Every integer must fit in 64 bits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError, closest
from .registry import (
    CONDITIONING,
    DATASETS,
    ESTIMATORS,
    LIKELIHOODS,
    LOGGERS,
    NETWORKS,
    POSTERIORS,
    PRIORS,
    SIGMA_MODES,
    Registry,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# --- field constraints ---------------------------------------------------------------------

INT64 = 2**63  # integers in [-2^63, 2^63): what torch and numpy take
SEED_RANGE = (0, INT64)  # torch.manual_seed and numpy's generators take [0, 2^63)
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # smallest normal float32
SIGMA_RANGE = (math.sqrt(FLOAT32_TINY), math.sqrt(FLOAT32_MAX))  # σ² a normal float32


def at_least(low: float, *, strict: bool = False, **kw: Any) -> Any:
    """A number (or list of numbers) ≥ `low` (> `low` when `strict`)."""
    return field(metadata={"min": low, "strict": strict}, **kw)


def one_of(choices: Collection[str] | Registry, **kw: Any) -> Any:
    """A name (or list of names) from `choices`: a tuple or a registry."""
    return field(metadata={"choices": choices}, **kw)


# names of lower layers' tables, declared here so that a config is checked without torch
# (tests/test_contracts.py keeps them equal to `log_uniform.PER_EXAMPLE`, `multinomial.CONVENTIONS`;
# tests/test_beta_conditioning.py the β laws, conditioning sites and gate forms)
BETA_SAMPLINGS = ("minibatch", "example", "stratified")  # one β per minibatch / example / stratum
BETA_LAWS = ("log-uniform", "tilted")  # log_uniform.TAKES_TILT: the law of log β on [log a, log b]
CONDITION_SITES = ("blocks", "latent", "heads")  # models/vae.py: where the modulation acts
GATE_DECODERS = ("sigmoid", "mr-vae")  # networks/conditioning.py: the gate's decoder form
MULTINOMIAL_CONVENTIONS = ("full", "no-coefficient", "saturated")


@dataclass
class DataConfig:
    """Which data set to read and how much of it."""

    name: str = one_of(DATASETS, default="digits")
    path: str | None = None  # file or folder; else the data set's environment variable
    train_limit: int | None = at_least(1, default=None)  # first N training examples
    test_limit: int | None = at_least(1, default=None)
    binarize: bool = False  # threshold pixels at 0.5 (for Bernoulli decoders)
    image_size: int | None = at_least(4, default=None)  # image-folder, celeba (64): square side
    channels: int | None = at_least(1, default=None)  # image-folder, celeba: 1 (grey) or 3 (RGB)
    split_seed: int = 0  # for data sets without an official test split
    # the standard data sets (data/official.py): fetch missing official files from their
    # published URL; check them against their published sha256 (false: files you made)
    download: bool = False
    verify: bool = True
    crop: int = at_least(0, default=148)  # celeba: side of the centre square cut first; 0: none
    test_split: str = one_of(("test", "valid"), default="test")  # celeba, binarized-mnist .amat
    attribute: str | None = None  # celeba: the attribute whose 0/1 value is the label
    svhn_extra: bool = False  # svhn: add extra_32x32.mat (531,131 images) to the training set
    # auto: in memory when the decoded set fits (data/streaming.py), else streamed
    storage: str = one_of(("auto", "memory", "stream"), default="auto")
    # DataLoader worker processes of a streamed set; "auto": 2 for a GPU, on the CPU the cores
    # training leaves free, at least 1 (data/streaming.py `worker_count`)
    workers: int | str = at_least(0, default="auto")
    # a folder: a streamed image set is decoded once into a uint8 file there and read back by
    # row (data/streaming.py `with_decoded_cache`); None: decoded on every pass
    decoded_cache: str | None = None
    vocab_size: int | None = at_least(1, default=None)  # text corpora: top words (10,000)
    # text corpora: drop a leading mail header — "auto": only a block of RFC 822 header lines
    # (data/bow.py `split_header`), true: everything before the first blank line, false: never
    strip_headers: bool | str = "auto"

    def __post_init__(self):
        if isinstance(self.workers, str) and self.workers != "auto":
            raise ConfigError(f'data.workers: a number ≥ 0 or "auto", got {self.workers!r}')
        if isinstance(self.strip_headers, str) and self.strip_headers != "auto":
            raise ConfigError(
                f'data.strip_headers: "auto", true or false, got {self.strip_headers!r}'
            )


@dataclass
class ModelConfig:
    """A VAE assembled from parts: network, posterior, likelihood, prior; loss = D + β·R."""

    latent_dim: int = at_least(1, default=16)
    network: str = one_of(NETWORKS, default="mlp")
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # MLP widths
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv: per stride-2 layer
    likelihood: str = one_of(LIKELIHOODS, default="gaussian")
    sigma_mode: str = one_of(SIGMA_MODES, default="learned-shared")
    sigma: float = at_least(0.0, strict=True, default=1.0)  # fixed σ_x, or its initial value
    log_sigma_min: float = -6.0  # soft lower bound on log σ_x (σ-VAE's softclip)
    # word-count NLL
    multinomial_convention: str = one_of(MULTINOMIAL_CONVENTIONS, default="saturated")
    posterior: str = one_of(POSTERIORS, default="diagonal-gaussian")
    prior: str = one_of(PRIORS, default="standard-normal")
    beta: float = at_least(0.0, default=1.0)  # weight of the rate only (β-conditional: at eval)
    samples: int = at_least(1, default=1)  # Monte-Carlo samples of z per example
    estimator: str = one_of(ESTIMATORS, default="reparameterization")  # exact: enumerate codes
    # β-conditional VAE (DESIGN §1b): log β ~ U[log a, log b], networks modulated by log β
    conditioning: str | None = one_of(CONDITIONING, default=None)  # film (YOTO) | gate (MR-VAE)
    beta_range: list[float] = field(default_factory=lambda: [0.01, 10.0])  # [a, b]
    beta_sampling: str = one_of(BETA_SAMPLINGS, default="minibatch")
    # the law of log β (distributions/log_uniform.py): log-uniform, or tilted towards a by
    # a truncated exponential of concentration beta_tilt (None: 2)
    beta_law: str = one_of(BETA_LAWS, default="log-uniform")
    beta_tilt: float | None = at_least(0.0, strict=True, default=None)
    # where the modulation acts: every block, the blocks next to the code (the encoder's last,
    # the decoder's first), the networks' output heads (posterior and likelihood parameters)
    condition_at: list[str] = one_of(CONDITION_SITES, default_factory=lambda: ["blocks"])
    condition_scale: float | None = at_least(0.0, strict=True, default=None)  # film 0.1, gate 1
    condition_hidden: int | None = at_least(1, default=None)  # conditioner MLP (film: 32)
    gate_decoder: str = one_of(GATE_DECODERS, default="sigmoid")  # gate: the decoder's form

    def __post_init__(self):
        for name in ("hidden", "channels"):
            if any(width < 1 for width in getattr(self, name)):
                raise ConfigError(f"model.{name}: widths must be ≥ 1, got {getattr(self, name)}")
        low, high = self.beta_range if len(self.beta_range) == 2 else (0, 0)
        if not 0 < low <= high:
            raise ConfigError(
                f"model.beta_range: need [a, b] with 0 < a ≤ b, got {self.beta_range}"
            )
        if not self.condition_at or len(set(self.condition_at)) < len(self.condition_at):
            raise ConfigError(
                "model.condition_at: need one or more distinct sites of "
                f"{', '.join(CONDITION_SITES)}, got {self.condition_at}"
            )
        self._check_combination()
        self._check_conditioning_options()

    def _is_default(self, name: str) -> bool:
        f = next(f for f in dataclasses.fields(self) if f.name == name)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return getattr(self, name) == default

    def _check_conditioning_options(self) -> None:
        """Refuse a β-conditioning option that would be ignored: one set without
        model.conditioning, a tilt for a law without one, an option the chosen conditioner
        does not take (by its `config_fields`)."""
        from .distributions.log_uniform import TAKES_TILT

        options = ("condition_scale", "condition_hidden", "gate_decoder")
        if self.conditioning is None:
            changed = [
                n for n in ("beta_law", "beta_tilt", "condition_at", *options)
                if not self._is_default(n)
            ]  # fmt: skip
            if changed:
                raise ConfigError(
                    f"model.{changed[0]}: an option of a β-conditional model; set "
                    "model.conditioning (film or gate) or leave it out"
                )
            return
        if self.beta_tilt is not None and not TAKES_TILT[self.beta_law]:
            raise ConfigError(
                f"model.beta_tilt: the {self.beta_law!r} law has no tilt; set "
                "model.beta_law = 'tilted' or leave it out"
            )
        takes = CONDITIONING.get(self.conditioning).config_fields.values()
        for name in options:
            if name not in takes and not self._is_default(name):
                raise ConfigError(
                    f"model.{name}: the {self.conditioning!r} conditioning has no such option; "
                    "leave it out or choose a conditioning that takes it"
                )

    def _check_combination(self) -> None:
        """Refuse combinations that would change meaning silently, by the registered
        objects' capability flags."""
        from .distributions.log_uniform import PER_EXAMPLE

        posterior = POSTERIORS.get(self.posterior)
        estimator = ESTIMATORS.get(self.estimator)
        sigma_mode = SIGMA_MODES.get(self.sigma_mode)
        if estimator.needs_rsample and not posterior.has_rsample:
            raise ConfigError(
                f"model.estimator: '{self.posterior}' codes cannot be reparameterised; use "
                "'exact' (≤ 16 bits) or a discrete-latent estimator (arm, disarm, reinforce, "
                "gumbel-st)"
            )
        if estimator.discrete and not posterior.has_enumerate_support:
            raise ConfigError(
                f"model.estimator: '{self.estimator}' is for discrete codes but the "
                f"'{self.posterior}' posterior is continuous; use 'reparameterization'"
            )
        if estimator.enumerates and not posterior.can_enumerate(self.latent_dim):
            raise ConfigError(
                f"model.estimator: '{self.estimator}' sums over every code, and "
                f"{self.latent_dim} latent dimensions have too many (at most 16 bits); use a "
                "discrete-latent estimator (arm, disarm, reinforce, gumbel-st)"
            )
        if sigma_mode.needs_condition and self.conditioning is None:
            raise ConfigError(
                f"model.sigma_mode: '{self.sigma_mode}' makes σ_x a function of β; "
                "it needs model.conditioning (film or gate)"
            )
        if (
            sigma_mode.shared_over_batch
            and self.conditioning is not None
            and PER_EXAMPLE[self.beta_sampling]
        ):
            raise ConfigError(
                f"model.sigma_mode: '{self.sigma_mode}' fits one σ_x to the whole batch, so "
                "it needs one β per batch; set model.beta_sampling = 'minibatch' or use "
                "sigma_mode = 'optimal-image'"
            )
        per_example = self.conditioning is not None and PER_EXAMPLE[self.beta_sampling]
        if estimator.enumerates and per_example:
            raise ConfigError(
                f"model.beta_sampling: '{self.estimator}' decodes every code once for the "
                "whole batch, so it needs one β per batch; set model.beta_sampling = 'minibatch'"
            )


# names of the trainer's tables (training/schedules.py; tests/test_contracts.py keeps them equal)
OPTIMIZER_NAMES = ("adam", "adamw", "adamax", "sgd", "rmsprop")
LR_SCHEDULE_NAMES = ("constant", "linear", "cosine", "step", "exponential", "plateau")
BETA_SCHEDULES = ("constant", "linear", "cyclical")
PRECISIONS = ("32", "bf16", "16-mixed")


@dataclass
class TrainConfig:
    """Optimisation, rate shaping, logging and checkpointing (training/trainer.py; the
    schedules' formulas are in training/schedules.py)."""

    epochs: int = at_least(1, default=10)
    batch_size: int = at_least(1, default=128)
    accumulate: int = at_least(1, default=1)  # micro-batches of batch_size per update
    lr: float = at_least(0.0, strict=True, default=1e-3)
    optimizer: str = one_of(OPTIMIZER_NAMES, default="adam")
    momentum: float = at_least(0.0, default=0.0)  # sgd, rmsprop
    nesterov: bool = False  # sgd, with momentum > 0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw, adamax
    weight_decay: float = at_least(0.0, default=0.0)
    # learning rate: a linear warm-up, then the schedule
    lr_schedule: str = one_of(LR_SCHEDULE_NAMES, default="constant")
    lr_warmup_steps: int = at_least(0, default=0)
    lr_min: float = at_least(0.0, default=0.0)  # cosine's floor; plateau's lowest rate
    lr_gamma: float = at_least(0.0, strict=True, default=0.1)  # step, exponential, plateau
    lr_step_epochs: int = at_least(1, default=30)  # step: epochs between reductions
    plateau_metric: str = "loss"  # a term of the test record
    plateau_patience: int = at_least(0, default=10)  # evaluations without improvement
    plateau_threshold: float = at_least(0.0, default=1e-4)  # relative improvement that counts
    # the rate term: β·w(t)·R, w by beta_schedule; R floored per group by free bits
    beta_schedule: str = one_of(BETA_SCHEDULES, default="constant")
    beta_warmup_steps: int = at_least(0, default=0)  # linear: steps from w = 0 to 1
    beta_cycles: int = at_least(1, default=4)  # cyclical: number of cycles M
    beta_cycle_ratio: float = at_least(0.0, strict=True, default=0.5)  # cyclical: R ∈ (0, 1]
    free_bits: float | None = at_least(0.0, strict=True, default=None)  # λ, nats per group
    free_bits_groups: int | None = at_least(1, default=None)  # None: one group per dimension
    ema_decay: float | None = at_least(0.0, strict=True, default=None)  # EMA weights, d < 1
    precision: str | int = "32"  # "32" | "bf16" (autocast, CPU or CUDA) | "16-mixed" (CUDA)
    compile: bool = False  # torch.compile the model (falls back to eager with one line)
    grad_clip: float | None = at_least(0.0, strict=True, default=None)  # max gradient norm
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = at_least(1, default=50)  # steps between metric lines
    checkpoint_every: int = at_least(1, default=500)  # steps between checkpoints
    eval_every: int = at_least(1, default=1)  # epochs between test-set evaluations
    progress: bool = True  # tqdm progress bar
    # trackers mirroring metrics.jsonl (training/callbacks.py): tensorboard, wandb, mlflow
    loggers: list[str] = one_of(LOGGERS, default_factory=list)

    def __post_init__(self):
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(
                f"train.adam_betas: need two numbers in [0, 1), got {self.adam_betas}"
            )
        self.precision = str(self.precision)  # 32 read from --set or YAML is "32"
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"train.precision: unknown value {self.precision!r}"
                f"{closest(self.precision, PRECISIONS)}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ConfigError(
                "train.nesterov: Nesterov momentum needs optimizer = 'sgd' and momentum > 0"
            )
        if self.beta_schedule == "linear" and self.beta_warmup_steps < 1:
            raise ConfigError(
                "train.beta_warmup_steps: the linear β warm-up needs ≥ 1 step, got "
                f"{self.beta_warmup_steps}"
            )
        if self.beta_cycle_ratio > 1:
            raise ConfigError(
                f"train.beta_cycle_ratio: must lie in (0, 1], got {self.beta_cycle_ratio}"
            )
        if self.ema_decay is not None and self.ema_decay >= 1:
            raise ConfigError(f"train.ema_decay: must lie in (0, 1), got {self.ema_decay}")
        if self.free_bits_groups is not None and self.free_bits is None:
            raise ConfigError("train.free_bits_groups: set train.free_bits (λ) too")
        if self.lr_min >= self.lr and self.lr_schedule in ("cosine", "plateau"):
            raise ConfigError(
                f"train.lr_min: must be below train.lr ({self.lr:g}), got {self.lr_min:g}"
            )


@dataclass
class SweepOptions:
    """Where and how a sweep's cells run (`vaelab sweep` flags; a recipe's `sweep` section)."""

    address: str | None = None  # a Ray cluster ("auto", "host:6379", "ray://host:10001")
    # Ray CPUs and torch threads of a cell; None: this machine's cores shared among the
    # sweep's cells (all of them for one cell, 1 each for as many cells as cores; 1 on a cluster)
    cpus_per_run: int | None = at_least(1, default=None)
    # GPUs of a cell, > 0: it runs on CUDA (0.25: four per GPU); None: one GPU per cell on a
    # machine with CUDA, else (and on a cluster) none
    gpus_per_run: float | None = at_least(0.0, default=None)
    max_concurrent: int | None = at_least(1, default=None)  # cells at once (default: all fit)
    in_process: bool = False  # one after another here, even when Ray is installed
    progress: bool = True  # a line per finished cell

    @property
    def gpus(self) -> float:
        """`gpus_per_run`, or its default."""
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        import torch  # only when a sweep is placed, not when its config is read

        local = not (self.address or os.environ.get("RAY_ADDRESS"))
        return 1.0 if local and torch.cuda.is_available() else 0.0

    @property
    def device(self) -> str:
        """Where a cell runs: CUDA (the GPU Ray gives it, or this machine's) or the CPU."""
        return "cuda" if self.gpus > 0 else "cpu"

    def cpus(self, cells: int) -> int:
        """`cpus_per_run`, or its default for a sweep of `cells` cells. It depends on the
        sweep and the machine only, so a rerun (Ray or in-process) gives a cell what it had."""
        if self.cpus_per_run is not None:
            return self.cpus_per_run
        if self.address or os.environ.get("RAY_ADDRESS"):
            return 1
        return max(1, (os.cpu_count() or 1) // max(1, cells))


@dataclass
class Config:
    """A whole training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        """Rate shaping against the model: a β-conditional model's β is an input, so it
        takes no β schedule; free bits floor a minibatch's KL at one β."""
        model, train = self.model, self.train
        if model.conditioning is not None and train.beta_schedule != "constant":
            raise ConfigError(
                "train.beta_schedule: a β-conditional model takes β as an input, so it has "
                "no β to schedule; use beta_schedule = 'constant' (free bits are allowed)"
            )
        if train.free_bits is not None:
            from .distributions.log_uniform import PER_EXAMPLE

            if model.conditioning is not None and PER_EXAMPLE[model.beta_sampling]:
                raise ConfigError(
                    "train.free_bits: the floor acts on a minibatch's mean KL, which needs one "
                    "β per minibatch; set model.beta_sampling = 'minibatch'"
                )
            groups = train.free_bits_groups
            if groups is not None and model.latent_dim % groups:
                raise ConfigError(
                    f"train.free_bits_groups: {groups} groups do not split "
                    f"model.latent_dim = {model.latent_dim} evenly; use a divisor of it"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- loading and checking ------------------------------------------------------------------


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file into a dict, with one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config path {str(path)!r} is a directory, not a config file")
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"config path {str(path)!r} is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {str(path)!r}: use .toml, .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"config file {str(path)!r} is malformed: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.beta=4' → (['model', 'beta'], 4); the value is read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. model.beta=4")
    keys = [part.strip() for part in key.split(".")]
    if not all(keys):
        raise ConfigError(f"--set {text!r}: the key {key.strip()!r} has an empty part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def config_mapping(path: str | Path | None = None, overrides: list[str] = ()) -> dict[str, Any]:
    """The mapping of a config file (optional) with ``key=value`` overrides applied."""
    data = read_mapping(path) if path is not None else {}
    for text in overrides:
        apply_override(data, *parse_override(text))
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), cls: type = Config
) -> Any:
    """Build a typed config from a file (optional) and ``key=value`` overrides."""
    return from_dict(cls, config_mapping(path, overrides))


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, checking keys, types and ranges (all of
    them, before any registry is consulted), then names and combinations."""
    check_fields(cls, data, where)
    return _read(cls, data, where, build=True)


def check_fields(cls: type, data: Any, where: str = "") -> None:
    """The first pass of `from_dict`: unknown keys, types and ranges, without registries
    (nothing heavier than this module is imported)."""
    _read(cls, data, where, build=False)


def _read(cls: type, data: Any, where: str, build: bool) -> Any:
    """`cls` built from `data` (`build`), else only checked without registered names."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a section (mapping), got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"unknown config key {_join(where, str(key))!r}{closest(str(key), fields)}; "
                f"known in {where or 'the top level'}: {', '.join(fields)}"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = _join(where, name)
        value = _coerce(hints[name], value, key, build)
        _check_constraints(fields[name], value, key, names=build)
        values[name] = value
    return cls(**values) if build else values


def _coerce(hint: Any, value: Any, key: str, build: bool) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _read(hint, value, key, build)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [t for t in options if t is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, key, build)
        for option in inner:  # e.g. bool | str: the first type that takes the value
            try:
                return _coerce(option, value, key, build)
            except ConfigError:
                pass
        expected = " or ".join(_type_name(t) for t in inner)
        raise ConfigError(f"{key}: expected {expected}, got {_show(value)}")
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {inner.__name__}, got {_show(value)}")
        return [_coerce(inner, item, f"{key}[{i}]", build) for i, item in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = _as_float(value)
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {_show(value)}")


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range
            return math.inf
    if isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _check_constraints(f: dataclasses.Field, value: Any, key: str, names: bool) -> None:
    """`f`'s range and naming rules on `value`; registered names only when `names`."""
    if value is None:
        return
    numbers = [v for v in (value if isinstance(value, list) else [value]) if _is_number(v)]
    low = f.metadata.get("min")
    if low is not None:
        strict = f.metadata.get("strict", False)
        for number in numbers:
            if number < low or (strict and number == low):
                relation = ">" if strict else "≥"
                raise ConfigError(f"{key}: must be {relation} {low:g}, got {value!r}")
    if f.name in ("seed", "seeds") or f.name.endswith("_seed"):
        _check_range(key, value, numbers, SEED_RANGE, "seeds must lie in [0, 2^63)")
    if f.name == "sigma" or f.name.endswith("_sigma"):
        floats = [v for v in numbers if isinstance(v, float)]
        low, high = SIGMA_RANGE
        why = f"σ² must be a normal float32, so σ must lie in [{low:.3g}, {high:.3g}]"
        _check_range(key, value, floats, SIGMA_RANGE, why, closed=True)
    ints = [v for v in numbers if isinstance(v, int)]
    _check_range(key, value, ints, (-INT64, INT64), "integers must fit in 64 bits")
    choices = f.metadata.get("choices")
    if choices is None:
        return
    for i, name in enumerate(value if isinstance(value, list) else [value]):
        where = f"{key}[{i}]" if isinstance(value, list) else key
        if isinstance(choices, Registry):  # first pass: its declared names, without filling it
            known = choices.names() if names else choices.declared_names()
            if name not in known:
                raise ConfigError(f"{where}: {choices.unknown(name, known)}")
        elif name not in choices:
            raise ConfigError(
                f"{where}: unknown value {name!r}{closest(name, choices)}; "
                f"choose one of: {', '.join(choices)}"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(
    key: str, value: Any, numbers: list, bounds: tuple, why: str, closed: bool = False
) -> None:
    low, high = bounds
    for number in numbers:
        if not (low <= number <= high if closed else low <= number < high):
            raise ConfigError(f"{key}: {why}; got {value!r}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(hint: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}"
