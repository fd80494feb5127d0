"""Epoch time of vaelab's semantic-hashing VAE against a naive dense implementation.

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/semhash_epoch_time.py

Both train the same model — encoder e1 (linear on counts), 64 bits, decoder depth 0, DisARM
with one antithetic pair per document, multinomial decoder over V = 10,000 words, Adam 1e-3,
batch 100 — for one epoch over the same documents of 20 Newsgroups (../shared/data or
--data / $VAELAB_20NEWS):

* vaelab: `Trainer` on `BowData` (CSR counts, dense batches built on the fly), the DisARM
  estimator vectorised over the batch.
* naive: what typical research code does — the whole count matrix dense in memory, and a
  Python loop over the documents of each batch computing each one's DisARM gradient.

The runs alternate; the result is the median of the per-run ratios naive / vaelab (goal ≥ 3),
written to benchmarks/results/semhash_epoch_time.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.files import write_json
from vaelab.models import build_vae
from vaelab.training import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, provenance  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="20news-bydate.tar.gz (default: ../shared/data)")
    p.add_argument("--documents", type=int, default=3000, help="training documents per epoch")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--output", default=str(RESULTS / "semhash_epoch_time.json"))
    return p.parse_args(argv)


def model_config() -> ModelConfig:
    return ModelConfig(network="e1", hidden=[], latent_dim=64, likelihood="multinomial",
                       posterior="bernoulli", prior="uniform-bernoulli", estimator="disarm", samples=1)  # fmt: skip


def vaelab_epoch(train, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_vae(model_config(), train.shape)
    cfg = TrainConfig(
        epochs=1,
        batch_size=100,
        lr=1e-3,
        seed=seed,
        progress=False,
        checkpoint_every=10**6,
        eval_every=10**6,
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, train, cfg, tmp, Config(model=model_config()).to_dict())
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start


def naive_epoch(dense: torch.Tensor, seed: int) -> float:
    """A per-document loop with the same model and estimator, written as research code often is."""
    torch.manual_seed(seed)
    vocab = dense.shape[1]
    enc = torch.nn.Linear(vocab, 64)
    dec = torch.nn.Linear(64, vocab)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    order = torch.randperm(len(dense))
    start = time.perf_counter()
    for b in range(0, len(dense), 100):
        opt.zero_grad()
        total = 0.0
        for i in order[b : b + 100].tolist():
            x = dense[i]
            logits = enc(x)
            u = torch.rand(64)
            b1 = (u < torch.sigmoid(logits)).float()
            b2 = (1 - u < torch.sigmoid(logits)).float()

            f1 = -(x * F.log_softmax(dec(b1), dim=-1)).sum()
            f2 = -(x * F.log_softmax(dec(b2), dim=-1)).sum()
            sign = torch.where(b2 > 0, -1.0, 1.0)
            g = (
                0.5
                * (f1 - f2).detach()
                * sign
                * (b1 != b2).float()
                * torch.sigmoid(logits.abs()).detach()
            )
            kl = (
                64 * torch.log(torch.tensor(2.0))
                - torch.distributions.Bernoulli(logits=logits).entropy().sum()
            )
            loss = 0.5 * (f1 + f2) + (g * logits).sum() + kl
            loss.backward()
            total += loss.item()
        opt.step()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = DataConfig(
        name="20newsgroups",
        path=args.data or str(SHARED_DATA / "20news-bydate.tar.gz"),
        train_limit=args.documents,
    )
    train, _ = load_data(data)
    dense = train.dense()
    times = {"vaelab": [], "naive": []}
    for r in range(args.runs):
        for name in ["vaelab", "naive"] if r % 2 == 0 else ["naive", "vaelab"]:
            t = vaelab_epoch(train, r) if name == "vaelab" else naive_epoch(dense, r)
            times[name].append(t)
            print(f"run {r + 1}: {name} {t:.2f} s", flush=True)
    ratios = [n / v for n, v in zip(times["naive"], times["vaelab"])]
    result = {
        "benchmark": "semhash_epoch_time",
        "speedup": statistics.median(ratios),
        "goal": "speedup >= 3",
        "goal_met": statistics.median(ratios) >= 3,
        "per_run_speedup": ratios,
        "vaelab_seconds": times["vaelab"],
        "naive_seconds": times["naive"],
        "documents": len(train),
        "model": "e1, 64 bits, depth 0, DisARM (1 pair), V = 10,000, batch 100",
        **provenance(),
    }
    write_json(args.output, result)
    print(
        f"speedup naive/vaelab: median {result['speedup']:.1f}× ({', '.join(f'{r:.1f}' for r in ratios)})"
    )
    return result


if __name__ == "__main__":
    main()
