"""The multinomial likelihood's sparse formula n·A + Σ_{x_v≠0} x_v (m − ℓ_v) against the dense
definition −Σ_v x_v log softmax(ℓ)_v it replaced, in every convention, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from vaelab.distributions import multinomial
from vaelab.distributions.multinomial import (
    CONVENTIONS,
    Counts,
    MultinomialLikelihood,
    convention_offset,
    no_coefficient_nll,
)

S, B, V = 3, 7, 40
GATHERED_OR_DENSE = {"gathered": 2.0, "dense": 0.0}  # SPARSE_BELOW forcing either path


@pytest.fixture(params=list(GATHERED_OR_DENSE))
def path(request, monkeypatch):
    """Run the test with x's non-zeros gathered, then with x used densely."""
    monkeypatch.setattr(multinomial, "SPARSE_BELOW", GATHERED_OR_DENSE[request.param])
    return request.param


def counts(seed=0, b=B, v=V, dtype=torch.float64) -> torch.Tensor:
    """Sparse random counts [b, v], one empty document, one with a single word."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 6, (b, v), generator=g) * (torch.rand(b, v, generator=g) < 0.3)
    x[1] = 0
    x[2] = 0
    x[2, 5] = 9
    return x.to(dtype)


def logits(seed=1, s=S, b=B, v=V, scale=3.0, shift=0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(s, b, v, generator=g, dtype=torch.float64) + shift).requires_grad_()


def dense_nll(x, output, convention):
    """The definition, densely: −log Mult(x; n, softmax ℓ) (torch.distributions) for `full`,
    plus log(n!/Π x_v!) for `no-coefficient`, plus Σ_v x_v log(x_v/n) for `saturated`."""
    n = x.sum(-1)
    log_coefficient = torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(-1)
    no_coefficient = -(x * F.log_softmax(output, dim=-1)).sum(-1)
    full = no_coefficient - log_coefficient
    if convention == "full":
        return full
    if convention == "no-coefficient":
        return no_coefficient
    return no_coefficient + torch.xlogy(x, x / n.clamp_min(1)[:, None]).sum(-1)


def test_dense_reference_is_the_multinomial_log_probability():
    x, out = counts(), logits()
    for b in range(B):
        if x[b].sum() == 0:
            continue
        expected = -torch.distributions.Multinomial(int(x[b].sum()), logits=out[0, b]).log_prob(
            x[b]
        )
        torch.testing.assert_close(dense_nll(x, out, "full")[0, b], expected)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("shift", [0.0, 500.0, -500.0])
def test_sparse_nll_equals_the_dense_formula_in_float64(convention, shift, path):
    x, out = counts(), logits(shift=shift)
    assert Counts.from_dense(x).sparse == (path == "gathered")
    lik = MultinomialLikelihood((V,), convention)
    new = lik(x, out).nll_samples
    old = dense_nll(x, out, convention)
    torch.testing.assert_close(new, old, rtol=1e-12, atol=1e-9)
    assert new[:, 1].abs().max() == 0  # an empty document costs nothing in any convention
    # the gradient w.r.t. the logits: (n·softmax(ℓ) − x)·g, from a non-uniform g
    g = torch.rand(S, B, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (grad_new,) = torch.autograd.grad((g * new).sum(), out)
    (grad_old,) = torch.autograd.grad((g * old).sum(), out)
    torch.testing.assert_close(grad_new, grad_old, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_pairwise_terms_equal_the_dense_formula(convention, path):
    x, out = counts(), logits()[0].detach()  # K = 7 codes
    pair = MultinomialLikelihood((V,), convention).pairwise(x, out).nll_samples
    dense = dense_nll(x, out[:, None].expand(B, B, V), convention)
    torch.testing.assert_close(pair, dense, rtol=1e-12, atol=1e-9)


def test_conventions_differ_by_the_coefficient_and_the_saturated_term_exactly():
    x = counts()
    n = x.sum(-1)
    full, none, saturated = (convention_offset(x, c) for c in CONVENTIONS)
    torch.testing.assert_close(none, torch.zeros(B, dtype=x.dtype), rtol=0, atol=0)
    torch.testing.assert_close(full, -(torch.lgamma(n + 1) - torch.lgamma(x + 1).sum(-1)))
    torch.testing.assert_close(saturated, torch.xlogy(x, x / n.clamp_min(1)[:, None]).sum(-1))
    # document 2 is one word nine times: saturated term 0, coefficient 9!/9! = 1
    assert saturated[2] == 0 and full[2] == 0


def test_gradcheck_and_a_repeated_backward_with_retain_graph(path):
    """The backward pass turns the forward pass's softmax into the gradient in place; a second
    backward through the same graph (retain_graph) must recompute it, not reuse it."""
    x = counts(b=4, v=9)
    out = logits(s=2, b=4, v=9)
    assert torch.autograd.gradcheck(lambda t: no_coefficient_nll(x, t), (out,))
    nll = no_coefficient_nll(x, out)
    g1 = torch.rand(2, 4, dtype=torch.float64)
    g2 = torch.rand(2, 4, dtype=torch.float64)
    (first,) = torch.autograd.grad(nll, out, g1, retain_graph=True)
    (second,) = torch.autograd.grad(nll, out, g2)
    for g, got in ((g1, first), (g2, second)):
        (expected,) = torch.autograd.grad(dense_nll(x, out, "no-coefficient"), out, g)
        torch.testing.assert_close(got, expected)


def test_float32_at_the_size_of_a_semhash_batch(path):
    """V = 10,000 words, ~70 non-zero per document, 20 codes: float32 results within
    round-off of the float64 definition (and no worse than the dense float32 formula)."""
    g = torch.Generator().manual_seed(0)
    b, v, s = 50, 10_000, 20
    x = torch.zeros(b, v)
    x.scatter_(1, torch.randint(0, v, (b, 70), generator=g), torch.randint(1, 5, (b, 70), generator=g).float())  # fmt: skip
    out = (2 * torch.randn(s, b, v, generator=g)).requires_grad_()
    reference = dense_nll(x.double(), out.double(), "saturated")
    new = MultinomialLikelihood((v,))(x, out).nll_samples
    old = dense_nll(x, out, "saturated")
    err_new = (new.double() - reference).abs().max()
    err_old = (old.double() - reference).abs().max()
    assert err_new < 1e-5 * reference.abs().max()
    assert err_new <= 2 * err_old + 1e-4, (err_new, err_old)
    (grad,) = torch.autograd.grad(new.sum(), out)
    (grad_ref,) = torch.autograd.grad(reference.sum(), out)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-6)


def test_counts_hold_exactly_the_non_zero_entries():
    x = torch.zeros(B, 400)
    x[:, :40] = counts(dtype=torch.float32)  # 2.5 % non-zero: gathered
    c = Counts.from_dense(x)
    assert c.sparse
    dense = torch.zeros(B * 400).index_put_((c.flat,), c.values).view(B, 400)
    torch.testing.assert_close(dense, x, rtol=0, atol=0)
    assert (c.values != 0).all() and (c.rows == c.flat // 400).all()
    torch.testing.assert_close(c.lengths, x.sum(-1), rtol=0, atol=0)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_smoothed_counts_are_used_densely_and_equal_the_dense_formula(convention):
    """Count smoothing adds a positive pseudo-count to every word: no entry is zero, so the
    counts are not gathered; the value and gradient still follow the definition."""
    f = torch.softmax(torch.randn(V, dtype=torch.float64), 0)  # one pseudo-word, spread
    x, out = counts() + f, logits()
    assert not Counts.from_dense(x).sparse
    new = MultinomialLikelihood((V,), convention)(x, out).nll_samples
    old = dense_nll(x, out, convention)
    torch.testing.assert_close(new, old, rtol=1e-12, atol=1e-9)
    (grad_new,) = torch.autograd.grad(new.sum(), out)
    (grad_old,) = torch.autograd.grad(old.sum(), out)
    torch.testing.assert_close(grad_new, grad_old)


@pytest.mark.parametrize("chunk", [V, 3 * V, 10**9])  # one row, 3 rows, everything at once
def test_without_gradients_the_normaliser_comes_in_chunks_with_the_same_values(
    chunk, monkeypatch, path
):
    """Evaluation computes A chunk by chunk in one buffer (no softmax kept): the values are
    those of the definition, and of the training path."""
    monkeypatch.setattr(multinomial, "CHUNK", chunk)
    x, out = counts(), logits(shift=40.0)
    lik = MultinomialLikelihood((V,), "full")
    with torch.no_grad():
        evaluated = lik(x, out).nll_samples
    torch.testing.assert_close(evaluated, lik(x, out).nll_samples.detach(), rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(evaluated, dense_nll(x, out, "full").detach())
