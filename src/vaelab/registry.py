"""Name → object registries, so that no code dispatches on names with if/elif ladders.

All registries live here so that configs can validate names without importing the modules
that fill them: each registry names the package whose modules register into it and imports
that package on its first lookup (so `vaelab --help` or a config error needs no torch) —
and declares the names that package registers, so that a config's names are checked without
importing it (`declared_names`; `tests/test_contracts.py` keeps each declaration equal to what
its package registers).
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, closest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors; unknown names fail with a suggestion."""

    def __init__(self, kind: str, filled_by: str | None = None, declared: tuple[str, ...] = ()):
        """`filled_by`: the package (e.g. 'vaelab.data') whose import registers the entries;
        imported on the first lookup, never by `register`. `declared`: the names it
        registers."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._filled_by = filled_by
        self.declared = declared

    def _filled(self) -> dict[str, T]:
        if self._filled_by is not None:
            package, self._filled_by = self._filled_by, None
            importlib.import_module(package)
        return self._entries

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: enter `obj` under `name`; a class or function is told its name
        (`obj.registered_name`, what reports print)."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            if isinstance(obj, (type, types.FunctionType)):
                obj.registered_name = name
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._filled()[name]
        except KeyError:
            raise ConfigError(self.unknown(name)) from None

    def unknown(self, name: str, known: list[str] | None = None) -> str:
        """The message for an unknown `name`, against `known` (default: every registered)."""
        known = self.names() if known is None else known
        return f"unknown {self.kind} {name!r}{closest(name, known)}; known: {', '.join(known)}"

    def __contains__(self, name: object) -> bool:
        return name in self._filled()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._filled())

    def declared_names(self) -> list[str]:
        """The names known without importing the filling package: those it declares and
        any registered so far (a user's own, say)."""
        return sorted(set(self.declared) | set(self._entries))


DATASETS: Registry[Callable[..., Any]] = Registry(
    "dataset", "vaelab.data",
    ("20newsgroups", "20newsgroups-rainbow", "binarized-mnist", "celeba", "cifar10", "digits",
     "dsprites", "dsprites-npz", "fashion-mnist", "image-folder", "mnist", "shapes3d", "svhn"),
)  # fmt: skip
NETWORKS: Registry[Callable[..., Any]] = Registry(
    "network", "vaelab.networks", ("conv", "dcgan", "e1", "e2", "e3", "mlp", "resnet")
)
CONDITIONING: Registry[Callable[..., Any]] = Registry(
    "conditioning", "vaelab.networks", ("film", "gate")
)
LIKELIHOODS: Registry[Callable[..., Any]] = Registry(
    "likelihood", "vaelab.distributions", ("bernoulli", "gaussian", "multinomial")
)
SIGMA_MODES: Registry[Callable[..., Any]] = Registry(
    "sigma mode", "vaelab.distributions",
    ("amortized", "fixed", "learned-beta", "learned-pixel", "learned-shared", "optimal-image",
     "optimal-shared"),
)  # fmt: skip
POSTERIORS: Registry[Callable[..., Any]] = Registry(
    "posterior", "vaelab.distributions", ("bernoulli", "diagonal-gaussian")
)
PRIORS: Registry[Callable[..., Any]] = Registry(
    "prior", "vaelab.distributions", ("standard-normal", "uniform-bernoulli")
)
ESTIMATORS: Registry[Callable[..., Any]] = Registry(
    "gradient estimator", "vaelab.estimators",
    ("arm", "disarm", "exact", "gumbel-st", "reinforce", "reparameterization"),
)  # fmt: skip
EXPERIMENTS: Registry[Callable[..., Any]] = Registry(
    "experiment", "vaelab.experiments.recipes",
    ("demo", "disentanglement", "gmm-toy", "groundtruth", "rd-study", "semhash", "semhash-table"),
)  # fmt: skip
FEATURE_EXTRACTORS: Registry[Callable[..., Any]] = Registry(
    "feature extractor", "vaelab.evaluation.feature_extractors", ("classifier", "inception")
)
LOGGERS: Registry[Callable[..., Any]] = Registry(
    "logger", "vaelab.training.callbacks", ("mlflow", "tensorboard", "wandb")
)  # train.loggers: experiment trackers (training/callbacks.py)
