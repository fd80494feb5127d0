"""Data sets with known generative factors, for the disentanglement metrics
(`evaluation.disentanglement`): factors on a finite grid, each uniform and independent, and an
observation for any factor row.

- `DSpritesGroundTruth`: dSprites images drawn procedurally (or read from the cached data set);
- `SyntheticGroundTruth`: small factor grids through a fixed rotation, for testing the metrics.

Every draw takes an explicit numpy Generator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..errors import VaelabError
from . import dsprites


class GroundTruthData(ABC):
    """Factors on a finite grid, each uniform and independent, and their observations.

    Subclasses set `factor_sizes` (classes per factor) and `factor_names`, and give
    `sample_observations_from_factors`; factor rows are int64 class indices [n, K] (class c of
    factor k is its c-th value).
    """

    factor_sizes: tuple[int, ...] = ()
    factor_names: tuple[str, ...] = ()

    @abstractmethod
    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Observations (float32, first axis = example) of factor class rows [n, K]."""

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor rows, every factor uniform over its classes, independently → int64 [n, K]."""
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return rng.integers(0, sizes, size=(n, len(sizes)), dtype=np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(factors [n, K], observations) of n random points."""
        factors = self.sample_factors(n, rng)
        return factors, self.sample_observations_from_factors(factors, rng)

    def sample_observations(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample(n, rng)[1]


class DSpritesGroundTruth(GroundTruthData):
    """dSprites (shape 3, scale 6, orientation 40, posX 32, posY 32; colour is constant and
    left out, as in disentanglement_lib) as float32 images [n, 1, 64, 64] in {0, 1}.

    Images are drawn by `dsprites.render`, which needs no cache; `cached=True` reads the same
    pixels from the generated full data set (`dsprites.images_at`, memory-mapped; 368 MiB,
    generated on first use).
    """

    factor_sizes = dsprites.FACTOR_SIZES
    factor_names = dsprites.FACTOR_NAMES

    def __init__(self, cached: bool = False):
        self.cached = cached

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        draw = dsprites.images_at if self.cached else dsprites.render
        images = draw(factors)
        return images.astype(np.float32) * np.float32(1.0 / 255.0)


class SyntheticGroundTruth(GroundTruthData):
    """Small factor grids seen through a fixed invertible linear map — a data set for
    checking the metrics themselves.

    Observation of factor classes c [K]: x = A u [K] with u_k = c_k / (size_k − 1) ∈ [0, 1]
    and A a random rotation fixed by `seed` (so observations are vectors [n, K], not images);
    `unmix(x)` recovers the classes exactly (up to rounding), a perfect representation.
    """

    def __init__(
        self,
        factor_sizes: Sequence[int] = (3, 4, 5, 6),
        seed: int = 0,
        factor_names: Sequence[str] | None = None,
    ):
        sizes = tuple(int(s) for s in factor_sizes)
        if len(sizes) < 1 or min(sizes) < 2:
            raise VaelabError(f"synthetic ground truth: need factor sizes ≥ 2, got {sizes}")
        self.factor_sizes = sizes
        self.factor_names = tuple(factor_names or (f"factor{k}" for k in range(len(sizes))))
        q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(sizes),) * 2))
        self.mixing = q * np.sign(np.diag(r))  # a uniformly random rotation

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        u = np.asarray(factors, dtype=np.float64) / (np.asarray(self.factor_sizes) - 1.0)
        return (u @ self.mixing.T).astype(np.float32)

    def unmix(self, observations: np.ndarray) -> np.ndarray:
        """The factor classes (as floats) of observations [n, K]: A⁻¹ x scaled back."""
        u = np.asarray(observations, dtype=np.float64) @ self.mixing  # A is orthogonal
        return u * (np.asarray(self.factor_sizes) - 1.0)
