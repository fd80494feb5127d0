"""Semantic-hashing retrieval by Hamming distance between binary codes (Shekhovtsov et al.
2022, §4.3; Chaidaroon & Fang 2017): precision@k, precision within a Hamming radius and mean
average precision of test queries against a database; a retrieved document is relevant when
it has the query's label. Codes are 1[q(z_j|x) > ½].

Ties. Codes of L bits give only L + 1 distances, so many documents tie. Breaking ties by
database order (as `torch.topk` on a stable key does) favours whatever the database was
sorted by — with a label-sorted database, the low-index labels; a fully collapsed code would
then score below chance. Every measure here is instead its **expectation over a uniformly
random order within each tie**, computed exactly from the counts of documents and of relevant
documents at each distance (McSherry & Najork 2008, "Computing information retrieval
performance measures efficiently in the presence of tied scores"):
- precision@k: every document nearer than the k-th is retrieved; of the m tied at the k-th
  distance, with r relevant, the remaining k − a are drawn at random: r/m of them relevant;
- average precision: a relevant document at a uniform position j of its tie, with N documents
  and R relevant ones nearer, sees precision (R + 1 + (j−1)(r−1)/(m−1)) / (N + j) in
  expectation over the others' order; AP is the mean of that over the relevant documents;
- precision within radius ρ: relevant / retrieved among documents at distance ≤ ρ (no tie
  issue; a query with none retrieved scores 0, the usual convention, and their share is kept).
The chance level of every measure is the same measure with one constant code for all
documents: then every document ties, and precision@k and precision within any radius equal
the frequency of the query's label in the database.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .encoding import encode_data


def binary_codes(model, data, batch_size: int = 1000) -> Tensor:
    """1[q(z_j = 1|x) > ½] for every document of `data`, bool [N, L]."""
    return encode_data(model, data, batch_size=batch_size).mean > 0.5


@torch.no_grad()
def distance_counts(
    query_codes: Tensor,
    query_labels: Tensor,
    database_codes: Tensor,
    database_labels: Tensor,
    chunk: int = 512,
) -> tuple[Tensor, Tensor]:
    """Per query and Hamming distance d = 0..L: how many database documents lie at d, and
    how many of them share the query's label (float64 [Q, L + 1] each)."""
    n_bits = query_codes.shape[1]
    db = database_codes.double() * 2 - 1  # ±1: Hamming = (L − ⟨a, b⟩) / 2
    counts, relevant = [], []
    for start in range(0, len(query_codes), chunk):
        q = query_codes[start : start + chunk].double() * 2 - 1
        distance = ((n_bits - q @ db.T) / 2).round().long()  # [q, N]
        same = (database_labels[None, :] == query_labels[start : start + chunk, None]).double()
        zeros = torch.zeros(len(q), n_bits + 1, dtype=torch.float64)
        counts.append(zeros.scatter_add(1, distance, torch.ones_like(same)))
        relevant.append(zeros.scatter_add(1, distance, same))
    return torch.cat(counts), torch.cat(relevant)


def _harmonic(n: Tensor) -> Tensor:
    """H(n) = Σ_{i ≤ n} 1/i for real n ≥ 0 (digamma(n + 1) + γ)."""
    return torch.special.digamma(n + 1) + 0.5772156649015329


def expected_precision_at_k(counts: Tensor, relevant: Tensor, k: int) -> Tensor:
    """Per query: precision@k in expectation over random orders within ties [Q]."""
    k = min(k, int(counts[0].sum()))
    before = counts.cumsum(1) - counts  # documents strictly nearer than each distance
    taken = (k - before).clamp(min=0).minimum(counts)
    share = torch.where(counts > 0, relevant / counts.clamp(min=1), 0.0)
    return (taken * share).sum(1) / k


def expected_average_precision(counts: Tensor, relevant: Tensor) -> Tensor:
    """Per query: average precision over the whole ranking in expectation over random
    orders within ties [Q]; NaN for a query with no relevant document."""
    nearer = counts.cumsum(1) - counts  # N: documents nearer than the tie
    relevant_nearer = relevant.cumsum(1) - relevant  # R
    m, r = counts, relevant
    # Σ_{j=1}^{m} 1/(N + j) and Σ_{j=1}^{m} (j − 1)/(N + j) = m − (N + 1)·Σ 1/(N + j)
    inverse = _harmonic(nearer + m) - _harmonic(nearer)
    lagged = m - (nearer + 1) * inverse
    others = torch.where(m > 1, (r - 1) / (m - 1).clamp(min=1), 0.0)
    per_tie = (relevant_nearer + 1) * inverse + others * lagged
    total = torch.where(m > 0, r / m.clamp(min=1), 0.0) * per_tie
    return total.sum(1) / relevant.sum(1)  # NaN when no document is relevant


def precision_within_radius(counts: Tensor, relevant: Tensor, radius: int) -> Tensor:
    """Per query: relevant / retrieved among documents within Hamming `radius` (0 when
    none is retrieved) [Q]."""
    retrieved = counts[:, : radius + 1].sum(1)
    hits = relevant[:, : radius + 1].sum(1)
    return torch.where(retrieved > 0, hits / retrieved.clamp(min=1), 0.0)


def precision_at_k(
    query_codes: Tensor,
    query_labels: Tensor,
    database_codes: Tensor,
    database_labels: Tensor,
    k: int = 100,
) -> float:
    """Mean over queries of the expected fraction of the k Hamming-nearest database items
    that share the query's label (ties in random order, `expected_precision_at_k`)."""
    counts, relevant = distance_counts(query_codes, query_labels, database_codes, database_labels)
    return float(expected_precision_at_k(counts, relevant, k).mean())


def retrieval_metrics(
    query_codes: Tensor,
    query_labels: Tensor,
    database_codes: Tensor,
    database_labels: Tensor,
    k: int = 100,
    radius: int = 2,
) -> dict[str, float]:
    """precision@k, precision within `radius`, MAP (over queries with a relevant document),
    the share of queries with nothing within `radius`, and each measure's chance level (one
    constant code for every document)."""

    def measured(q: Tensor, db: Tensor) -> dict[str, float]:
        counts, relevant = distance_counts(q, query_labels, db, database_labels)
        ap = expected_average_precision(counts, relevant)
        return {
            f"precision_at_{k}": float(expected_precision_at_k(counts, relevant, k).mean()),
            f"precision_within_radius_{radius}": float(
                precision_within_radius(counts, relevant, radius).mean()
            ),
            "map": float(ap[~ap.isnan()].mean()),
            f"empty_within_radius_{radius}": float(
                (counts[:, : radius + 1].sum(1) == 0).double().mean()
            ),
        }

    ours = measured(query_codes, database_codes)
    constant = measured(
        torch.zeros_like(query_codes[:, :1]), torch.zeros_like(database_codes[:, :1])
    )
    return ours | {
        f"chance_{name}": value for name, value in constant.items() if "empty" not in name
    }
