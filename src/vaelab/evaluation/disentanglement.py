"""Supervised disentanglement metrics on data with known generative factors.

Five scores, with the hyperparameters of disentanglement_lib (Locatello et al. 2019,
"Challenging common assumptions in the unsupervised learning of disentangled
representations"; its metric gin configs give the defaults below):

- `beta_vae_score` (Higgins et al. 2017, β-VAE): batch 64, 10,000 train / 5,000 eval
  points, sklearn `LogisticRegression()`;
- `factor_vae_score` (Kim & Mnih 2018, FactorVAE): batch 64, 10,000 train / 5,000 eval
  points, 10,000 points for the global variances, dimensions with std < 0.05 pruned;
- `mig` (Chen et al. 2018, β-TCVAE): 10,000 points, histogram discretisation, 20 bins;
- `sap_score` (Kumar et al. 2018, DIP-VAE): 10,000 train / 5,000 test points, discrete
  factors: `LinearSVC(C=0.01, class_weight="balanced")` per (code dimension, factor);
- `dci` (Eastwood & Williams 2018): 10,000 train / 5,000 test points,
  `GradientBoostingClassifier()` (100 trees of depth 3) per factor.

Each is a plain function of a ground-truth data set (a `data.ground_truth.GroundTruthData`:
factors on a finite grid, sampled uniformly and independently, and an observation for any
factor row), a representation function (observations → codes [n, L] as numpy;
`encoder_mean_representation` builds one from a VAE's encoder mean) and an explicit random
state (a numpy Generator or a seed); the same seed gives the same score. Each returns a dict
of floats, with the key names of disentanglement_lib (`eval_accuracy`, `discrete_mig`,
`SAP_score`, `disentanglement`, …).

Cost of the defaults (`SAMPLE_SIZES`; the caller can reduce them, e.g. through
`disentanglement_metrics(..., scale=0.1)`, or per metric with `scales=`): BetaVAE encodes
(10,000 + 5,000) × 2 × 64 = 1.92 M observations and FactorVAE 10,000 + 15,000 × 64 = 0.97 M,
so the encoder dominates; MIG and SAP encode 10,000–15,000 points; DCI fits
Σ_k |classes_k| × 100 depth-3 trees (dSprites: 113 classes) on 10,000 codes.

Where this code differs from disentanglement_lib, on purpose:
- observations are drawn in chunks of ~`SAMPLE_CHUNK` (the same distribution, another random
  stream), so scores agree with disentanglement_lib's in distribution, not digit for digit;
- `LogisticRegression(max_iter=1000)` (sklearn's default 100 iterations may stop short on
  unscaled features, with a warning; the optimum is the same);
- FactorVAE's `num_active_dims` is the number of kept dimensions (disentanglement_lib reports
  the length of the mask), and 0/0 variance ratios cannot occur since dimensions with
  std < `prune_threshold` are dropped before the ratio is taken;
- sklearn estimators get a `random_state` drawn from the random state, for repeatability.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from ..data.ground_truth import GroundTruthData
from ..errors import DataError, VaelabError
from .encoding import encode_data

RandomState = np.random.Generator | int
Representation = Callable[[np.ndarray], np.ndarray]

# Observations passed to the representation function per call (bounds memory: 4,096 dSprites
# images are 64 MiB as float32).
SAMPLE_CHUNK = 4096


def _rng(random_state: RandomState) -> np.random.Generator:
    return np.random.default_rng(random_state)


def _seed(rng: np.random.Generator) -> int:
    """An integer seed for an sklearn estimator, drawn from `rng`."""
    return int(rng.integers(2**31 - 1))


# --- representations -----------------------------------------------------------------------


def encoder_mean_representation(
    model, beta: float | None = None, batch_size: int = 512
) -> Representation:
    """The encoder mean E_q[z|x] of a VAE as a representation function: observations
    (numpy [n, C, H, W] in [0, 1]) → numpy float64 [n, L].

    For a β-conditional model the encoder is run at `beta` (default: the model's own β);
    for an unconditional model `beta` changes nothing. The model is put in eval mode.
    """

    def representation(observations: np.ndarray) -> np.ndarray:
        q = encode_data(model, np.asarray(observations), beta, batch_size)
        return q.mean.double().numpy()

    return representation


def _codes(representation: Representation, observations: np.ndarray) -> np.ndarray:
    codes = representation(observations)
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) != len(observations):
        raise DataError(
            f"representation: expected codes [{len(observations)}, L], got {list(codes.shape)}"
        )
    if not np.isfinite(codes).all():
        raise DataError("representation: codes contain NaN or infinite values")
    return codes


def _represent_factors(
    gt: GroundTruthData, representation: Representation, factors: np.ndarray, rng
) -> np.ndarray:
    """Codes [n, L] of the observations of factor rows [n, K], in chunks."""
    out = []
    for start in range(0, len(factors), SAMPLE_CHUNK):
        chunk = factors[start : start + SAMPLE_CHUNK]
        out.append(_codes(representation, gt.sample_observations_from_factors(chunk, rng)))
    return np.concatenate(out)


def sample_factor_codes(
    gt: GroundTruthData, representation: Representation, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n random points as (codes [n, L] float64, factors [n, K] int64)."""
    factors = gt.sample_factors(n, rng)
    return _represent_factors(gt, representation, factors, rng), factors


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if value < 1:
            raise VaelabError(f"{name} must be ≥ 1, got {value}")


# --- BetaVAE -------------------------------------------------------------------------------


def _beta_vae_points(gt, representation, batch_size, num_points, rng):
    """num_points (feature, label) pairs: label = a random factor k, feature = mean over
    `batch_size` pairs (sharing factor k, all else independent) of |z1 − z2|."""
    per_chunk = max(1, SAMPLE_CHUNK // (2 * batch_size))
    k_factors = gt.num_factors
    features, labels = [], []
    for start in range(0, num_points, per_chunk):
        p = min(per_chunk, num_points - start)
        index = rng.integers(k_factors, size=p)
        f1 = gt.sample_factors(p * batch_size, rng).reshape(p, batch_size, k_factors)
        f2 = gt.sample_factors(p * batch_size, rng).reshape(p, batch_size, k_factors)
        rows = np.arange(p)
        f2[rows, :, index] = f1[rows, :, index]
        z1 = _represent_factors(gt, representation, f1.reshape(-1, k_factors), rng)
        z2 = _represent_factors(gt, representation, f2.reshape(-1, k_factors), rng)
        diff = np.abs(z1 - z2).reshape(p, batch_size, -1)
        features.append(diff.mean(1))
        labels.append(index)
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(
    gt: GroundTruthData,
    representation: Representation,
    random_state: RandomState = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
) -> dict[str, float]:
    """The BetaVAE metric (Higgins et al. 2017, "β-VAE: learning basic visual concepts with a
    constrained variational framework", §3): accuracy of a linear classifier (logistic
    regression) predicting which factor was held fixed from mean |z1 − z2| over `batch_size`
    pairs. Chance is 1/K for K factors; a perfect representation scores 1.

    Returns train_accuracy and eval_accuracy (the score).
    """
    _check_sizes(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    rng = _rng(random_state)
    x_train, y_train = _beta_vae_points(gt, representation, batch_size, num_train, rng)
    model = LogisticRegression(max_iter=1000, random_state=_seed(rng))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    x_eval, y_eval = _beta_vae_points(gt, representation, batch_size, num_eval, rng)
    return {
        "train_accuracy": float(model.score(x_train, y_train)),
        "eval_accuracy": float(model.score(x_eval, y_eval)),
    }


# --- FactorVAE -----------------------------------------------------------------------------


def _factor_vae_votes(gt, representation, batch_size, num_points, rng, global_var, active):
    """Votes [K, A]: for each point, a random factor k is fixed over a batch and the kept
    dimension with the smallest variance/global-variance ratio votes for k."""
    per_chunk = max(1, SAMPLE_CHUNK // batch_size)
    k_factors = gt.num_factors
    votes = np.zeros((k_factors, int(active.sum())), dtype=np.int64)
    for start in range(0, num_points, per_chunk):
        p = min(per_chunk, num_points - start)
        index = rng.integers(k_factors, size=p)
        factors = gt.sample_factors(p * batch_size, rng).reshape(p, batch_size, k_factors)
        rows = np.arange(p)
        factors[rows, :, index] = factors[rows, :1, index]  # the first row's class, for all
        codes = _represent_factors(gt, representation, factors.reshape(-1, k_factors), rng)
        local_var = codes.reshape(p, batch_size, -1)[:, :, active].var(1, ddof=1)
        argmin = np.argmin(local_var / global_var[active], axis=1)
        np.add.at(votes, (index, argmin), 1)
    return votes


def factor_vae_score(
    gt: GroundTruthData,
    representation: Representation,
    random_state: RandomState = 0,
    batch_size: int = 64,
    num_train: int = 10_000,
    num_eval: int = 5_000,
    num_variance_estimate: int = 10_000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    """The FactorVAE metric (Kim & Mnih 2018, "Disentangling by factorising", §4): fix one
    random factor over a batch, divide each code's variance in the batch by its global
    variance, and let the dimension with the smallest ratio vote for the factor; the
    classifier maps each dimension to the factor it voted for most, and the score is its
    accuracy on fresh votes. Dimensions whose global std is below `prune_threshold` (collapsed
    to the prior or constant) are left out. Chance is about 1/K; perfect is 1.

    Returns train_accuracy, eval_accuracy (the score) and num_active_dims.
    """
    _check_sizes(num_train=num_train, num_eval=num_eval)
    if batch_size < 2 or num_variance_estimate < 2:
        raise VaelabError("factor_vae_score: batch_size and num_variance_estimate must be ≥ 2")
    rng = _rng(random_state)
    codes, _ = sample_factor_codes(gt, representation, num_variance_estimate, rng)
    global_var = codes.var(0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train_votes = _factor_vae_votes(
        gt, representation, batch_size, num_train, rng, global_var, active
    )
    classifier = np.argmax(train_votes, axis=0)  # the factor each kept dimension predicts
    columns = np.arange(train_votes.shape[1])
    eval_votes = _factor_vae_votes(
        gt, representation, batch_size, num_eval, rng, global_var, active
    )
    return {
        "train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
        "num_active_dims": int(active.sum()),
    }


# --- MIG -----------------------------------------------------------------------------------


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column of codes [n, L] into `num_bins` equal-width bins over its own range
    (disentanglement_lib's histogram discretizer) → int64 [n, L] bin numbers 1..num_bins."""
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1][:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (nats) between discrete codes [n, L] and factors [n, K]
    → [L, K]."""
    return np.array(
        [
            [mutual_info_score(factors[:, k], codes[:, j]) for k in range(factors.shape[1])]
            for j in range(codes.shape[1])
        ]
    )


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of each factor column [n, K] → [K]."""
    return np.array([mutual_info_score(f, f) for f in factors.T])


def mig(
    gt: GroundTruthData,
    representation: Representation,
    random_state: RandomState = 0,
    num_train: int = 10_000,
    num_bins: int = 20,
) -> dict[str, float]:
    """Mutual information gap (Chen et al. 2018, "Isolating sources of disentanglement in
    VAEs", §5): for each factor k, the gap between the two largest I(z_j; v_k) over code
    dimensions j, divided by H(v_k), averaged over factors; codes are discretised into
    `num_bins` histogram bins. 0 for codes independent of the factors (up to the plug-in
    estimator's positive bias), 1 for one code per factor holding it exactly — at most
    log(num_bins)/log(size_k) for a factor with more classes than bins (dSprites orientation:
    log 20 / log 40 ≈ 0.81).

    Returns discrete_mig and mig_<factor name> per factor.
    """
    _check_sizes(num_train=num_train, num_bins=num_bins)
    rng = _rng(random_state)
    codes, factors = sample_factor_codes(gt, representation, num_train, rng)
    if codes.shape[1] < 2:
        raise VaelabError("mig: needs at least 2 code dimensions")
    info = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)  # [L, K]
    entropy = discrete_entropy(factors)
    top = np.sort(info, axis=0)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.where(entropy > 0, (top[0] - top[1]) / entropy, np.nan)
    if np.isnan(gaps).all():
        raise VaelabError("mig: no factor varies in the sample")
    scores = {"discrete_mig": float(np.nanmean(gaps))}
    scores.update({f"mig_{name}": float(g) for name, g in zip(_names(gt), gaps)})
    return scores


def _names(gt: GroundTruthData) -> tuple[str, ...]:
    names = tuple(gt.factor_names)
    return names if len(names) == gt.num_factors else tuple(map(str, range(gt.num_factors)))


# --- SAP -----------------------------------------------------------------------------------


def sap_score_matrix(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Test accuracy [L, K] of a linear SVM (C = 0.01, balanced classes) predicting each
    factor from each single code dimension."""
    n_codes, n_factors = codes.shape[1], factors.shape[1]
    scores = np.zeros((n_codes, n_factors))
    for j in range(n_codes):
        for k in range(n_factors):
            svm = LinearSVC(C=0.01, class_weight="balanced", random_state=_seed(rng))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                svm.fit(codes[:, j : j + 1], factors[:, k])
            scores[j, k] = np.mean(svm.predict(codes_test[:, j : j + 1]) == factors_test[:, k])
    return scores


def sap_score(
    gt: GroundTruthData,
    representation: Representation,
    random_state: RandomState = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
) -> dict[str, float]:
    """Separated attribute predictability (Kumar et al. 2018, "Variational inference of
    disentangled latent concepts from unlabeled observations", §3), for discrete factors as
    disentanglement_lib's default (`continuous_factors=False`): for each factor, the gap
    between the best and second-best test accuracy of a one-dimensional linear classifier,
    averaged over factors. 0 when no dimension is special; well below 1 even for a perfect
    representation, since a one-feature one-vs-rest linear SVM with strong regularisation
    recognises only the classes at the ends of the range.

    Returns SAP_score.
    """
    _check_sizes(num_train=num_train, num_test=num_test)
    rng = _rng(random_state)
    codes, factors = sample_factor_codes(gt, representation, num_train, rng)
    codes_test, factors_test = sample_factor_codes(gt, representation, num_test, rng)
    if codes.shape[1] < 2:
        raise VaelabError("sap_score: needs at least 2 code dimensions")
    matrix = sap_score_matrix(codes, factors, codes_test, factors_test, rng)
    top = np.sort(matrix, axis=0)
    return {"SAP_score": float(np.mean(top[-1] - top[-2]))}


# --- DCI -----------------------------------------------------------------------------------


def _entropy_base(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy of the (normalised) non-negative weights along `axis`, in log base `base`."""
    p = p / p.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=axis) / math.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix [L codes, K factors], as in
    Eastwood & Williams 2018 §2 and disentanglement_lib (1e-11 added before normalising):

        D = Σ_j ρ_j (1 − H_K(P_j·)),  ρ_j = Σ_k R_jk / Σ R   (per code, weighted by use)
        C = Σ_k ρ_k (1 − H_L(P_·k)),  ρ_k = Σ_j R_jk / Σ R   (per factor)
    """
    n_codes, n_factors = importance.shape
    if n_codes < 2 or n_factors < 2:
        raise VaelabError("dci: needs at least 2 code dimensions and 2 factors")
    eps = importance + 1e-11
    per_code = 1.0 - _entropy_base(eps, n_factors, axis=1)
    per_factor = 1.0 - _entropy_base(eps, n_codes, axis=0)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_weight = weights.sum(1) / weights.sum()
    factor_weight = weights.sum(0) / weights.sum()
    return float(per_code @ code_weight), float(per_factor @ factor_weight)


def gbt_importance(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    rng: np.random.Generator,
    n_estimators: int = 100,
    max_depth: int = 3,
) -> tuple[np.ndarray, float, float]:
    """Importance matrix [L, K] (|feature_importances_| of one gradient-boosted tree
    classifier per factor, sklearn defaults), and mean train and test accuracy."""
    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = [], []
    for k in range(factors.shape[1]):
        model = GradientBoostingClassifier(
            n_estimators=n_estimators, max_depth=max_depth, random_state=_seed(rng)
        )
        model.fit(codes, factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes) == factors[:, k]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def dci(
    gt: GroundTruthData,
    representation: Representation,
    random_state: RandomState = 0,
    num_train: int = 10_000,
    num_test: int = 5_000,
    n_estimators: int = 100,
    max_depth: int = 3,
) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018, "A
    framework for the quantitative evaluation of disentangled representations"), with the
    importance matrix of gradient-boosted trees as disentanglement_lib: D (does each code
    dimension capture at most one factor), C (is each factor captured by one dimension), both
    in [0, 1]; informativeness is the trees' mean test accuracy over factors (train accuracy
    too). `n_estimators` and `max_depth` are sklearn's defaults (as disentanglement_lib);
    fewer trees make it cheaper.

    Returns disentanglement, completeness, informativeness_train, informativeness_test.
    """
    _check_sizes(num_train=num_train, num_test=num_test, n_estimators=n_estimators)
    rng = _rng(random_state)
    codes, factors = sample_factor_codes(gt, representation, num_train, rng)
    codes_test, factors_test = sample_factor_codes(gt, representation, num_test, rng)
    importance, train_acc, test_acc = gbt_importance(
        codes, factors, codes_test, factors_test, rng, n_estimators, max_depth
    )
    d, c = dci_from_importance(importance)
    return {
        "disentanglement": d,
        "completeness": c,
        "informativeness_train": train_acc,
        "informativeness_test": test_acc,
    }


# --- all of them ---------------------------------------------------------------------------


# disentanglement_lib's sample sizes of each metric (its gin configs), as keyword arguments
SAMPLE_SIZES: dict[str, dict[str, int]] = {
    "beta_vae": {"num_train": 10_000, "num_eval": 5_000},
    "factor_vae": {"num_train": 10_000, "num_eval": 5_000, "num_variance_estimate": 10_000},
    "mig": {"num_train": 10_000},
    "sap": {"num_train": 10_000, "num_test": 5_000},
    "dci": {"num_train": 10_000, "num_test": 5_000},
}


def metric_sizes(
    scale: float = 1.0, scales: Mapping[str, float] | None = None
) -> dict[str, dict[str, int]]:
    """Each metric's sample sizes: `SAMPLE_SIZES` times its entry of `scales`, else `scale`
    (rounded, at least 2)."""
    scales = dict(scales or {})
    unknown = sorted(set(scales) - set(SAMPLE_SIZES))
    if unknown:
        raise VaelabError(f"scales: unknown metrics {unknown}; known: {sorted(SAMPLE_SIZES)}")
    out = {}
    for name, sizes in SAMPLE_SIZES.items():
        factor = scales.get(name, scale)
        if factor <= 0:
            raise VaelabError(f"scale of {name} must be > 0, got {factor}")
        out[name] = {key: max(2, round(count * factor)) for key, count in sizes.items()}
    return out


def disentanglement_metrics(
    gt: GroundTruthData,
    representation: Representation,
    random_state: RandomState = 0,
    scale: float = 1.0,
    scales: Mapping[str, float] | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, float]:
    """All five metrics with disentanglement_lib's sample sizes times `scale` (e.g. 0.1 for a
    quick look) — or, per metric, times its entry of `scales` (e.g. {"beta_vae": 0.1}: the
    vote-based metrics encode ~100× more observations than the others), each from its own
    seed drawn from `random_state`; keys are prefixed with the metric's name
    (``beta_vae.eval_accuracy``, ``mig.discrete_mig``, …). `seconds`, when given, receives
    each metric's wall-clock time."""
    sizes = metric_sizes(scale, scales)
    rng = _rng(random_state)
    runs = {  # looked up when called, so a patched metric function is the one used
        "beta_vae": lambda s: beta_vae_score(gt, representation, s, **sizes["beta_vae"]),
        "factor_vae": lambda s: factor_vae_score(gt, representation, s, **sizes["factor_vae"]),
        "mig": lambda s: mig(gt, representation, s, **sizes["mig"]),
        "sap": lambda s: sap_score(gt, representation, s, **sizes["sap"]),
        "dci": lambda s: dci(gt, representation, s, **sizes["dci"]),
    }
    scores = {}
    for name, run in runs.items():
        start = time.perf_counter()
        for key, value in run(_seed(rng)).items():
            scores[f"{name}.{key}"] = value
        if seconds is not None:
            seconds[name] = time.perf_counter() - start
    return scores
