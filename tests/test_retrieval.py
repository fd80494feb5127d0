"""Precision@k by Hamming distance against known values; binary codes of a Bernoulli-latent
VAE."""

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.data import ImageData
from vaelab.evaluation.retrieval import binary_codes, precision_at_k
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
    # nearest by Hamming: [0,0] (d=0), then [0,1] and [1,0] (d=1, tie → database order), then [1,1]
    assert precision_at_k(query, torch.tensor([0]), db, db_labels, k=1) == 1.0
    assert precision_at_k(query, torch.tensor([0]), db, db_labels, k=2) == 1.0
    assert precision_at_k(query, torch.tensor([0]), db, db_labels, k=3) == pytest.approx(2 / 3)
    assert precision_at_k(query, torch.tensor([1]), db, db_labels, k=4) == 0.5


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
