"""Exponential-family harmoniums (RBMs) with binary hidden units (DESIGN §1c).

Theorem 1 of Shekhovtsov, Schlesinger & Flach (ICLR 2022): a VAE whose decoder p(x|z) and
encoder q(z|x) are exponential families has a tight ELBO only on the *consistent set*, the
EF harmonium

    p(x, z) ∝ h(x) h'(z) exp(ν(x)ᵀ W ψ(z) + aᵀν(x) + bᵀψ(z)),

whose conditionals are p(x|z) with natural parameters Wψ(z) + a and, for binary z (ψ(z) = z,
h' = 1), p(z|x) = Π_j Bern(z_j; σ(Wᵀν(x) + b)_j). Three members are implemented:

* ``GaussianBernoulliRBM``: p(x, z) ∝ exp(−‖x − a‖²/(2σ²) + xᵀWz/σ² + bᵀz), x ∈ R^D. Its
  marginal p(x) is a mixture of 2^H Gaussians N(a + Wz, σ²I) with weights
  ∝ exp(bᵀz + (‖a + Wz‖² − ‖a‖²)/(2σ²)) (complete the square), so log Z is exact by
  enumerating z with the Gaussian integral done analytically.
* ``BernoulliBernoulliRBM``: p(x, z) ∝ exp(xᵀWz + aᵀx + bᵀz), x ∈ {0,1}^D; log Z is exact by
  enumerating the smaller layer with the other summed analytically (a softplus per unit).
* ``MultinomialBernoulliRBM`` (the Replicated Softmax of Salakhutdinov & Hinton 2009, the
  consistent set of a semantic-hashing VAE, §4.3): word counts x ∈ N^K of a document of length
  n = Σ_k x_k, p(x, z | n) ∝ h(x) exp(xᵀWz + aᵀx + c(n)·bᵀz), h(x) = n!/Π_k x_k!, c(n) = 1
  (or n with ``scale_hidden_bias_by_length``); log Z(n) is exact by enumerating z with the
  multinomial sum done analytically (the multinomial theorem). Every normaliser depends on n,
  so AIS runs per length, on ``rbm.at_length(n)``.

All give free energies F(x) = −log Σ_z exp(−E(x, z)) in closed form, so
log p(x) = −F(x) − log Z. When log Z cannot be enumerated (more than 16 units in the relevant
layer), ``ais_log_partition`` estimates it by annealed importance sampling (the engine of
``vaelab.inference``), for which all three implement the annealing interface ``Annealable``
(``base_log_partition``, ``sample_base``, ``log_unnormalised_marginal``, ``gibbs_at``): the
path is geometric between the base model "W = 0" (visible parameter ``base``, default the
RBM's own a; hidden bias b) and the RBM, i.e. the RBM with weights βW and visible parameter
(1 − β)·base + β·a (for the multinomial RBM at a fixed length n), with block-Gibbs
transitions. A base fitted to data (``base_from_data``) is Salakhutdinov & Murray's (2008).

Fitting — exact likelihood, CD-k, PCD — is in ``vaelab.models.harmonium_objectives`` (the
objectives) and ``vaelab.evaluation.harmonium_fit`` (their fits by the one trainer).

Random numbers come only from explicit ``torch.Generator`` objects where one is passed, so
seeded runs repeat exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributions.bernoulli_latent import FactorisedBernoulli, all_binary_codes
from ..distributions.exponential_family import BernoulliEF, GaussianEF, MultinomialEF
from ..distributions.normal import LOG_2PI
from ..inference import AISResult, anneal, as_schedule

MAX_ENUMERABLE = 16  # 2^16 = 65,536 states
_CHUNK = 4096  # codes per block when enumerating (bounds memory at 2^16 states)

__all__ = [
    "Annealable",
    "AtLength",
    "BernoulliBernoulliRBM",
    "GaussianBernoulliRBM",
    "GibbsPath",
    "Harmonium",
    "MultinomialBernoulliRBM",
    "ais_log_likelihood",
    "ais_log_partition",
]


def _logsumexp_over_codes(n_bits: int, fn: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
    """logsumexp over every code c ∈ {0,1}^n of fn(c) (fn maps [K, n] → [K]), in blocks."""
    codes = all_binary_codes(n_bits, device=like.device).to(like.dtype)
    parts = [torch.logsumexp(fn(block), dim=0) for block in codes.split(_CHUNK)]
    return torch.logsumexp(torch.stack(parts), dim=0)


def _too_many(what: str, n: int) -> ValueError:
    return ValueError(
        f"{what} has {n} units: 2^{n} states are too many to enumerate (max "
        f"{MAX_ENUMERABLE}); estimate log Z with vaelab.models.harmonium.ais_log_partition"
    )


class Harmonium(nn.Module):
    """Code shared by harmoniums with H binary hidden units z (ψ(z) = z).

    Along the annealing path (β = 1: the RBM itself) the hidden units sum out of
    p_0^{1−β} p_1^β in closed form:

        log f_β(x) = visible_potential(x, β, base) + Σ_j softplus(hidden_logits(x, β)_j),

    and F(x) = −log f_1(x). Subclasses define ``hidden_logits``, ``visible_potential``,
    ``draw_visible`` (a sample of the visible family at a mean or logits; the multinomial RBM
    instead overrides the samplers, which need the documents' lengths), ``negative_energy`` and
    ``log_partition``.
    """

    visible: int
    hidden: int

    def _init_parameters(
        self, visible: int, hidden: int, weight_scale: float, generator: torch.Generator | None
    ) -> None:
        if visible < 1 or hidden < 1:
            raise ValueError(
                f"need at least one visible and one hidden unit, got {visible, hidden}"
            )
        self.visible, self.hidden = visible, hidden
        self.W = nn.Parameter(weight_scale * torch.randn(visible, hidden, generator=generator))
        self.a = nn.Parameter(torch.zeros(visible))
        self.b = nn.Parameter(torch.zeros(hidden))

    # ----- subclass interface
    def hidden_logits(self, x: Tensor, beta: float = 1.0) -> Tensor:
        raise NotImplementedError

    def visible_potential(self, x: Tensor, beta: float = 1.0, base: Tensor | None = None) -> Tensor:
        """The visible units' term of log f_β(x), per example [B]."""
        raise NotImplementedError

    def draw_visible(self, parameter: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x from the visible family at its mean or logits `parameter` [..., D]."""
        raise NotImplementedError

    def log_partition(self) -> Tensor:
        raise NotImplementedError

    # ----- shared
    def posterior(self, x: Tensor) -> FactorisedBernoulli:
        """p(z|x) = Π_j Bern(z_j; σ(b + Wᵀν(x))_j), exact."""
        return FactorisedBernoulli(self.hidden_logits(x))

    def sample_hidden(
        self, x: Tensor, beta: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.hidden_logits(x, beta)), generator=generator)

    @torch.no_grad()
    def gibbs(self, x: Tensor, steps: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """`steps` block-Gibbs sweeps x → z ~ p(z|x) → x ~ p(x|z); returns the last x."""
        for _ in range(steps):
            x = self.gibbs_at(x, 1.0, generator=generator)
        return x

    def visible_parameter(self, z: Tensor, beta: float = 1.0, base: Tensor | None = None) -> Tensor:
        """a_β + βWz, a_β = (1 − β)·base + β·a: the mean (Gaussian) or logits of p_β(x|z); at
        β = 1, a + Wz, that of p(x|z)."""
        if beta == 1.0:
            return self.a + z @ self.W.T
        return self._visible_at(beta, base) + beta * (z @ self.W.T)

    def sample_visible(
        self,
        z: Tensor,
        beta: float = 1.0,
        base: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x ~ p_β(x|z) (β = 1: p(x|z))."""
        return self.draw_visible(self.visible_parameter(z, beta, base), generator)

    def _log_marginal(self, x: Tensor, beta: float, base: Tensor | None) -> Tensor:
        softplus = F.softplus(self.hidden_logits(x, beta)).sum(-1)
        return self.visible_potential(x, beta, base) + softplus

    def free_energy(self, x: Tensor) -> Tensor:
        """F(x) = −log Σ_z exp(−E(x, z)), per example [B] (differentiable)."""
        return -self._log_marginal(x, 1.0, None)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Exact log p(x) = −F(x) − log Z per example [B] (differentiable)."""
        return -self.free_energy(x) - self.log_partition()

    @property
    def enumerable(self) -> bool:
        """Whether ``log_partition`` is exact (enumeration over ≤ 16 units)."""
        raise NotImplementedError

    # ----- the annealing interface (``Annealable``)
    def _base(self, base: Tensor | None) -> Tensor:
        return self.a.detach() if base is None else base.to(self.a)

    def _visible_at(self, beta: float, base: Tensor | None) -> Tensor:
        return (1.0 - beta) * self._base(base) + beta * self.a

    @torch.no_grad()
    def gibbs_at(
        self,
        x: Tensor,
        beta: float,
        base: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One Gibbs sweep z ~ p_β(z|x), x' ~ p_β(x'|z), leaving p_β(x) invariant (the RBM with
        βW and visible parameter (1−β)base + βa; β = 1: the RBM, used by ``gibbs``)."""
        z = self.sample_hidden(x, beta, generator)
        return self._visible_after(x, z, beta, base, generator)

    def _visible_after(self, x: Tensor, z: Tensor, beta: float, base, generator) -> Tensor:
        """The sweep's visible step from x given z: x' ~ p_β(x'|z)."""
        return self.sample_visible(z, beta, base, generator)

    @torch.no_grad()
    def sample_base(
        self, n: int, base: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n exact samples of the base p_0(x): the visible family at `base` (default a)."""
        return self.draw_visible(self._base(base).expand(n, self.visible), generator)

    @torch.no_grad()
    def log_unnormalised_marginal(
        self, x: Tensor, beta: float, base: Tensor | None = None
    ) -> Tensor:
        """log f_β(x) [B] (β = 0: the base; β = 1: −F(x))."""
        return self._log_marginal(x, beta, base)

    def check_data(self, x: Tensor) -> None:
        """Refuse data that is not [N, visible] (and, per subclass, not in the support)."""
        if x.dim() != 2 or x.shape[1] != self.visible:
            raise ValueError(f"expected data of shape [N, {self.visible}], got {list(x.shape)}")


class GaussianBernoulliRBM(Harmonium):
    """p(x, z) ∝ exp(−‖x − a‖²/(2σ²) + xᵀWz/σ² + bᵀz), x ∈ R^D, z ∈ {0,1}^H, σ shared.

    In EF form ν(x) = (x, x²): p(x|z) = N(a + Wz, σ²I), i.e. natural parameters
    ((a + Wz)/σ², −1/(2σ²)) — affine in z, as Theorem 1 requires — and
    p(z|x) = Π Bern(σ(b + Wᵀx/σ²)). σ is a buffer, or a parameter (log σ) with learn_sigma.
    """

    visible_family = GaussianEF()  # ν(x) = (x, x²)

    def __init__(
        self,
        visible: int,
        hidden: int,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        weight_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self._init_parameters(visible, hidden, weight_scale, generator)
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> Tensor:
        return self.log_sigma.exp()

    @property
    def enumerable(self) -> bool:
        return self.hidden <= MAX_ENUMERABLE

    def hidden_logits(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """b + β Wᵀx/σ² (β = 1: the posterior's logits)."""
        return self.b + beta * (x @ self.W) * torch.exp(-2.0 * self.log_sigma)

    def conditional_mean(self, z: Tensor) -> Tensor:
        """E[x|z] = a + Wz."""
        return self.visible_parameter(z)

    def conditional_natural_parameters(self, z: Tensor) -> Tensor:
        """p(x|z) in ``GaussianEF`` form: ((a + Wz)/σ², −1/(2σ²)), shape [..., 2D]."""
        return GaussianEF.natural_parameters(self.conditional_mean(z), self.log_sigma)

    def draw_visible(self, mean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ N(mean, σ²I)."""
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + self.sigma * noise

    def visible_potential(self, x: Tensor, beta: float = 1.0, base: Tensor | None = None) -> Tensor:
        """−[(1−β)‖x − base‖² + β‖x − a‖²]/(2σ²); so F(x) = ‖x − a‖²/(2σ²) − Σ_j softplus(b_j +
        (Wᵀx)_j/σ²)."""
        inv_var = torch.exp(-2.0 * self.log_sigma)
        to_base = ((x - self._base(base)) ** 2).sum(-1)
        far = (1.0 - beta) * to_base + beta * ((x - self.a) ** 2).sum(-1)
        return -0.5 * inv_var * far

    def negative_energy(self, x: Tensor, z: Tensor) -> Tensor:
        """−E(x, z) = −‖x − a‖²/(2σ²) + xᵀWz/σ² + bᵀz (broadcast over leading dimensions)."""
        inv_var = torch.exp(-2.0 * self.log_sigma)
        quadratic = -0.5 * inv_var * ((x - self.a) ** 2).sum(-1)
        return quadratic + inv_var * ((x @ self.W) * z).sum(-1) + z @ self.b

    def _component_scores(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(bᵀz + (‖a + Wz‖² − ‖a‖²)/(2σ²), a + Wz) for codes z [K, H]: unnormalised log
        weights of the mixture components (without the common (2πσ²)^{D/2}) and their means."""
        means = self.conditional_mean(z)
        inv_var = torch.exp(-2.0 * self.log_sigma)
        lift = 0.5 * inv_var * ((means**2).sum(-1) - (self.a**2).sum())
        return z @ self.b + lift, means

    def log_partition(self) -> Tensor:
        """log Z = logsumexp_z [bᵀz + (‖a + Wz‖² − ‖a‖²)/(2σ²)] + (D/2) log(2πσ²), exact."""
        if not self.enumerable:
            raise _too_many("the hidden layer", self.hidden)
        total = _logsumexp_over_codes(self.hidden, lambda z: self._component_scores(z)[0], self.W)
        return total + 0.5 * self.visible * (LOG_2PI + 2.0 * self.log_sigma)

    def mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        """p(x) = Σ_z π_z N(x; a + Wz, σ²I): (log π [2^H], means [2^H, D], σ), codes in
        ``all_binary_codes`` order."""
        if not self.enumerable:
            raise _too_many("the hidden layer", self.hidden)
        codes = all_binary_codes(self.hidden, device=self.W.device).to(self.W.dtype)
        scores, means = self._component_scores(codes)
        return scores - torch.logsumexp(scores, dim=0), means, self.sigma

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, gibbs_steps: int = 1000
    ) -> Tensor:
        """n exact samples of p(x) (pick a component, then a Gaussian) when H ≤ 16; otherwise
        `gibbs_steps` Gibbs sweeps from N(a, σ²I) (approximate)."""
        if not self.enumerable:
            return self.gibbs(self.sample_base(n, generator=generator), gibbs_steps, generator)
        log_weights, means, sigma = self.mixture()
        k = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
        return self.draw_visible(means[k], generator)

    # ----- the annealing interface (``Annealable``)
    def base_log_partition(self, base: Tensor | None = None) -> Tensor:
        """log Z of the base p_0(x, z) ∝ exp(−‖x − base‖²/(2σ²) + bᵀz)."""
        with torch.no_grad():
            return 0.5 * self.visible * (LOG_2PI + 2.0 * self.log_sigma) + F.softplus(self.b).sum()

    def base_from_data(self, data: Tensor) -> Tensor:
        """A base close to the data for AIS: the data mean as the base's visible mean."""
        return data.mean(0).to(self.a)


class BernoulliBernoulliRBM(Harmonium):
    """p(x, z) ∝ exp(xᵀWz + aᵀx + bᵀz), x ∈ {0,1}^D, z ∈ {0,1}^H (the binary RBM).

    p(x|z) = Π Bern(σ(a + Wz)) and p(z|x) = Π Bern(σ(b + Wᵀx)).
    """

    visible_family = BernoulliEF()  # ν(x) = x

    def __init__(
        self,
        visible: int,
        hidden: int,
        weight_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self._init_parameters(visible, hidden, weight_scale, generator)

    @property
    def enumerable(self) -> bool:
        return min(self.visible, self.hidden) <= MAX_ENUMERABLE

    def hidden_logits(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """b + βWᵀx (β = 1: the posterior's logits)."""
        return self.b + beta * (x @ self.W)

    def visible_logits(self, z: Tensor) -> Tensor:
        """a + Wz: the logits of p(x|z) (its ``BernoulliEF`` natural parameters)."""
        return self.visible_parameter(z)

    conditional_natural_parameters = visible_logits

    def draw_visible(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ Π Bern(σ(logits))."""
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)

    def visible_potential(self, x: Tensor, beta: float = 1.0, base: Tensor | None = None) -> Tensor:
        """a_βᵀx, a_β = (1 − β)·base + β·a; so F(x) = −aᵀx − Σ_j softplus(b_j + (Wᵀx)_j)."""
        return x @ self._visible_at(beta, base)

    def negative_energy(self, x: Tensor, z: Tensor) -> Tensor:
        """−E(x, z) = xᵀWz + aᵀx + bᵀz (broadcast over leading dimensions)."""
        return ((x @ self.W) * z).sum(-1) + x @ self.a + z @ self.b

    def hidden_free_energy(self, z: Tensor) -> Tensor:
        """F'(z) = −bᵀz − Σ_i softplus(a_i + (Wz)_i) = −log Σ_x exp(−E(x, z))."""
        return -(z @ self.b) - F.softplus(self.visible_logits(z)).sum(-1)

    def log_partition(self, layer: str = "auto") -> Tensor:
        """Exact log Z by enumerating one layer (`"hidden"`, `"visible"`, or `"auto"`: the
        smaller) and summing the other analytically."""
        if layer == "auto":
            layer = "hidden" if self.hidden <= self.visible else "visible"
        if layer == "hidden":
            if self.hidden > MAX_ENUMERABLE:
                raise _too_many("the hidden layer", self.hidden)
            return _logsumexp_over_codes(self.hidden, lambda z: -self.hidden_free_energy(z), self.W)
        if layer == "visible":
            if self.visible > MAX_ENUMERABLE:
                raise _too_many("the visible layer", self.visible)
            return _logsumexp_over_codes(self.visible, lambda x: -self.free_energy(x), self.W)
        raise ValueError(f'layer must be "auto", "hidden" or "visible", got {layer!r}')

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, gibbs_steps: int = 1000
    ) -> Tensor:
        """n exact samples of p(x) when a layer has ≤ 16 units (draw the smaller layer from
        its marginal, then the other given it); otherwise `gibbs_steps` Gibbs sweeps."""
        if not self.enumerable:
            return self.gibbs(self.sample_base(n, generator=generator), gibbs_steps, generator)
        dtype, device = self.W.dtype, self.W.device
        if self.hidden <= self.visible:
            codes = all_binary_codes(self.hidden, device=device).to(dtype)
            log_p = -self.hidden_free_energy(codes)
        else:
            codes = all_binary_codes(self.visible, device=device).to(dtype)
            log_p = -self.free_energy(codes)
        k = torch.multinomial(torch.softmax(log_p, 0), n, replacement=True, generator=generator)
        if self.hidden <= self.visible:
            return self.sample_visible(codes[k], generator=generator)
        return codes[k]

    # ----- the annealing interface (``Annealable``)
    def base_log_partition(self, base: Tensor | None = None) -> Tensor:
        """log Z of the base p_0(x, z) ∝ exp(baseᵀx + bᵀz): Σ softplus(base) + Σ softplus(b)."""
        with torch.no_grad():
            return F.softplus(self._base(base)).sum() + F.softplus(self.b).sum()

    def base_from_data(self, data: Tensor, smoothing: float = 1.0) -> Tensor:
        """Salakhutdinov & Murray's base for AIS: logits of the (smoothed) mean of each pixel."""
        p = (data.sum(0) + smoothing) / (len(data) + 2.0 * smoothing)
        return torch.logit(p).to(self.a)


def _multinomial_counts(
    logits: Tensor, lengths: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Counts x ~ Mult(n_i, softmax(logits_i)) per row i: logits [B, K], lengths [B] → [B, K].

    Draws max(n) words per row (``torch.multinomial``, with replacement) and counts the first
    n_i of them, so every row keeps its own length."""
    lengths = lengths.round().long().expand(logits.shape[0])
    counts = torch.zeros_like(logits)
    longest = int(lengths.max()) if len(lengths) else 0
    if longest == 0:
        return counts
    words = torch.multinomial(
        torch.softmax(logits, -1), longest, replacement=True, generator=generator
    )
    keep = torch.arange(longest, device=logits.device) < lengths[:, None]
    return counts.scatter_add_(1, words, keep.to(logits.dtype))


class MultinomialBernoulliRBM(Harmonium):
    """Multinomial–Bernoulli RBM over word counts (Replicated Softmax): for a document of
    length n = Σ_k x_k,

        p(x, z | n) = h(x) exp(xᵀWz + aᵀx + c(n)·bᵀz) / Z(n),   h(x) = n! / Π_k x_k!,

    x ∈ N^K (counts over a vocabulary of K words), z ∈ {0,1}^H, c(n) = 1 — the EF harmonium
    of a multinomial decoder and a factorised Bernoulli encoder (Shekhovtsov et al. §4.3) —
    or c(n) = n with ``scale_hidden_bias_by_length`` (Salakhutdinov & Hinton 2009). Then

        p(x|z, n) = Mult(n, softmax(a + Wz)),   p(z|x) = Π_j Bern(z_j; σ(c(n)b + Wᵀx)_j):

    the encoder is linear in the counts (not in the frequencies x/n). The length-scaled model
    is the unscaled one with W + 1bᵀ and hidden bias 0 (since n = 1ᵀx), so it is no larger a
    family; it only parameterises it differently.

    Every normaliser depends on n: ``log_partition(n)``, ``log_likelihood(x)`` (lengths read
    from x, one log Z per distinct length), sampling keeps each document's length. AIS:
    ``ais_log_partition(rbm.at_length(n), ...)`` (an ``AtLength`` view implementing the
    annealing interface for documents of length n), or ``rbm.ais_log_likelihood(x, ...)``,
    which runs AIS once per distinct length in x.
    """

    visible_family = MultinomialEF()  # ν(x) = x, the counts

    def __init__(
        self,
        vocab: int,
        hidden: int,
        scale_hidden_bias_by_length: bool = False,
        weight_scale: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self._init_parameters(vocab, hidden, weight_scale, generator)
        self.scale_hidden_bias_by_length = scale_hidden_bias_by_length

    @property
    def vocab(self) -> int:
        """K, the vocabulary's size (the visible units)."""
        return self.visible

    @property
    def enumerable(self) -> bool:
        return self.hidden <= MAX_ENUMERABLE

    @staticmethod
    def lengths(x: Tensor) -> Tensor:
        """Document lengths n = Σ_k x_k, shape x.shape[:-1]."""
        return x.sum(-1)

    def _bias_scale(self, lengths: Tensor) -> Tensor:
        """c(n): n with ``scale_hidden_bias_by_length``, else 1."""
        return lengths if self.scale_hidden_bias_by_length else torch.ones_like(lengths)

    def hidden_logits(self, x: Tensor, beta: float = 1.0) -> Tensor:
        """c(n)·b + βWᵀx (β = 1: the posterior's logits; linear in the counts x)."""
        return self._bias_scale(self.lengths(x))[..., None] * self.b + beta * (x @ self.W)

    def visible_logits(self, z: Tensor) -> Tensor:
        """a + Wz: the logits of p(x|z, n) = Mult(n, softmax(a + Wz)) (its ``MultinomialEF``
        natural parameters)."""
        return self.visible_parameter(z)

    conditional_natural_parameters = visible_logits

    def sample_visible(
        self,
        z: Tensor,
        length: int | Tensor,
        beta: float = 1.0,
        base: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x ~ Mult(n, softmax(a_β + βWz)), a_β = (1 − β)·base + β·a (β = 1: p(x|z, n));
        `length`: one n for all rows, or one per row of z [B, H]."""
        logits = self.visible_parameter(z, beta, base)
        return _multinomial_counts(logits, torch.as_tensor(length, device=z.device), generator)

    def negative_energy(self, x: Tensor, z: Tensor) -> Tensor:
        """−E(x, z) = log h(x) + xᵀWz + aᵀx + c(n)·bᵀz (broadcast over leading dimensions;
        h(x) included, so that F(x) = −log Σ_z exp(−E(x, z)))."""
        bias = self._bias_scale(self.lengths(x)) * (z @ self.b)
        log_h = self.visible_family.log_base_measure(x)
        return log_h + ((x @ self.W) * z).sum(-1) + x @ self.a + bias

    def visible_potential(self, x: Tensor, beta: float = 1.0, base: Tensor | None = None) -> Tensor:
        """log h(x) + a_βᵀx, a_β = (1 − β)·base + β·a (at each document's own length); so
        F(x) = −log h(x) − aᵀx − Σ_j softplus(c(n)b_j + (Wᵀx)_j)."""
        return self.visible_family.log_base_measure(x) + x @ self._visible_at(beta, base)

    def _code_scores(self, z: Tensor, lengths: Tensor) -> Tensor:
        """log Σ_x h(x) exp(−E(x, z)) = c(n)·bᵀz + n·logsumexp_k(a + Wz)_k (the multinomial
        theorem) for codes z [K, H] and lengths n [L] → [K, L]: p(z | n) up to Z(n)."""
        bias = (z @ self.b)[:, None] * self._bias_scale(lengths)[None]
        return bias + torch.logsumexp(self.visible_logits(z), -1)[:, None] * lengths[None]

    def log_partition(self, length: int | Tensor) -> Tensor:
        """Exact log Z(n) = logsumexp_z [c(n)·bᵀz + n·logsumexp_k(a + Wz)_k] for documents of
        length n (an int, or a tensor of lengths: one log Z each, same shape)."""
        if not self.enumerable:
            raise _too_many("the hidden layer", self.hidden)
        lengths = torch.as_tensor(length, dtype=self.W.dtype, device=self.W.device)
        if (lengths < 0).any():
            raise ValueError(f"document lengths must be non-negative, got {length}")
        flat = lengths.reshape(-1)
        log_z = _logsumexp_over_codes(self.hidden, lambda z: self._code_scores(z, flat), self.W)
        return log_z.reshape(lengths.shape)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Exact log p(x | n) = −F(x) − log Z(n) per document [B], n = Σ_k x_k (documents
        grouped by length: one log Z per distinct length; differentiable)."""
        distinct, index = self.lengths(x).unique(return_inverse=True)
        return -self.free_energy(x) - self.log_partition(distinct)[index]

    def _visible_after(self, x: Tensor, z: Tensor, beta: float, base, generator) -> Tensor:
        """x' ~ p_β(x'|z, n) with each document's length n kept: the sweep leaves p_β(x | n)
        invariant."""
        return self.sample_visible(z, self.lengths(x), beta, base, generator)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        length: int | Tensor,
        generator: torch.Generator | None = None,
        gibbs_steps: int = 1000,
    ) -> Tensor:
        """n documents of p(x | length) (`length`: an int or one per document [n]): exact when
        H ≤ 16 (z from p(z | length), then the words); otherwise `gibbs_steps` Gibbs sweeps
        from the base Mult(length, softmax(a))."""
        lengths = torch.as_tensor(length, dtype=self.W.dtype, device=self.W.device).expand(n)
        if not self.enumerable:
            start = _multinomial_counts(self.a.detach().expand(n, self.visible), lengths, generator)
            return self.gibbs(start, gibbs_steps, generator)
        codes = all_binary_codes(self.hidden, device=self.W.device).to(self.W.dtype)
        distinct, index = lengths.unique(return_inverse=True)
        probs = torch.softmax(self._code_scores(codes, distinct), 0).T  # [L, 2^H]
        k = torch.multinomial(probs[index], 1, generator=generator).squeeze(-1)
        return self.sample_visible(codes[k], lengths, generator=generator)

    def check_data(self, x: Tensor) -> None:
        super().check_data(x)
        if (x < 0).any() or (x != x.round()).any():
            raise ValueError("expected word counts: non-negative integers")

    # ----- the annealing interface (``Annealable``), per document length
    def at_length(self, length: int) -> AtLength:
        """The RBM restricted to documents of `length` words, for ``ais_log_partition``."""
        return AtLength(self, length)

    @staticmethod
    def _require(length: int | None) -> int:
        if length is None:
            raise ValueError(
                "the multinomial RBM's normaliser depends on the document length: anneal "
                "rbm.at_length(n), e.g. ais_log_partition(rbm.at_length(n), ...)"
            )
        return length

    def base_log_partition(
        self, base: Tensor | None = None, *, length: int | None = None
    ) -> Tensor:
        """log Z_0(n) of the base p_0(x, z | n) ∝ h(x) exp(baseᵀx + c(n)·bᵀz):
        n·logsumexp(base) + Σ_j softplus(c(n)·b_j)."""
        n = torch.tensor(float(self._require(length)), dtype=self.b.dtype, device=self.b.device)
        with torch.no_grad():
            hidden = F.softplus(self._bias_scale(n) * self.b).sum()
            return n * torch.logsumexp(self._base(base), 0) + hidden

    @torch.no_grad()
    def sample_base(
        self,
        n: int,
        base: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        length: int | None = None,
    ) -> Tensor:
        """n documents of `length` words from the base, Mult(length, softmax(base))."""
        lengths = torch.tensor(float(self._require(length)), device=self.a.device)
        return _multinomial_counts(self._base(base).expand(n, self.visible), lengths, generator)

    def base_from_data(self, data: Tensor, smoothing: float = 1.0) -> Tensor:
        """A base close to the data for AIS: the log of the smoothed unigram frequencies (the
        maximum-likelihood multinomial, as logits)."""
        counts = data.sum(0) + smoothing
        return torch.log(counts / counts.sum()).to(self.a)

    def ais_log_likelihood(
        self, x: Tensor, base: Tensor | None = None, **ais_options
    ) -> tuple[Tensor, dict[int, AISResult]]:
        """log p(x | n) ≈ −F(x) − log Ẑ(n) per document [B], AIS run once per distinct length
        in x (options as for ``ais_log_partition``); returns it with the AISResult of every
        length."""
        x = x.to(self.W)
        lengths = self.lengths(x).round().long()
        results = {
            n: ais_log_partition(self.at_length(n), base=base, **ais_options)
            for n in lengths.unique().tolist()
        }
        log_z = torch.stack([results[n].log_z for n in lengths.tolist()]).to(x)
        return self.log_unnormalised_marginal(x, 1.0, base) - log_z, results


class AtLength:
    """A ``MultinomialBernoulliRBM`` restricted to documents of a fixed length n: an
    ``Annealable`` whose normaliser is Z(n), e.g. ``ais_log_partition(rbm.at_length(60),
    chains=100, betas=1000)`` estimates log Z(60) and ``rbm.at_length(60).log_partition()`` is
    its exact value (H ≤ 16)."""

    def __init__(self, model: MultinomialBernoulliRBM, length: int):
        if int(length) != length or length < 0:
            raise ValueError(f"a document length is a non-negative integer, got {length}")
        self.model, self.length = model, int(length)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def log_partition(self) -> Tensor:
        return self.model.log_partition(self.length)

    def base_log_partition(self, base=None) -> Tensor:
        return self.model.base_log_partition(base, length=self.length)

    def sample_base(self, n: int, base=None, generator=None) -> Tensor:
        return self.model.sample_base(n, base, generator, length=self.length)

    def log_unnormalised_marginal(self, x: Tensor, beta: float, base=None) -> Tensor:
        return self.model.log_unnormalised_marginal(x, beta, base)

    def gibbs_at(self, x: Tensor, beta: float, base=None, generator=None) -> Tensor:
        return self.model.gibbs_at(x, beta, base, generator)


# ----------------------------------------------------------------------------- AIS of log Z
@runtime_checkable
class Annealable(Protocol):
    """A model with an annealing path to it from a tractable base (the RBMs above, and
    ``AtLength`` views). ``base`` (a tensor, or None for the model's default) parameterises
    the base model and is passed through untouched; ``generator`` is a ``torch.Generator``.

    * ``base_log_partition(base)``: log Z_0 (a scalar);
    * ``sample_base(n, base, generator)``: n exact samples of p_0(x), [n, ...];
    * ``log_unnormalised_marginal(x, beta, base)``: log f_β(x) per sample [n], the hidden
      units summed out; β = 0 is the base, β = 1 equals −F(x) of the target;
    * ``gibbs_at(x, beta, base, generator)``: one transition leaving p_β(x) ∝ f_β(x)
      invariant (for an RBM a block-Gibbs sweep x → z → x).
    """

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def base_log_partition(self, base=None) -> Tensor: ...

    def sample_base(self, n: int, base=None, generator=None) -> Tensor: ...

    def log_unnormalised_marginal(self, x: Tensor, beta: float, base=None) -> Tensor: ...

    def gibbs_at(self, x: Tensor, beta: float, base=None, generator=None) -> Tensor: ...


class GibbsPath:
    """An ``Annealable`` model's path with its Gibbs transitions, drawing from `generator`:
    the ``vaelab.inference.AnnealingPath`` (states: visible samples [M, D])."""

    def __init__(self, model: Annealable, base: Tensor | None, generator: torch.Generator):
        self.model, self.base, self.generator = model, base, generator

    def log_density(self, x: Tensor, beta: float) -> Tensor:
        return self.model.log_unnormalised_marginal(x, beta, base=self.base)

    def transition(self, x: Tensor, beta: float) -> Tensor:
        return self.model.gibbs_at(x, beta, base=self.base, generator=self.generator)

    def diagnostics(self, x: Tensor) -> dict[str, Tensor]:
        return {}


@torch.no_grad()
def ais_log_partition(
    model: Annealable,
    chains: int = 100,
    betas: int | Sequence[float] | Tensor = 1000,
    base: Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AISResult:
    """AIS estimate of log Z of `model` with `chains` parallel chains (Salakhutdinov & Murray
    2008): ``result.log_z`` (biased low for too short a schedule), with its ``std_error``,
    ``ess`` and bootstrap ``interval()``.

    `betas`: an int K (K transitions on a linear schedule) or the inverse temperatures
    themselves, rising from 0 to 1 (``vaelab.inference``: ``linear_schedule``,
    ``sigmoid_schedule``, ``piecewise_schedule``). `base`: passed to the model (its base's
    visible parameter). `seed` seeds the chains, so the result repeats.
    """
    schedule = as_schedule(betas)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    start = model.sample_base(chains, base=base, generator=generator)
    path = GibbsPath(model, base, generator)
    return anneal(path, start, schedule, model.base_log_partition(base=base), progress=progress)


def ais_log_likelihood(model: Annealable, data: Tensor, **ais_options) -> tuple[Tensor, AISResult]:
    """log p(x) ≈ −F(x) − log Ẑ per example [N], with the AIS result (options as for
    ``ais_log_partition``). Inherits AIS's bias: log Ẑ low ⇒ log-likelihoods too high."""
    result = ais_log_partition(model, **ais_options)
    data = data.to(next(model.parameters()))
    with torch.no_grad():
        log_f = model.log_unnormalised_marginal(data, 1.0, base=ais_options.get("base"))
    return log_f - result.log_z.to(log_f), result
