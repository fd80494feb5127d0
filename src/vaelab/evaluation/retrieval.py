"""Semantic-hashing retrieval: precision@k of test queries against a database by Hamming
distance between binary codes (Shekhovtsov et al. 2022, §4.3; Chaidaroon & Fang 2017).

Codes are 1[q(z_j|x) > ½]. For each query the k database documents nearest in Hamming
distance are retrieved (ties broken by database order, which `torch.topk` on a stable key
makes deterministic); a retrieved document is relevant when it has the query's label.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .encoding import encode_data


def binary_codes(model, data, batch_size: int = 1000) -> Tensor:
    """1[q(z_j = 1|x) > ½] for every document of `data`, bool [N, L]."""
    return encode_data(model, data, batch_size=batch_size).mean > 0.5


@torch.no_grad()
def precision_at_k(
    query_codes: Tensor,
    query_labels: Tensor,
    database_codes: Tensor,
    database_labels: Tensor,
    k: int = 100,
    chunk: int = 512,
) -> float:
    """Mean over queries of the fraction of the k Hamming-nearest database items that share
    the query's label."""
    k = min(k, len(database_codes))
    n_bits = query_codes.shape[1]
    db = database_codes.float() * 2 - 1  # ±1: Hamming = (L − ⟨a, b⟩) / 2
    # distance + index / N as the key: nearest first, ties by database order
    tie_break = torch.arange(len(db), dtype=torch.float64) / len(db)
    hits = 0.0
    for start in range(0, len(query_codes), chunk):
        q = query_codes[start : start + chunk].float() * 2 - 1
        distance = (n_bits - q @ db.T) / 2
        key = distance.double() + tie_break
        nearest = torch.topk(key, k, dim=1, largest=False).indices
        same = database_labels[nearest] == query_labels[start : start + chunk, None]
        hits += float(same.float().mean(1).sum())
    return hits / len(query_codes)
