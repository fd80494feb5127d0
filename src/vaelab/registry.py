"""Name → object registries, so that no code dispatches on names with if/elif ladders.

All registries live here so that configs can validate names without importing the modules
that fill them (those register themselves when ``vaelab`` is imported).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError, closest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors; unknown names fail with a suggestion."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

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
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        return (
            f"unknown {self.kind} {name!r}{closest(name, self._entries)}; "
            f"known: {', '.join(self.names())}"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)


DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
NETWORKS: Registry[Callable[..., Any]] = Registry("network")
CONDITIONING: Registry[Callable[..., Any]] = Registry("conditioning")
LIKELIHOODS: Registry[Callable[..., Any]] = Registry("likelihood")
SIGMA_MODES: Registry[Callable[..., Any]] = Registry("sigma mode")
POSTERIORS: Registry[Callable[..., Any]] = Registry("posterior")
PRIORS: Registry[Callable[..., Any]] = Registry("prior")
ESTIMATORS: Registry[Callable[..., Any]] = Registry("gradient estimator")
EXPERIMENTS: Registry[Callable[..., Any]] = Registry("experiment")
FEATURE_EXTRACTORS: Registry[Callable[..., Any]] = Registry("feature extractor")
