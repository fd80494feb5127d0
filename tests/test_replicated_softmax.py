"""The multinomial–Bernoulli RBM (Replicated Softmax), the consistent set of a semantic-hashing
VAE (DESIGN §1c, Shekhovtsov et al. §4.3): exact log Z(n) and likelihoods against brute-force
enumeration of count vectors, the posterior by Bayes' rule, sampling, AIS per document length,
and CD/PCD/exact training on a tiny topic corpus."""

import itertools

import pytest
import torch

from vaelab.config import TrainConfig
from vaelab.distributions import all_binary_codes
from vaelab.distributions.exponential_family import MultinomialEF
from vaelab.evaluation.harmonium_fit import fit_contrastive, fit_exact
from vaelab.models.harmonium import Annealable, MultinomialBernoulliRBM, ais_log_partition

SCALED = pytest.mark.parametrize("scaled", [False, True], ids=["EF-harmonium", "length-scaled"])


def train(epochs, batch_size, **options):
    """Training settings that log every step."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, log_every=1, progress=False,
                       device="cpu", **options)  # fmt: skip


def count_vectors(vocab, length):
    """Every count vector over `vocab` words with Σ x = length, [C(length + vocab − 1, length), vocab]."""
    rows = []
    for words in itertools.combinations_with_replacement(range(vocab), length):
        row = [0] * vocab
        for k in words:
            row[k] += 1
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def randomised(rbm, seed, visible_scale=0.5, hidden_scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rbm.a.normal_(0.0, visible_scale, generator=g)
        rbm.b.normal_(0.0, hidden_scale, generator=g)
    return rbm


def tiny(scaled, vocab=4, hidden=3):
    g = torch.Generator().manual_seed(0)
    rbm = MultinomialBernoulliRBM(vocab, hidden, scaled, weight_scale=1.0, generator=g)
    return randomised(rbm.double(), 1)


def histogram(samples, support):
    """Frequencies of the rows of `samples` among the rows of `support`."""
    match = (samples[:, None, :] == support[None]).all(-1)
    assert match.any(1).all()
    return match.double().mean(0)


# ----------------------------------------------------------------------------- exact quantities
@SCALED
def test_log_partition_and_likelihood_equal_brute_force_over_count_vectors(scaled):
    rbm = tiny(scaled)
    zs = all_binary_codes(3).double()
    with torch.no_grad():
        for n in (0, 1, 3, 5):
            xs = count_vectors(4, n)
            negative_energy = rbm.negative_energy(xs[:, None], zs[None])  # [C, 8]
            brute = torch.logsumexp(negative_energy.flatten(), 0)
            torch.testing.assert_close(rbm.log_partition(n), brute)
            torch.testing.assert_close(rbm.free_energy(xs), -torch.logsumexp(negative_energy, 1))
            total = rbm.log_likelihood(xs).exp().sum()
            torch.testing.assert_close(total, torch.ones((), dtype=torch.float64))
            # p(x|z, n) is Mult(n, softmax(a + Wz)): MultinomialEF with natural parameters a + Wz
            log_joint = negative_energy - brute
            conditional = MultinomialEF().log_prob(xs[:, None], rbm.visible_logits(zs)[None])
            torch.testing.assert_close(conditional, log_joint - torch.logsumexp(log_joint, 0))
        # several lengths at once, and a batch of documents of different lengths
        lengths = torch.tensor([0.0, 1.0, 3.0, 5.0], dtype=torch.float64)
        each = torch.stack([rbm.log_partition(int(n)) for n in lengths])
        torch.testing.assert_close(rbm.log_partition(lengths), each)
        mixed = torch.cat([count_vectors(4, 3), count_vectors(4, 1), count_vectors(4, 5)])
        one_by_one = torch.stack([rbm.log_likelihood(x[None])[0] for x in mixed])
        torch.testing.assert_close(rbm.log_likelihood(mixed), one_by_one)
    assert rbm.log_partition(3).requires_grad


@SCALED
def test_posterior_is_bayes_rule_and_linear_in_counts(scaled):
    rbm = tiny(scaled)
    xs = count_vectors(4, 3)
    zs = all_binary_codes(3).double()
    with torch.no_grad():
        log_joint = rbm.negative_energy(xs[:, None], zs[None])  # [C, 8], up to log Z(3)
        bayes = log_joint - torch.logsumexp(log_joint, 1, keepdim=True)
        posterior = rbm.posterior(xs).log_prob(zs[:, None, :]).T  # [C, 8]
        torch.testing.assert_close(posterior, bayes)
        # the encoder's logits are linear in the counts (not the frequencies): c(n)b + Wᵀx
        x1, x2 = count_vectors(4, 2)[[1, 6]], count_vectors(4, 5)[[3, 40]]
        logits = lambda x: rbm.posterior(x).logits
        b = rbm.b
        if scaled:  # c(n) = n = 1ᵀx is linear in x too
            torch.testing.assert_close(logits(x1 + x2), logits(x1) + logits(x2))
        else:
            torch.testing.assert_close(logits(x1 + x2) - b, logits(x1) + logits(x2) - 2 * b)


def test_length_scaled_hidden_bias_is_a_reparameterisation():
    """n·bᵀz = xᵀ(1bᵀ)z: Replicated Softmax equals the EF harmonium with W + 1bᵀ, b = 0."""
    scaled = tiny(True)
    plain = MultinomialBernoulliRBM(4, 3).double()
    with torch.no_grad():
        plain.W.copy_(scaled.W + scaled.b[None, :])
        plain.a.copy_(scaled.a)
        plain.b.zero_()
        docs = torch.cat([count_vectors(4, n) for n in (1, 3, 6)])
        torch.testing.assert_close(plain.log_likelihood(docs), scaled.log_likelihood(docs))
        torch.testing.assert_close(plain.posterior(docs).logits, scaled.posterior(docs).logits)


# ----------------------------------------------------------------------------- sampling
@SCALED
def test_exact_samples_and_gibbs_chains_follow_the_marginal_at_each_length(scaled):
    rbm = tiny(scaled)
    xs = count_vectors(4, 3)
    with torch.no_grad():
        p = rbm.log_likelihood(xs).exp()
        g = torch.Generator().manual_seed(0)
        exact = rbm.sample(20000, 3, generator=g)
        assert (histogram(exact, xs) - p).abs().max() < 0.01
        # Gibbs chains from the base Mult(3, softmax(a)) mix to p(x | n = 3)
        chains = rbm.gibbs(rbm.at_length(3).sample_base(20000, generator=g), 20, g)
        assert (histogram(chains, xs) - p).abs().max() < 0.01
        # every chain keeps its own document's length
        lengths = torch.tensor([0.0, 1.0, 7.0, 30.0], dtype=torch.float64)
        docs = rbm.sample(4, lengths, generator=g)
        torch.testing.assert_close(rbm.gibbs(docs, 5, g).sum(-1), lengths)
        assert (docs >= 0).all() and (docs == docs.round()).all()


# ----------------------------------------------------------------------------- AIS
def test_annealing_interface_per_length():
    rbm = tiny(False)
    view = rbm.at_length(3)
    assert isinstance(view, Annealable)
    xs = count_vectors(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(rbm.log_unnormalised_marginal(xs, 1.0), -rbm.free_energy(xs))
        torch.testing.assert_close(view.log_partition(), rbm.log_partition(3))
        # the base (β = 0) is normalised by base_log_partition, for any base logits
        for base in (None, torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64)):
            f0 = view.log_unnormalised_marginal(xs, 0.0, base)
            torch.testing.assert_close(torch.logsumexp(f0, 0), view.base_log_partition(base))
            # gibbs_at(β) leaves p_β ∝ f_β invariant: chains from the base mix to it
            g = torch.Generator().manual_seed(0)
            p_half = torch.softmax(view.log_unnormalised_marginal(xs, 0.5, base), 0)
            chains = view.sample_base(20000, base, g)
            for _ in range(20):
                chains = view.gibbs_at(chains, 0.5, base, g)
            assert (histogram(chains, xs) - p_half).abs().max() < 0.01
    with pytest.raises(ValueError, match="at_length"):
        ais_log_partition(rbm, chains=2, betas=2, progress=False)
    with pytest.raises(ValueError, match="non-negative integer"):
        rbm.at_length(2.5)


def ais_model(scaled):
    """Vocabulary 50, 10 hidden units (1,024 codes: log Z(n) exact)."""
    g = torch.Generator().manual_seed(0)
    rbm = MultinomialBernoulliRBM(50, 10, scaled, weight_scale=0.3, generator=g)
    return randomised(rbm, 1, visible_scale=1.0, hidden_scale=0.02 if scaled else 0.5)


@SCALED
def test_ais_matches_the_exact_log_partition_at_each_length(scaled):
    rbm = ais_model(scaled)
    exact = {n: rbm.log_partition(n).item() for n in (20, 60)}
    result = ais_log_partition(rbm.at_length(60), chains=100, betas=1000, seed=0, progress=False)
    assert abs(result.log_z - exact[60]) < 0.1 and result.std_error < 0.06
    # log-likelihoods of documents of two lengths: one AIS run per length, data-fitted base
    lengths = torch.tensor([20.0] * 50 + [60.0] * 50)
    docs = rbm.sample(100, lengths, generator=torch.Generator().manual_seed(0))
    base = rbm.base_from_data(docs)
    log_lik, results = rbm.ais_log_likelihood(
        docs, base=base, chains=100, betas=1000, seed=1, progress=False
    )
    assert sorted(results) == [20, 60]
    for n in (20, 60):
        assert abs(results[n].log_z - exact[n]) < 0.1, (n, results[n].log_z, exact[n])
    assert results[60].log_z_base != result.log_z_base
    with torch.no_grad():
        truth = rbm.log_likelihood(docs)
    assert (log_lik - truth).abs().max() < 0.1


# ----------------------------------------------------------------------------- training
def topic_corpus(n_docs, generator, vocab=12, topics=3, lengths=(5, 30)):
    """Documents of 5–30 words, each from one of 3 topics that favour their own 4 words."""
    block = vocab // topics
    word_logits = torch.full((topics, vocab), -2.0)
    for t in range(topics):
        word_logits[t, t * block : (t + 1) * block] = 1.0
    topic = torch.randint(topics, (n_docs,), generator=generator)
    n = torch.randint(lengths[0], lengths[1] + 1, (n_docs,), generator=generator).float()
    probs = torch.softmax(word_logits[topic], -1)
    words = torch.multinomial(probs, lengths[1], replacement=True, generator=generator)
    keep = (torch.arange(lengths[1]) < n[:, None]).float()
    return torch.zeros(n_docs, vocab).scatter_add_(1, words, keep)


@pytest.fixture(scope="module")
def corpus():
    """The corpus and the exact maximum-likelihood fit's mean log-likelihood, both models."""
    data = topic_corpus(300, torch.Generator().manual_seed(0))
    best = {}
    for scaled in (False, True):
        rbm = MultinomialBernoulliRBM(12, 4, scaled, generator=torch.Generator().manual_seed(0))
        history = fit_exact(rbm, data, train(300, len(data), lr=0.05))
        best[scaled] = rbm.log_likelihood(data).mean().item()
        assert best[scaled] > history[0]["log_likelihood"] + 10
    return data, best


def test_exact_fits_of_both_parameterisations_agree(corpus):
    _, best = corpus
    assert best[False] == pytest.approx(best[True], abs=0.1)


@pytest.mark.parametrize(
    "persistent, lr, steps", [(False, 0.01, 300), (True, 0.005, 600)], ids=["CD-1", "PCD-1"]
)
def test_contrastive_training_raises_the_exact_likelihood(corpus, persistent, lr, steps):
    data, best = corpus
    rbm = MultinomialBernoulliRBM(12, 4, generator=torch.Generator().manual_seed(0))
    before = rbm.log_likelihood(data).mean().item()
    cfg = train(steps // 6, 50, lr=lr, seed=0, lr_schedule="linear")  # 6 steps per epoch
    history = fit_contrastive(rbm, data, cfg, persistent=persistent)
    after = rbm.log_likelihood(data).mean().item()
    assert len(history) == steps
    assert after > before + 5 and after > best[False] - 3, (before, after, best[False])


def test_word_counts_are_checked():
    rbm = MultinomialBernoulliRBM(3, 2)
    with pytest.raises(ValueError, match="counts"):
        fit_exact(rbm, torch.tensor([[0.5, 1.0, 0.0]]), train(1, 1))
    with pytest.raises(ValueError, match="shape"):
        fit_exact(rbm, torch.zeros(2, 4), train(1, 2))
    with pytest.raises(ValueError, match="17 units"):
        MultinomialBernoulliRBM(3, 17).log_partition(5)
