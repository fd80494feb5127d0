"""Sample-quality metrics on features: FID, KID and kernel MMD, and the feature-extractor base.

All three compare two sets of feature vectors (rows), computed in float64:

- FID, the Fréchet distance between Gaussians fitted to the two sets (Heusel et al. 2017,
  "GANs trained by a two time-scale update rule converge to a local Nash equilibrium", eq. 6);
- KID, the unbiased MMD² with the cubic polynomial kernel, averaged over random subsets
  (Bińkowski et al. 2018, "Demystifying MMD GANs", §4);
- MMD, the unbiased MMD² with a Gaussian RBF kernel (Gretton et al. 2012, "A kernel
  two-sample test", eq. 3), bandwidth by the median heuristic unless given.

Features come from a `FeatureExtractor` (`inception` holds the FID Inception network,
`classifier_features` the data-set classifier, `feature_extractors.get_feature_extractor`
picks one); `sample_quality` puts it all together for real vs generated images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.base import ImageData, check_images, to_float
from ..errors import ConfigError, DataError, VaelabError, closest

Features = Tensor | np.ndarray
RandomState = np.random.Generator | int

# Classifier features below this held-out accuracy are too poor to decide a claim.
WEAK_ACCURACY = 0.8
# Kernel sums are accumulated over blocks of this many rows, so memory stays O(block²).
BLOCK_SIZE = 1024
# The median heuristic looks at no more than this many points (evenly spaced) per set.
MEDIAN_HEURISTIC_POINTS = 1000


def _as_matrix(feats: Features, what: str, min_rows: int = 2) -> np.ndarray:
    """Features as a float64 [N, D] array, with a clear error for anything unusable."""
    if isinstance(feats, Tensor):
        feats = feats.detach().cpu().double().numpy()
    array = np.asarray(feats, dtype=np.float64)
    if array.ndim != 2:
        raise DataError(f"{what}: expected features [N, D], got shape {list(array.shape)}")
    if len(array) < min_rows:
        raise VaelabError(f"{what}: need at least {min_rows} samples, got {len(array)}")
    if not np.isfinite(array).all():
        raise DataError(f"{what}: features contain NaN or infinite values")
    return array


def _as_pair(feats_a: Features, feats_b: Features) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_matrix(feats_a, "first feature set"), _as_matrix(feats_b, "second feature set")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    return a, b


# --- FID -----------------------------------------------------------------------------------


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance matrix (eigenvalues clipped at 0)."""
    eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def gaussian_frechet_distance(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μa, Σa) and N(μb, Σb) (Heusel et al. 2017):

        ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½).

    Tr (Σa Σb)^½ is the sum of the square roots of the eigenvalues of Σa Σb, which are those of
    the symmetric PSD matrix Σa^½ Σb Σa^½ = Mᵀ M with M = Σb^½ Σa^½: it is the sum of the
    singular values of M. An SVD gets these to about machine precision relative to the largest
    (eigenvalues of Mᵀ M would lose half the digits), stays real, and needs no ε-repair when
    the covariances are singular (fewer samples than dimensions), unlike
    `scipy.linalg.sqrtm(Σa Σb)` in pytorch-fid.
    """
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    trace_sqrt = np.linalg.svd(_psd_sqrt(cov_b) @ _psd_sqrt(cov_a), compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def frechet_distance(feats_a: Features, feats_b: Features) -> float:
    """FID of two feature sets [N, D]: the Fréchet distance between their Gaussian fits
    (sample means and unbiased sample covariances, as pytorch-fid and TTUR compute them)."""
    a, b = _as_pair(feats_a, feats_b)
    return gaussian_frechet_distance(*_gaussian_fit(a), *_gaussian_fit(b))


def bootstrap_fid_se(
    feats_a: Features, feats_b: Features, replicates: int = 20, rng: RandomState = 0
) -> float:
    """Bootstrap standard error of `frechet_distance`: its standard deviation over
    `replicates` resamplings (with replacement, both sets) of the rows (Efron & Tibshirani
    1993, §6.2). It covers the sampling noise of the images, not that of the feature net."""
    a, b = _as_pair(feats_a, feats_b)
    rng = np.random.default_rng(rng)
    values = [
        gaussian_frechet_distance(
            *_gaussian_fit(a[rng.integers(0, len(a), len(a))]),
            *_gaussian_fit(b[rng.integers(0, len(b), len(b))]),
        )
        for _ in range(replicates)
    ]
    return float(np.std(values, ddof=1))


def _gaussian_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and unbiased sample covariance [D, D] of the rows of x."""
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


# --- kernels and the unbiased MMD² ----------------------------------------------------------

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]
KERNELS = ("polynomial", "rbf")  # the kernels `mmd` accepts


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³, KID's kernel (Bińkowski et al. 2018, §4)."""
    k = x @ y.T / x.shape[1] + 1.0
    return k * k * k  # (much faster than k ** 3)


def rbf_kernel(bandwidth: float) -> Kernel:
    """k(x, y) = exp(−‖x − y‖² / (2 h²)) with bandwidth h."""

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.exp(-_squared_distances(x, y) / (2.0 * bandwidth**2))

    return kernel


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.clip(sq, 0.0, None)


def median_heuristic(x: np.ndarray, y: np.ndarray) -> float:
    """Median pairwise distance of the pooled sample (Gretton et al. 2012, §8), from at most
    `MEDIAN_HEURISTIC_POINTS` evenly spaced points of each set; 1.0 if all points coincide."""

    def spread(z: np.ndarray) -> np.ndarray:
        n = min(len(z), MEDIAN_HEURISTIC_POINTS)
        return z[np.linspace(0, len(z) - 1, n).round().astype(int)]

    pooled = np.concatenate([spread(x), spread(y)])
    upper = np.triu_indices(len(pooled), k=1)
    distances = np.sqrt(_squared_distances(pooled, pooled)[upper])
    median = float(np.median(distances))
    return median if median > 0 else 1.0


def _kernel_sum(kernel: Kernel, x: np.ndarray, y: np.ndarray, same: bool) -> float:
    """Σ_ij k(x_i, y_j) by blocks; with `same` (y is x) the diagonal i = j is left out."""
    total = 0.0
    for i in range(0, len(x), BLOCK_SIZE):
        for j in range(0, len(y), BLOCK_SIZE):
            block = kernel(x[i : i + BLOCK_SIZE], y[j : j + BLOCK_SIZE])
            total += block.sum()
            if same and i == j:
                total -= np.trace(block)
    return float(total)


def unbiased_mmd2(kernel: Kernel, x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimate of MMD² (Gretton et al. 2012, eq. 3):

    1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_ij k(x_i, y_j).
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise VaelabError(f"the unbiased MMD² needs at least 2 samples per set, got {m} and {n}")
    return (
        _kernel_sum(kernel, x, x, same=True) / (m * (m - 1))
        + _kernel_sum(kernel, y, y, same=True) / (n * (n - 1))
        - 2.0 * _kernel_sum(kernel, x, y, same=False) / (m * n)
    )


def kernel_inception_distance(
    feats_a: Features,
    feats_b: Features,
    subsets: int = 100,
    subset_size: int = 1000,
    rng: RandomState = 0,
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD² with k(x, y) = (xᵀy/d + 1)³ on `subsets`
    random subsets of `subset_size` rows of each set (drawn without replacement, capped at the
    smaller set's size). Returns the mean and the standard deviation over the subsets.

    The mean over subsets estimates the full-sample unbiased MMD² without bias, whatever the
    subset size. `rng` is a numpy Generator or a seed.
    """
    a, b = _as_pair(feats_a, feats_b)
    if subsets < 1:
        raise ConfigError(f"KID needs at least one subset, got subsets={subsets}")
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise VaelabError(f"KID needs subsets of at least 2 samples, got subset_size={size}")
    rng = np.random.default_rng(rng)
    values = np.array(
        [
            unbiased_mmd2(
                polynomial_kernel,
                a[rng.choice(len(a), size, replace=False)],
                b[rng.choice(len(b), size, replace=False)],
            )
            for _ in range(subsets)
        ]
    )
    return float(values.mean()), float(values.std(ddof=1) if subsets > 1 else 0.0)


def mmd(
    feats_a: Features, feats_b: Features, kernel: str = "rbf", bandwidth: float | None = None
) -> float:
    """Unbiased MMD² between two sets of vectors (features or flattened pixels).

    `kernel` is "rbf" (Gaussian, bandwidth h by the median heuristic when None) or
    "polynomial" (KID's cubic kernel on the whole sets).
    """
    if kernel not in KERNELS:
        raise ConfigError(f"unknown MMD kernel {kernel!r}{closest(kernel, KERNELS)}")
    a, b = _as_pair(_flat(feats_a), _flat(feats_b))
    if kernel == "polynomial":
        if bandwidth is not None:
            raise ConfigError("the polynomial kernel has no bandwidth")
        return unbiased_mmd2(polynomial_kernel, a, b)
    if bandwidth is not None and not bandwidth > 0:
        raise ConfigError(f"the RBF bandwidth must be positive, got {bandwidth}")
    return unbiased_mmd2(rbf_kernel(bandwidth or median_heuristic(a, b)), a, b)


def _flat(feats: Features) -> Features:
    """Images [N, C, H, W] (or any [N, ...]) → [N, C·H·W]; feature matrices unchanged."""
    return feats.reshape(len(feats), -1) if feats.ndim > 2 else feats


# --- feature extractors and the report -------------------------------------------------------


class FeatureExtractor:
    """Maps images [N, C, H, W] in [0, 1] to feature vectors [N, F] with a fixed network.

    `name` says exactly which network (and weights) produced the features; every report
    prints it, since FID values from different feature networks are not comparable.
    Subclasses build `network` (any module mapping a batch in [0, 1] to [B, F]).
    """

    name: str
    network: nn.Module
    device: torch.device
    held_out_accuracy: float | None = None  # of a classifier's labels; None for Inception

    def __init__(self, name: str, network: nn.Module, device: torch.device | str = "cpu"):
        self.name = name
        self.device = torch.device(device)
        self.network = network.to(self.device).eval().requires_grad_(False)

    @property
    def weak(self) -> bool:
        """Whether the features are too poor to decide a claim: a data-set classifier whose
        held-out accuracy is below `WEAK_ACCURACY`."""
        return self.held_out_accuracy is not None and self.held_out_accuracy < WEAK_ACCURACY

    def protocol(self) -> dict[str, object]:
        """What a FID/KID on these features is: the network, the sha256 of its weights (every
        tensor of its state, in order), its feature size, the held-out accuracy of a
        classifier and whether that makes the features weak."""
        digest = hashlib.sha256()
        for key, tensor in self.network.state_dict().items():
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes())
        return {
            "features": self.name,
            "weights_sha256": digest.hexdigest(),
            "held_out_accuracy": self.held_out_accuracy,
            "weak_features": self.weak,
            "weak_below_accuracy": WEAK_ACCURACY,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 100, progress: bool = False) -> Tensor:
        """Features [N, F] (float32, on the CPU) of `images` [N, C, H, W] (uint8 or in [0, 1])."""
        check_images(images, f"images for {self.name}")
        chunks = []
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="features", unit="batch", disable=not progress):
            batch = to_float(images[start : start + batch_size]).to(self.device)
            chunks.append(self.network(batch).float().cpu())
        return torch.cat(chunks)


def sample_quality(
    extractor: FeatureExtractor,
    real_images: Tensor | ImageData,
    fake_images: Tensor | ImageData,
    rng: RandomState = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 100,
    bootstrap: int = 20,
) -> dict[str, float | int | str]:
    """FID (with its `bootstrap_fid_se` over `bootstrap` resamplings), KID (mean, std) and
    RBF-MMD² of `fake_images` against `real_images`, all on the features of `extractor`,
    whose name is recorded under "features".

    Images are [N, C, H, W] in [0, 1] (generated images clamped to [0, 1], as saving them would).
    """
    real = extractor.features(_images(real_images), batch_size)
    fake = extractor.features(_images(fake_images), batch_size)
    kid_mean, kid_std = kernel_inception_distance(real, fake, kid_subsets, kid_subset_size, rng)
    return {
        "fid": frechet_distance(real, fake),
        "fid_se": bootstrap_fid_se(real, fake, bootstrap, rng) if bootstrap > 1 else None,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "mmd": mmd(real, fake),
        "n_real": len(real),
        "n_fake": len(fake),
        "features": extractor.name,
    }


def fid_protocol(
    extractor: FeatureExtractor, real: Tensor, n_fake: int, reference: str, bootstrap: int = 20
) -> dict[str, object]:
    """The full protocol of a FID/KID (DESIGN §4): the features (`FeatureExtractor.protocol`),
    the images' shape and value range, how many generated and reference images, which
    images are the reference, and how the FID's standard error is made."""
    return extractor.protocol() | {
        "image_shape": list(real.shape[1:]),
        "value_range": [0.0, 1.0],
        "n_generated": n_fake,
        "n_reference": len(real),
        "reference": reference,
        "fid_se": f"bootstrap over {bootstrap} resamplings of both sets' features",
    }


def _images(images: Tensor | ImageData) -> Tensor:
    return images.images if isinstance(images, ImageData) else images
