"""Retrieval by Hamming distance: precision@k, precision within a radius and MAP against
hand-computed values and against every order of the tied documents; binary codes of a
Bernoulli-latent VAE."""

import itertools
import math

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.data import ImageData
from vaelab.evaluation.retrieval import (
    binary_codes,
    distance_counts,
    expected_average_precision,
    expected_precision_at_k,
    precision_at_k,
    precision_within_radius,
    retrieval_metrics,
)
from vaelab.models import build_vae


def test_label_revealing_codes_give_precision_one_and_random_codes_chance():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2000,), generator=g)
    prototypes = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1, 1, 1],
        ]
    ).bool()
    codes = prototypes[labels].repeat(1, 2)  # 16 bits, labels ≥ 8 bits apart
    flip = torch.rand(codes.shape, generator=g) < 0.05  # a little noise stays within a label
    codes = codes ^ flip
    queries, database = slice(0, 300), slice(300, None)
    perfect = precision_at_k(
        codes[queries], labels[queries], codes[database], labels[database], k=100
    )
    assert perfect > 0.99
    random_codes = torch.rand(2000, 16, generator=g) > 0.5
    chance = precision_at_k(
        random_codes[queries], labels[queries], random_codes[database], labels[database], k=100
    )
    assert abs(chance - 0.25) < 0.04


def test_precision_counts_exactly_on_a_hand_made_example():
    db = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 0]]).bool()
    db_labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[0, 0]]).bool()
    # by Hamming: [0,0] (d=0), then [0,1] and [1,0] tied (d=1, labels 0 and 1), then [1,1]
    assert precision_at_k(query, torch.tensor([0]), db, db_labels, k=1) == 1.0
    # k = 2: the first, and one of the tie at random: (1 + ½) / 2 (database order gave 1)
    assert precision_at_k(query, torch.tensor([0]), db, db_labels, k=2) == pytest.approx(0.75)
    assert precision_at_k(query, torch.tensor([0]), db, db_labels, k=3) == pytest.approx(2 / 3)
    assert precision_at_k(query, torch.tensor([1]), db, db_labels, k=4) == 0.5


def orders_within_ties(distances: list[int]):
    """Every ranking of the documents that sorts them by distance (ties in every order)."""
    groups = [[i for i, d in enumerate(distances) if d == v] for v in sorted(set(distances))]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield [i for part in parts for i in part]


def test_tie_averaged_measures_equal_the_mean_over_every_order_of_the_ties():
    g = torch.Generator().manual_seed(3)
    db = torch.rand(8, 3, generator=g) > 0.5
    db_labels = torch.randint(0, 2, (8,), generator=g)
    queries = torch.rand(5, 3, generator=g) > 0.5
    query_labels = torch.randint(0, 2, (5,), generator=g)
    counts, relevant = distance_counts(queries, query_labels, db, db_labels)
    k = 3
    for i in range(5):
        distances = (queries[i] ^ db).sum(1).tolist()
        rel = (db_labels == query_labels[i]).tolist()
        precisions, aps = [], []
        for order in orders_within_ties(distances):
            precisions.append(sum(rel[j] for j in order[:k]) / k)
            hits, ap = 0, 0.0
            for position, j in enumerate(order, 1):
                if rel[j]:
                    hits += 1
                    ap += hits / position
            aps.append(ap / sum(rel) if sum(rel) else math.nan)
        expected_p = expected_precision_at_k(counts, relevant, k)[i]
        assert float(expected_p) == pytest.approx(sum(precisions) / len(precisions), abs=1e-12)
        ap = float(expected_average_precision(counts, relevant)[i])
        if sum(rel):
            assert ap == pytest.approx(sum(aps) / len(aps), abs=1e-12)
        else:
            assert math.isnan(ap)


def test_a_constant_code_scores_the_label_frequency_on_a_label_sorted_database():
    labels = torch.arange(4).repeat_interleave(torch.tensor([10, 20, 30, 40]))  # sorted
    codes = torch.zeros(100, 8, dtype=torch.bool)
    queries = torch.tensor([0, 1, 2, 3])
    frequency = torch.tensor([0.1, 0.2, 0.3, 0.4])
    counts, relevant = distance_counts(codes[:4], queries, codes, labels)
    assert torch.allclose(expected_precision_at_k(counts, relevant, 10), frequency.double())
    assert torch.allclose(precision_within_radius(counts, relevant, 2), frequency.double())
    # database order would have given label 0 all 10 nearest, the others none
    metrics = retrieval_metrics(codes[:4], queries, codes, labels, k=10)
    assert metrics["precision_at_10"] == pytest.approx(0.25)
    assert metrics["chance_precision_at_10"] == pytest.approx(0.25)
    assert metrics["map"] == pytest.approx(metrics["chance_map"])
    # random ranking: expected AP = (1/n) Σ_j (1 + (j − 1)(r − 1)/(n − 1)) / j
    n = 100
    by_hand = [
        sum((1 + (j - 1) * (r - 1) / (n - 1)) / j for j in range(1, n + 1)) / n
        for r in (10, 20, 30, 40)
    ]
    assert metrics["map"] == pytest.approx(sum(by_hand) / 4, rel=1e-12)


def test_precision_within_radius_counts_only_the_documents_within_it():
    db = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]]).bool()
    db_labels = torch.tensor([0, 1, 0, 0])
    query = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]).bool()
    counts, relevant = distance_counts(query, torch.tensor([0, 1]), db, db_labels)
    # query 0: d = 0, 1, 2 within radius 2 (labels 0, 1, 0) → 2/3; query 1: only [1,1,1,1]
    # (d = 0, label 0) and [0,0,1,1] (d = 2, label 0) → 0/2
    assert precision_within_radius(counts, relevant, 2).tolist() == pytest.approx([2 / 3, 0.0])
    metrics = retrieval_metrics(query, torch.tensor([0, 1]), db, db_labels, k=2, radius=0)
    assert metrics["empty_within_radius_0"] == 0.0
    assert metrics["precision_within_radius_0"] == pytest.approx(0.5)


def test_binary_codes_are_the_posterior_modes_in_any_batch_size():
    cfg = ModelConfig(
        latent_dim=12, hidden=[16], posterior="bernoulli", prior="uniform-bernoulli",
        estimator="exact", likelihood="bernoulli",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_vae(cfg, (1, 4, 4))
    data = ImageData("toy", torch.rand(50, 1, 4, 4))
    codes = binary_codes(model, data, batch_size=7)
    with torch.no_grad():
        expected = model.encode(data.images).mean > 0.5
    assert codes.dtype == torch.bool and codes.shape == (50, 12)
    assert torch.equal(codes, expected)
    assert torch.equal(binary_codes(model, data), codes)
    assert 0.2 < codes.float().mean() < 0.8  # not a constant code
