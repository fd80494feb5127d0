"""The rate split into index-code mutual information, total correlation and dimension-wise KL.

For a data distribution p(x), an encoder q(z|x) and a factorised prior p(z) = Π_j p(z_j),
with the aggregate posterior q(z) = E_x q(z|x) and its marginals q(z_j) (Hoffman & Johnson
2016, "ELBO surgery"; Chen et al. 2018, "Isolating sources of disentanglement in VAEs", eq. 2):

    rate = E_x KL(q(z|x) ‖ p(z))
         = E_{x, z~q(z|x)} [log q(z|x) − log q(z)]                  index-code MI  I_q(x; z)
         + E_{z~q(z)}     [log q(z) − Σ_j log q(z_j)]                total correlation (TC)
         + E_{z~q(z)}     [Σ_j log q(z_j) − Σ_j log p(z_j)]          dimension-wise KL

Estimation (`kl_decomposition`): n examples x_1..x_n (the data distribution is taken to be
their empirical distribution), one draw z_i ~ q(z|x_i) per example (or `samples` of them), and
the aggregate posterior of those n examples evaluated exactly,

    log q(z) = logsumexp_m log q(z|x_m) − log n,   log q(z_j) = logsumexp_m log q(z_j|x_mj) − log n

("the full data set as the minibatch"; the evaluation in Chen et al.'s code, which takes all
N training images). Each term is then an average of per-draw log-ratios, so the identity
MI + TC + dwKL = rate holds exactly for every draw (up to floating point), and, since the
densities are exact for the empirical distribution, the only error is Monte-Carlo noise of
the z draws. `rate` is that MC estimate; `rate_analytic` the closed-form mean KL to N(0, I).
Caveats: with the empirical distribution MI ≤ log n (an encoder that separates every example
reaches it), and TC and dwKL of a smooth q(z) are estimated with an n-component mixture, which
is only close when the posteriors overlap; compare models at the same n.

`estimator="mss"` gives instead a training-style minibatch estimate, stratified as in
β-TCVAE's minibatch stratified sampling (Chen et al. 2018, appendix; the weights here are the
plain unbiased ones): the n draws in random minibatches of `minibatch_size` M (the last
n mod M draws spread over them) out of a data set of N = `dataset_size` (default n) examples,

    q(z_i) ≈ (1/N) q(z_i|x_i) + (N − 1)/(N (M − 1)) Σ_{j ≠ i in the minibatch} q(z_i|x_j),

unbiased for q(z_i) (not for its log) and equal to the full estimate when M = N. (Its
sibling, minibatch weighted sampling, log q(z) ≈ logsumexp_minibatch − log(N M) for the joint
and for every marginal alike, is left out: its constant offsets shift TC and dwKL by
±(L − 1) log(N M) — e.g. TC ≈ 84 and dwKL ≈ −89 nats for a rate of 9 — fine for gradients,
meaningless as values.)

For the MI of a whole data set of N examples from n of them drawn uniformly without
replacement, the two estimators bracket it in expectation: "full" is an InfoNCE lower bound
(critic log q(z|x); Poole et al. 2019, "On variational bounds of mutual information", eq. 12),
≤ log n; "mss" with `dataset_size` N and all n as one minibatch (`minibatch_size` n) estimates
q(z_i) without bias, so by Jensen its log is low on average and the MI an upper bound (their
leave-one-out bound, eq. 13, with x_i's own weight 1/N), ≤ log N. `mi_cap` is each one's cap.

`decompose_stratified` tightens that upper bound where the posteriors are sharp (an encoder
that tells most of the n examples apart puts "mss" at log N): for each of R of the n examples
it also evaluates q(z_i|x_m) for a neighbourhood S_i of the data set given by the caller
(e.g. the images one step away on a factor grid, chosen without looking at the n examples)
exactly, and samples only the rest from the other examples,

    q(z_i) ≈ (1/N) [q(z_i|x_i) + Σ_{m ∈ S_i} q(z_i|x_m)]
             + (N − 1)/(N (n − 1)) Σ_{j ≠ i, x_j ∉ S_i} q(z_i|x_j),

still unbiased for q(z_i) (so the MI is still an upper bound in expectation, ≤ log N), but
exact where most of q(z_i)'s mass is. It also gives the "full" lower bound on the same R rows.

Cost: O(n² L) Gaussian log-densities (n = 10,000, L = 10: 10⁹), O(R n L) for R drawn rows,
computed in blocks so memory stays O(BLOCK_ELEMENTS); "mss" costs O(n M L),
`decompose_stratified` O(R (n + K) L) for R rows with neighbourhoods of at most K.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..data.base import ImageSet
from ..distributions import (
    DiagonalGaussian,
    StandardNormal,
    gaussian_log_density,
    kl_divergence,
    kl_per_dimension,
)
from ..distributions.base import Posterior, Prior
from ..errors import VaelabError
from ..inference import standard_error
from .encoding import encode_data

RandomState = np.random.Generator | int

# Values per block (rows of z × components × L, float64) when evaluating log q(z|x_m): a few
# MiB, so that the elementwise passes stay in cache (4× faster than 64 MiB blocks).
BLOCK_ELEMENTS = 2**18


def _refuse_other_densities(q: Posterior, prior: Prior) -> None:
    """The decomposition's densities are those of a diagonal-Gaussian posterior N(q.mean,
    q.variance) and of the prior N(0, I): refuse, in one line, a posterior or a prior whose
    `log_prob` differs from them (checked one standard deviation off the posterior means)."""
    z = q.mean + q.variance.sqrt()
    zero = torch.zeros((), dtype=z.dtype)
    gaussian = {
        "a diagonal-Gaussian posterior": (q, gaussian_log_density(z, q.mean, q.variance.log())),
        "the standard-normal prior N(0, I)": (prior, gaussian_log_density(z, zero, zero)),
    }
    for what, (distribution, log_density) in gaussian.items():
        log_prob = distribution.log_prob(z)
        if not torch.allclose(log_prob, log_density.sum(-1), rtol=1e-4, atol=1e-3):
            raise VaelabError(f"kl_decomposition: needs {what}, and this model's is not")


def _subset(data_or_x, n: int | None, rng: np.random.Generator):
    """At most n examples, chosen at random (in their original order) when there are more."""
    total = len(data_or_x)
    if n is None or n >= total:
        return data_or_x
    index = np.sort(rng.choice(total, size=n, replace=False))
    if isinstance(data_or_x, ImageSet):
        return data_or_x.subset(torch.from_numpy(index))
    return (
        data_or_x[index]
        if isinstance(data_or_x, np.ndarray)
        else data_or_x[torch.from_numpy(index)]
    )


def _log_aggregate(
    z: Tensor,
    mean: Tensor,
    log_var: Tensor,
    log_weight: float,
    own: Tensor | None = None,
    log_weight_own: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """log q(z) [R] and log q(z_j) [R, L] of rows z [R, L] under the mixture of the posteriors
    (mean, log_var) [M, L], component m weighted exp(log_weight) — except component own[r]
    for row r, weighted exp(log_weight_own), when `own` is given. Blocks of rows × components
    of about BLOCK_ELEMENTS values, their logsumexps combined across component blocks."""
    components, latent = mean.shape
    width = min(components, max(1, BLOCK_ELEMENTS // latent))  # components per block
    rows = max(1, BLOCK_ELEMENTS // (latent * width))
    mean_t, log_var_t = mean.T.contiguous()[None], log_var.T.contiguous()[None]  # [1, L, M]
    joint = torch.full((len(z),), -math.inf, dtype=z.dtype)
    marginal = torch.full((len(z), latent), -math.inf, dtype=z.dtype)
    for start in range(0, len(z), rows):
        block = slice(start, start + rows)
        for first in range(0, components, width):
            part = slice(first, first + width)
            lp = gaussian_log_density(z[block, :, None], mean_t[..., part], log_var_t[..., part])
            weight = torch.full((lp.shape[0], lp.shape[2]), log_weight, dtype=lp.dtype)
            if own is not None:
                mine = own[block] - first  # the row's own component, if in this block
                inside = (mine >= 0) & (mine < lp.shape[2])
                weight[torch.arange(len(weight))[inside], mine[inside]] = log_weight_own
            joint[block] = torch.logaddexp(joint[block], torch.logsumexp(lp.sum(1) + weight, dim=1))
            marginal[block] = torch.logaddexp(
                marginal[block], torch.logsumexp(lp + weight[:, None, :], dim=2)
            )
    return joint, marginal


def decompose_posteriors(
    mean: Tensor,
    log_var: Tensor,
    random_state: RandomState = 0,
    samples: int = 1,
    estimator: str = "full",
    minibatch_size: int = 1024,
    dataset_size: int | None = None,
    rows: Tensor | None = None,
) -> dict[str, float | list[float]]:
    """MI / TC / dimension-wise KL of the rate for diagonal-Gaussian posteriors N(mean,
    exp(log_var)) [n, L] of n examples and the prior N(0, I) (see the module docstring).
    `rows` [R] (indices into n; "full" only): draw z for those examples only, against the
    aggregate of all n — with the n examples a whole finite data set, q(z) and q(z_j) are then
    its exact aggregate posterior and marginals, so the terms are unbiased Monte-Carlo
    estimates over the R·samples draws, and log n = H(x) bounds the true MI itself.

    Returns floats rate (MC), mi, tc, dwkl, sum_of_terms (= mi + tc + dwkl, equal to rate by
    construction), rate_analytic (closed form, over the drawn examples), the standard errors
    rate_stderr (of rate − rate_analytic), mi_stderr, tc_stderr, dwkl_stderr over the draws,
    n, samples, draws (R·samples; R = n without `rows`), dwkl_per_dim [L], and mi_cap: the
    largest MI the estimator can return — log n for "full", log `dataset_size` for "mss" (the
    own component weighs 1/n resp. 1/N, so log q(z_i) ≥ log q(z_i|x_i) − log n resp. − log N);
    an MI near it says the examples' posteriors barely overlap: for a sample of a larger data
    set the estimate is then a bound, not a measurement (for a whole data set, the truth).
    """
    if estimator not in ("full", "mss"):
        raise VaelabError(f"kl_decomposition: estimator must be 'full' or 'mss', got {estimator!r}")
    mean, log_var = mean.double(), log_var.double()
    if mean.dim() != 2 or mean.shape != log_var.shape:
        raise VaelabError(
            f"kl_decomposition: need means and log-variances [n, L], got "
            f"{list(mean.shape)} and {list(log_var.shape)}"
        )
    if samples < 1:
        raise VaelabError(f"kl_decomposition: samples must be ≥ 1, got {samples}")
    if rows is not None and estimator != "full":
        raise VaelabError("kl_decomposition: rows need estimator 'full'")
    rng = np.random.default_rng(random_state)
    n, latent = mean.shape
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    eps = torch.from_numpy(rng.standard_normal((samples, len(rows), latent)))
    own = rows.repeat(samples)  # the example each draw comes from
    z = mean[own] + torch.exp(0.5 * log_var[own]) * eps.reshape(-1, latent)
    log_q_cond = gaussian_log_density(z, mean[own], log_var[own]).sum(-1)  # log q(z|x)
    zero = torch.zeros((), dtype=torch.float64)
    log_p = gaussian_log_density(z, zero, zero)  # log p(z_j) [R, L]

    big_n = n if estimator == "full" or dataset_size is None else dataset_size
    if estimator == "full":
        log_q, log_q_dims = _log_aggregate(z, mean, log_var, -math.log(n))
    else:  # minibatch stratified sampling
        if minibatch_size < 2 or big_n < 2 or n < 2:
            raise VaelabError("kl_decomposition: mss needs n, minibatch_size, dataset_size ≥ 2")
        log_other = math.log((big_n - 1) / big_n)
        log_q = torch.empty(samples * n, dtype=torch.float64)
        log_q_dims = torch.empty(samples * n, latent, dtype=torch.float64)
        for s in range(samples):
            order = torch.from_numpy(rng.permutation(n))
            for batch in order.tensor_split(max(1, n // minibatch_size)):  # sizes M..2M−1
                rows = s * n + batch
                joint, marginal = _log_aggregate(
                    z[rows],
                    mean[batch],
                    log_var[batch],
                    log_other - math.log(len(batch) - 1),
                    own=torch.arange(len(batch)),
                    log_weight_own=-math.log(big_n),
                )
                log_q[rows], log_q_dims[rows] = joint, marginal

    mi_r = log_q_cond - log_q
    tc_r = log_q - log_q_dims.sum(-1)
    dwkl_rj = log_q_dims - log_p  # [R, L]
    rate_r = log_q_cond - log_p.sum(-1)
    kl = kl_divergence(DiagonalGaussian(mean[own], log_var[own]), StandardNormal(latent))
    mi, tc, dwkl = float(mi_r.mean()), float(tc_r.mean()), float(dwkl_rj.sum(-1).mean())
    return {
        "rate": float(rate_r.mean()),
        "mi": mi,
        "tc": tc,
        "dwkl": dwkl,
        "sum_of_terms": mi + tc + dwkl,
        "rate_analytic": float(kl.mean()),
        "rate_stderr": standard_error(rate_r - kl),
        "mi_stderr": standard_error(mi_r),
        "tc_stderr": standard_error(tc_r),
        "dwkl_stderr": standard_error(dwkl_rj.sum(-1)),
        "dwkl_per_dim": dwkl_rj.mean(0).tolist(),
        "n": n,
        "samples": samples,
        "draws": len(own),
        "mi_cap": math.log(big_n),
    }


def decompose_stratified(
    mean: Tensor,
    log_var: Tensor,
    rows: Tensor,
    neighbour_mean: Tensor,
    neighbour_log_var: Tensor,
    neighbour_count: Tensor,
    excluded: Tensor,
    dataset_size: int,
    random_state: RandomState = 0,
) -> dict[str, float | list[float]]:
    """MI / TC / dimension-wise KL of the rate with the neighbourhood-stratified estimate of
    q(z) (module docstring), for diagonal-Gaussian posteriors N(mean, exp(log_var)) [n, L] of
    n examples drawn uniformly without replacement from a data set of `dataset_size` N, and
    the prior N(0, I). One draw z_r for each of the R examples `rows` [R] (indices into n);
    row r's neighbourhood S_r (not containing the example itself) is the first
    `neighbour_count`[r] of `neighbour_mean`, `neighbour_log_var` [R, K, L]; `excluded` [R, n]
    (bool) marks the examples j that are the row's own example or lie in S_r (they are left
    out of the sampled part).

    Returns floats rate, mi, tc, dwkl, sum_of_terms (= rate per draw), rate_analytic and the
    standard errors as `decompose_posteriors` (over the R draws), mi_cap = log N; mi_lower,
    the InfoNCE lower bound on the same draws against all n examples, with mi_lower_stderr
    and mi_lower_cap = log n; neighbour_share, the mean fraction of q(z_r)'s estimate that
    the exact neighbourhoods hold; n, rows (R), neighbours (mean |S_r|) and dwkl_per_dim [L].
    """
    mean, log_var = mean.double(), log_var.double()
    neighbour_mean, neighbour_log_var = neighbour_mean.double(), neighbour_log_var.double()
    n, latent = mean.shape
    rows = torch.as_tensor(rows, dtype=torch.long)
    count = torch.as_tensor(neighbour_count, dtype=torch.long)
    excluded = torch.as_tensor(excluded, dtype=torch.bool)
    if n < 2 or dataset_size < n:
        raise VaelabError("kl_decomposition: stratified needs n ≥ 2 examples of a data set ≥ n")
    if neighbour_mean.shape[:1] != rows.shape or excluded.shape != (len(rows), n):
        raise VaelabError(
            f"kl_decomposition: {len(rows)} rows need neighbours [R, K, L] and excluded "
            f"[R, n]; got {list(neighbour_mean.shape)} and {list(excluded.shape)}"
        )
    rng = np.random.default_rng(random_state)
    eps = torch.from_numpy(rng.standard_normal((len(rows), latent)))
    own_mean, own_log_var = mean[rows], log_var[rows]
    z = own_mean + torch.exp(0.5 * own_log_var) * eps  # [R, L]
    own = gaussian_log_density(z, own_mean, own_log_var)  # [R, L]
    log_n, log_big_n = math.log(n), math.log(dataset_size)
    log_other = math.log((dataset_size - 1) / (dataset_size * (n - 1)))
    padding = torch.arange(neighbour_mean.shape[1])[None] >= count[:, None]  # [R, K]
    near = gaussian_log_density(z[:, None], neighbour_mean, neighbour_log_var)  # [R, K, L]
    near = near.masked_fill(padding[..., None], -math.inf)
    # the components of q̂(z_r) (joint: densities summed over L; marginals: per dimension),
    # weighted 1/N for the exact ones and (N − 1)/(N (n − 1)) for the sampled ones
    exact_joint = torch.logsumexp(torch.cat([own.sum(1, keepdim=True), near.sum(2)], 1), 1)
    exact_dims = torch.logsumexp(torch.cat([own[:, None], near], 1), 1)  # [R, L]
    near_joint = torch.logsumexp(near.sum(2), 1) - log_big_n
    exact_joint, exact_dims = exact_joint - log_big_n, exact_dims - log_big_n
    block = max(1, BLOCK_ELEMENTS // max(1, mean.numel()))
    mean_t, log_var_t = mean.T.contiguous()[None], log_var.T.contiguous()[None]  # [1, L, n]
    log_q, log_q_dims, log_q_sample = [], [], []
    for start in range(0, len(rows), block):
        b = slice(start, start + block)
        lp = gaussian_log_density(z[b, :, None], mean_t, log_var_t)  # [B, L, n]
        log_q_sample.append(torch.logsumexp(lp.sum(1), dim=1) - log_n)  # the n-example mixture
        sampled = lp.masked_fill(excluded[b, None, :], -math.inf)
        sampled_joint = torch.logsumexp(sampled.sum(1), dim=1) + log_other
        log_q.append(torch.logaddexp(exact_joint[b], sampled_joint))
        sampled_dims = torch.logsumexp(sampled, dim=2) + log_other
        log_q_dims.append(torch.logaddexp(exact_dims[b], sampled_dims))
    log_q, log_q_dims = torch.cat(log_q), torch.cat(log_q_dims)
    zero = torch.zeros((), dtype=torch.float64)
    log_p = gaussian_log_density(z, zero, zero)
    log_q_cond = own.sum(-1)
    mi_r, tc_r = log_q_cond - log_q, log_q - log_q_dims.sum(-1)
    dwkl_rj = log_q_dims - log_p
    rate_r = log_q_cond - log_p.sum(-1)
    lower_r = log_q_cond - torch.cat(log_q_sample)
    kl = kl_divergence(DiagonalGaussian(own_mean, own_log_var), StandardNormal(latent))
    mi, tc, dwkl = float(mi_r.mean()), float(tc_r.mean()), float(dwkl_rj.sum(-1).mean())
    return {
        "rate": float(rate_r.mean()),
        "mi": mi,
        "tc": tc,
        "dwkl": dwkl,
        "sum_of_terms": mi + tc + dwkl,
        "rate_analytic": float(kl.mean()),
        "rate_stderr": standard_error(rate_r - kl),
        "mi_stderr": standard_error(mi_r),
        "tc_stderr": standard_error(tc_r),
        "dwkl_stderr": standard_error(dwkl_rj.sum(-1)),
        "dwkl_per_dim": dwkl_rj.mean(0).tolist(),
        "mi_cap": log_big_n,
        "mi_lower": float(lower_r.mean()),
        "mi_lower_stderr": standard_error(lower_r),
        "mi_lower_cap": log_n,
        "neighbour_share": float(torch.exp(near_joint - log_q).mean()),
        "n": n,
        "rows": len(rows),
        "neighbours": float(count.double().mean()),
    }


def kl_decomposition(
    model,
    data_or_x: ImageSet | Tensor | np.ndarray,
    n: int | None = 10_000,
    random_state: RandomState = 0,
    beta: float | None = None,
    samples: int = 1,
    estimator: str = "full",
    minibatch_size: int = 1024,
    dataset_size: int | None = None,
    batch_size: int = 500,
) -> dict[str, float | list[float]]:
    """Index-code MI, total correlation and dimension-wise KL of a VAE's rate (diagonal-Gaussian
    posterior, standard-normal prior) on at most `n` examples of `data_or_x` (an ImageSet or
    inputs [N, ...]; a random subset of n when there are more, all when n is None), at `beta`
    for a β-conditional model. See `decompose_posteriors` for the returned dict and the module
    docstring for the estimators."""
    rng = np.random.default_rng(random_state)
    q = encode_data(model, _subset(data_or_x, n, rng), beta, batch_size)
    _refuse_other_densities(q, model.prior)
    return decompose_posteriors(
        q.mean, q.variance.double().log(), rng, samples, estimator, minibatch_size, dataset_size
    )


def posterior_mean_variance(
    model, data_or_x: ImageSet | Tensor | np.ndarray, beta: float | None = None
) -> Tensor:
    """Cov_x(E_q[z_j | x]) for every latent dimension j → float64 [L] (unbiased variance of the
    encoder means over the examples)."""
    mean = encode_data(model, data_or_x, beta).mean.double()
    if len(mean) < 2:
        raise VaelabError("active units: need at least 2 examples")
    return mean.var(0, unbiased=True)


def latent_usage(
    model, data_or_x: ImageSet | Tensor | np.ndarray, threshold: float = 0.01, beta=None
) -> dict:
    """How the latents are used over `data_or_x`: the active units (`active_units`), the
    variance of every encoder mean, and the mean over examples of KL(q(z_j|x) ‖ p(z_j)) of
    every dimension j (nats; their sum is the mean rate of an analytic-KL model)."""
    q = encode_data(model, data_or_x, beta)
    if len(q.mean) < 2:
        raise VaelabError("active units: need at least 2 examples")
    variance = q.mean.double().var(0, unbiased=True)
    kl = kl_per_dimension(q, model.prior).double().mean(0)
    return {
        "active_units": int((variance > threshold).sum()),
        "threshold": threshold,
        "mean_variance": variance.tolist(),
        "kl_per_dimension": kl.tolist(),
    }


def active_units(
    model,
    data_or_x: ImageSet | Tensor | np.ndarray,
    threshold: float = 0.01,
    beta: float | None = None,
) -> int:
    """Number of active latent units (Burda et al. 2016, "Importance weighted autoencoders",
    §5.2): dimensions whose encoder mean varies with x, Cov_x(E_q[z_j|x]) > `threshold`."""
    return int((posterior_mean_variance(model, data_or_x, beta) > threshold).sum())
