"""Multinomial decoder over word counts: p(x|z) = Mult(x; n, softmax(ℓ(z))), n = Σ_v x_v.

Three conventions for −log p(x|z) are in use and vaelab reports which one a number uses:
  full            −Σ_v x_v log π_v − log(n! / Π_v x_v!)
  no-coefficient  −Σ_v x_v log π_v
  saturated       −Σ_v x_v log π_v + Σ_v x_v log(x_v / n): relative to the saturated model
                  π = x/n — ≥ 0, and 0 only for a perfect decoder; what the public
                  reproduction of Shekhovtsov et al. (2022) computes (ReScience C 9(2),
                  2023). The paper itself does not state its convention (its eq. 13 keeps
                  the base measure, i.e. `full`).
They differ by a constant per document, so they give the same gradients.

How it is computed (the one place the formula lives). With π = softmax(ℓ), m = max_v ℓ_v and
the log-normaliser A = log Σ_v exp(ℓ_v − m) = −log max_v π_v, computed once per (code,
document) and shared by every term,

    −Σ_v x_v log π_v = n·A + Σ_{v: x_v ≠ 0} x_v (m − ℓ_v),

a sum of non-negative terms for counts (no cancellation), with the data term gathered at the
document's non-zero counts only (~70 of V = 10,000 words in 20 Newsgroups; dense counts, e.g.
smoothed ones, are used densely). Every [S, B, V] temporary costs a fresh allocation — on CPU
its page faults cost more than its arithmetic — so the forward pass makes one, π (a single
fused softmax), and the backward pass turns it in place into the gradient (n·π − x)·g; without
gradients (evaluation) there is none, A being computed chunk by chunk in a small buffer. The
convention offsets are sums over the non-zero counts too (log 0! = 0 and 0·log 0 = 0). There
is no gradient w.r.t. x. `benchmarks/semhash_epoch_time.py` measures the effect against the
dense formula −Σ_v x_v log_softmax(ℓ)_v it replaced (the same numbers up to float round-off:
`tests/test_multinomial.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..registry import LIKELIHOODS
from .base import Likelihood
from .exponential_family import MultinomialEF
from .reconstruction import Reconstruction

CONVENTIONS = ("full", "no-coefficient", "saturated")


SPARSE_BELOW = 1 / 16  # fraction of non-zero counts below which x is gathered, not dense


@dataclass
class Counts:
    """Count vectors x [N, V] as the NLL uses them: sparse — the non-zero entries,
    x.view(-1)[flat] = values in row-major order, rows = flat // V — when fewer than
    `SPARSE_BELOW` of the entries are non-zero (20 Newsgroups: ~0.7 %), else dense (values = x,
    e.g. smoothed counts, where every entry is positive). `lengths` n = Σ_v x_v [N].

    Sums over a row's entries are accumulated in float64: a sequential float32 sum of ~70
    words' terms into a running total of ~2,000 nats would lose ~1e-3 nats."""

    values: Tensor  # [nnz] (sparse) or [N, V] (dense), x's dtype
    lengths: Tensor  # [N], x's dtype
    shape: tuple[int, int]  # (N, V)
    flat: Tensor | None = None  # int64 [nnz], increasing; None: dense
    rows: Tensor | None = None  # int64 [nnz], non-decreasing

    @classmethod
    def from_dense(cls, x: Tensor) -> Counts:
        """From x [..., V], its leading dimensions flattened to N."""
        x = x.reshape(-1, x.shape[-1])
        shape = (len(x), x.shape[1])
        flat = x.reshape(-1).nonzero().squeeze(1)  # the flat form: faster than rows and cols
        if len(flat) >= SPARSE_BELOW * x.numel():
            return cls(x, x.sum(-1, dtype=torch.float64).to(x.dtype), shape)
        rows, values = flat // shape[1], x.reshape(-1)[flat]
        lengths = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        lengths.index_add_(0, rows, values.double())
        return cls(values, lengths.to(x.dtype), shape, flat, rows)

    @property
    def sparse(self) -> bool:
        return self.flat is not None

    def at_entries(self, per_row: Tensor) -> Tensor:
        """A per-row tensor [..., N] at each entry: [..., nnz] (sparse) or [..., N, 1]."""
        return per_row[..., self.rows] if self.sparse else per_row[..., None]

    def row_sum(self, per_entry: Tensor) -> Tensor:
        """Σ over each row's entries of `per_entry` [..., nnz] (sparse) or [..., N, V] (dense)
        → float64 [..., N]."""
        if not self.sparse:
            return per_entry.sum(-1, dtype=torch.float64)
        per_entry = per_entry.to(torch.promote_types(per_entry.dtype, torch.float64))
        out = per_entry.new_zeros(*per_entry.shape[:-1], self.shape[0])
        return out.index_add_(-1, self.rows, per_entry)

    def data_term(self, logits: Tensor, m: Tensor) -> Tensor:
        """Σ_v x_v (m − ℓ_v) ≥ 0 (up to round-off), float64 [R, N], for logits [R, N, V] and m
        [R, N, 1] (their largest entries, `log_normaliser`)."""
        if not self.sparse:  # one [R, N, V] temporary; a cascade sum of terms ≥ 0
            return torch.sub(m, logits).mul_(self.values.to(logits.dtype)).sum(-1).double()
        gathered = logits.reshape(len(logits), -1).index_select(1, self.flat).double()
        return self.row_sum(
            self.values.double() * (self.at_entries(m.flatten(1)).double() - gathered)
        )

    def subtract_(self, grad: Tensor, g: Tensor) -> Tensor:
        """grad [R, N, V] − x·g for g [R, N], in place."""
        values = self.values.to(grad.dtype)
        if not self.sparse:
            return grad.addcmul_(values, g[..., None], value=-1)
        flat = grad.view(len(grad), -1)
        flat.index_add_(1, self.flat, -(self.at_entries(g) * values))
        return grad


def _offset(counts: Counts, convention: str) -> Tensor:
    """Per-document constant [N] (x's dtype) to add to the no-coefficient NLL for
    `convention`."""
    dtype = counts.values.dtype
    values, n = counts.values.double(), counts.lengths.double()
    if convention == "no-coefficient":
        return torch.zeros_like(counts.lengths)
    if convention == "full":  # −log h(x) = −log n! + Σ_v log x_v!, with log 0! = 0
        return (counts.row_sum(torch.lgamma(values + 1)) - torch.lgamma(n + 1)).to(dtype)
    if convention == "saturated":  # Σ_v x_v log(x_v / n); n ≥ 1 guards an empty document
        terms = torch.xlogy(values, values / counts.at_entries(n.clamp_min(1)))
        return counts.row_sum(terms).to(dtype)
    raise ValueError(f"unknown convention {convention!r}; one of {CONVENTIONS}")


def convention_offset(x: Tensor, convention: str) -> Tensor:
    """Per-document constant [...] to add to the no-coefficient NLL of counts x [..., V] for
    `convention` (a sum over x's non-zero counts)."""
    return _offset(Counts.from_dense(x), convention).reshape(x.shape[:-1])


CHUNK = 2**19  # entries of logits per chunk when only A is needed (2 MB of float32)


def log_normaliser(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(m, π, A) for logits [..., V]: m = max_v ℓ_v [..., 1], π = softmax(ℓ) [..., V] (one
    fused pass) and A = log Σ_v exp(ℓ_v − m) = −log max_v π_v [...] ∈ [0, log V], so that
    −log π_v = (m − ℓ_v) + A. (torch's max with indices is ~10× slower than two amax.)"""
    probs = torch.softmax(logits, dim=-1)
    return logits.amax(-1, keepdim=True), probs, -probs.amax(-1).log()


def log_normaliser_only(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(m, A) of `log_normaliser` without π: exp(ℓ − m) chunk by chunk in one reused buffer,
    so no [..., V] tensor is allocated (for evaluation, where no gradient needs π)."""
    flat = logits.reshape(-1, logits.shape[-1])
    m = flat.amax(-1, keepdim=True)
    sums = flat.new_empty(len(flat))
    rows = max(1, CHUNK // flat.shape[1])
    buffer = flat.new_empty(min(rows, len(flat)), flat.shape[1])
    for start in range(0, len(flat), rows):
        chunk = buffer[: len(flat[start : start + rows])]
        torch.sub(flat[start : start + rows], m[start : start + rows], out=chunk).exp_()
        sums[start : start + rows] = chunk.sum(-1)
    return m.view(*logits.shape[:-1], 1), sums.log_().view(logits.shape[:-1])


class _NoCoefficientNLL(torch.autograd.Function):
    """−Σ_v x_v log softmax(ℓ)_v [R, N] for logits [R, N, V] and `Counts` of x [N, V]:
    n·A + Σ_v x_v (m − ℓ_v). No gradient w.r.t. x. The gradient w.r.t. ℓ,
    (n·softmax(ℓ) − x)·g, is made in place in the forward pass's softmax on the first
    backward call (a repeated call, with retain_graph, recomputes the softmax)."""

    @staticmethod
    def forward(ctx, logits: Tensor, counts: Counts) -> Tensor:
        if ctx.needs_input_grad[0]:
            m, probs, log_z = log_normaliser(logits)
            # π is kept as an attribute, not a saved tensor: backward modifies it in place
            ctx.counts, ctx.probs = counts, probs
            ctx.save_for_backward(logits)
        else:
            m, log_z = log_normaliser_only(logits)
        n = counts.lengths.double()
        return (n * log_z.double() + counts.data_term(logits, m)).to(logits.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        (logits,) = ctx.saved_tensors
        probs, ctx.probs = ctx.probs, None  # a repeated call finds it used and recomputes
        if probs is None:
            probs = torch.softmax(logits, dim=-1)
        probs.mul_((grad * ctx.counts.lengths.to(grad.dtype))[..., None])
        return ctx.counts.subtract_(probs, grad), None


def no_coefficient_nll(x: Tensor, logits: Tensor, counts: Counts | None = None) -> Tensor:
    """−Σ_v x_v log softmax(ℓ)_v for counts x [B, V] and logits [*lead, B, V] → [*lead, B]."""
    counts = Counts.from_dense(x) if counts is None else counts
    lead = logits.shape[:-2]
    rows = logits.reshape(-1, *counts.shape)
    return _NoCoefficientNLL.apply(rows, counts).view(*lead, counts.shape[0])


@LIKELIHOODS.register("multinomial")
class MultinomialLikelihood(Likelihood):
    """Word counts x [B, V] given decoder logits [S, B, V]. A document's length n is part of
    the data, so there is no `sample` without it (`can_sample` is False)."""

    family = MultinomialEF()
    can_sample = False
    config_fields = {"convention": "multinomial_convention"}

    def __init__(self, data_shape: tuple[int, ...], convention: str = "saturated"):
        super().__init__(data_shape)
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {convention!r}; one of {CONVENTIONS}")
        self.convention = convention

    def mean(self, output: Tensor) -> Tensor:
        """The word probabilities π = softmax(ℓ)."""
        return torch.softmax(output, dim=-1)

    def natural_parameters(self, output: Tensor, condition: Tensor | None = None) -> Tensor:
        return output

    def pairwise(self, x, output, condition=None, weights=None) -> Reconstruction:
        """Terms for every (code k, document b) pair from outputs [K, V] and x [B, V], by one
        matrix product instead of a [K, B, V] tensor: n_b·A_k + ((m − ℓ) xᵀ)_kb."""
        counts = Counts.from_dense(x)
        m, _, log_z = log_normaliser(output)
        nll = counts.lengths.to(output.dtype) * log_z[:, None] + (m - output) @ x.T.to(output.dtype)
        nll = nll + _offset(counts, self.convention)
        return Reconstruction(nll, torch.zeros_like(nll), weights=weights)

    def forward(self, x, output, condition=None, weights=None) -> Reconstruction:
        counts = Counts.from_dense(x.expand(output.shape[-2:]))
        nll = no_coefficient_nll(x, output, counts) + _offset(counts, self.convention)
        # a squared error of word frequencies means little and costs a pass over S·B·V: not kept
        return Reconstruction(nll, torch.zeros_like(nll), weights=weights)

    def describe(self, condition: Tensor | None = None) -> dict[str, Any]:
        return {"likelihood": self.registered_name, "nll_convention": self.convention}
