"""Exponential-family forms h(x)·exp(⟨ν(x), η⟩ − A(η)) against torch.distributions."""

import math

import pytest
import torch

from vaelab.distributions import (
    FactorisedBernoulli,
    UniformBernoulli,
    all_binary_codes,
    kl_divergence,
)
from vaelab.distributions.exponential_family import (
    BernoulliEF,
    CategoricalEF,
    GaussianEF,
    MultinomialEF,
)

g = torch.Generator().manual_seed(0)


def test_gaussian_natural_parameters_give_the_normal_density_and_invert():
    mean, log_sigma = torch.randn(5, 7, generator=g), 0.3 * torch.randn(5, 7, generator=g)
    x = torch.randn(5, 7, generator=g)
    eta = GaussianEF.natural_parameters(mean, log_sigma)
    expected = torch.distributions.Normal(mean, log_sigma.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(GaussianEF().log_prob(x, eta), expected)
    m, s = GaussianEF.mean_and_log_sigma(eta)
    torch.testing.assert_close(m, mean)
    torch.testing.assert_close(s, log_sigma)


def test_bernoulli_and_categorical_forms():
    logits = torch.randn(4, 6, generator=g)
    x = torch.bernoulli(torch.full((4, 6), 0.5), generator=g)
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(BernoulliEF().log_prob(x, logits), expected)
    k = torch.randint(0, 6, (4,), generator=g)
    onehot = torch.nn.functional.one_hot(k, 6).float()
    torch.testing.assert_close(
        CategoricalEF().log_prob(onehot, logits),
        torch.distributions.Categorical(logits=logits).log_prob(k),
    )


def test_multinomial_form_includes_the_multinomial_coefficient():
    logits = torch.randn(3, 5, generator=g)
    x = torch.tensor([[3.0, 0, 1, 0, 2], [0, 0, 0, 4, 0], [1, 1, 1, 1, 1]])
    expected = torch.stack(
        [
            torch.distributions.Multinomial(int(n), logits=lg).log_prob(xi)
            for n, lg, xi in zip(x.sum(-1), logits, x)
        ]
    )
    torch.testing.assert_close(MultinomialEF().log_prob(x, logits), expected)


def test_all_binary_codes_enumerates_every_state_once():
    codes = all_binary_codes(3)
    assert codes.shape == (8, 3) and len({tuple(c.tolist()) for c in codes}) == 8
    assert codes[5].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        all_binary_codes(17)


def test_factorised_bernoulli_log_prob_entropy_and_kl_by_enumeration():
    q = FactorisedBernoulli(torch.randn(4, 3, generator=g))
    codes = all_binary_codes(3)  # [8, 3]
    log_q = q.log_prob(codes[:, None, :])  # [8, 4]
    torch.testing.assert_close(log_q.exp().sum(0), torch.ones(4))
    expected = torch.distributions.Bernoulli(logits=q.logits).log_prob(codes[:, None, :]).sum(-1)
    torch.testing.assert_close(log_q, expected)
    p = log_q.exp()
    torch.testing.assert_close(q.entropy(), -(p * log_q).sum(0))
    prior = UniformBernoulli(3)
    torch.testing.assert_close(
        kl_divergence(q, prior), (p * (log_q - prior.log_prob(codes)[:, None])).sum(0)
    )
    assert prior.log_prob(codes[0]).item() == pytest.approx(-3 * math.log(2))
    # sampling frequencies match the probabilities
    z = q.sample(20_000)
    torch.testing.assert_close(z.mean(0), q.probs, atol=0.02, rtol=0)
