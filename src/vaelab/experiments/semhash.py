"""`vaelab run semhash` and `vaelab run semhash-table`: semantic hashing of 20 Newsgroups with
Bernoulli-latent VAEs (Shekhovtsov, Schlesinger & Flach, ICLR 2022, §4.3, Table 2).

A document's word counts x are encoded into L bits, z ~ Π Bern(σ(ℓ(x))), prior uniform, and
decoded by a multinomial over the vocabulary. Encoders e1 (linear on counts — the consistent
set's encoder), e2 (2 hidden layers of 512 on frequencies), e3 (linear on frequencies);
decoder depth 0–2. The encoder gradient comes from ARM / DisARM / REINFORCE / Gumbel-ST.
Schedule of the paper: 1000 epochs with 1 sample, then 500 with 10, Adam 1e-3.

NELBO is reported per document in the three multinomial conventions (see
`distributions.multinomial`); the paper's numbers and its public reproduction use
`saturated`. Retrieval: precision@100 of test queries against the training set by Hamming
distance between codes 1[q(z|x) > ½], relevant = same newsgroup.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import Config, DataConfig, ModelConfig, at_least, one_of
from ..data import load_data
from ..distributions.multinomial import CONVENTIONS, convention_offset
from ..errors import ConfigError, VaelabError
from ..evaluation import evaluate
from ..evaluation.retrieval import binary_codes, precision_at_k
from ..files import atomic_write_text, read_json, write_json
from ..models import build_vae
from ..registry import ESTIMATORS
from ..report import markdown_table
from ..runs import seed_everything
from ..training import Trainer
from .base import experiment, recipe_training

SCHEDULES = {"paper": (1000, 500), "short": (20, 2)}  # epochs with 1 sample, then with 10

# Table 2 of the paper, test NELBO (saturated convention), decoder depth 0..2 × e1, e2, e3
PAPER_TEST = {
    8: {0: (423, 429, 435), 1: (413, 421, 424), 2: (418, 423, 427)},
    16: {0: (409, 417, 421), 1: (404, 422, 420), 2: (410, 416, 422)},
    32: {0: (396, 413, 416), 1: (399, 413, 418), 2: (406, 416, 421)},
    64: {0: (392, 411, 414), 1: (398, 413, 417), 2: (406, 417, 422)},
}
PAPER_TRAIN = {
    8: {0: (419, 429, 439), 1: (321, 390, 415), 2: (325, 370, 421)},
    16: {0: (382, 398, 419), 1: (201, 329, 407), 2: (164, 269, 413)},
    32: {0: (337, 358, 412), 1: (165, 189, 403), 2: (132, 159, 411)},
    64: {0: (296, 324, 407), 1: (171, 189, 398), 2: (134, 149, 409)},
}
ENCODERS = ("e1", "e2", "e3")


def check_discrete_estimator(name: str) -> None:
    """The codes are bits: refuse an estimator that is not for discrete latents."""
    if not ESTIMATORS.get(name).discrete:
        usable = ", ".join(n for n in ESTIMATORS if ESTIMATORS.get(n).discrete)
        raise ConfigError(
            f"estimator: {name!r} is not an estimator for binary codes; use one of: {usable}"
        )


@dataclass
class SemhashConfig:
    data_path: str | None = None  # 20news-bydate.tar.gz or a load_files folder; else $VAELAB_20NEWS
    vocab_size: int = at_least(1, default=10_000)
    encoder: str = one_of(ENCODERS, default="e1")
    bits: int = at_least(1, default=64)
    decoder_depth: int = at_least(0, default=0)
    decoder_width: int = at_least(1, default=512)
    estimator: str = one_of(ESTIMATORS, default="disarm")  # one for discrete codes
    schedule: str = one_of(tuple(SCHEDULES), default="short")
    epochs_single: int | None = at_least(0, default=None)  # overrides the schedule's phase 1
    epochs_multi: int | None = at_least(0, default=None)  # … and phase 2
    samples_multi: int = at_least(2, default=10)
    batch_size: int = at_least(1, default=100)
    lr: float = at_least(0.0, strict=True, default=1e-3)
    seed: int = 0
    device: str = "auto"
    threads: int | None = at_least(1, default=None)  # torch threads (None: torch's default)
    train_limit: int | None = at_least(1, default=None)
    test_limit: int | None = at_least(1, default=None)
    progress: bool = True

    def __post_init__(self):
        check_discrete_estimator(self.estimator)

    @property
    def phases(self) -> list[tuple[int, int]]:
        """(epochs, samples) of each phase."""
        single, multi = SCHEDULES[self.schedule]
        single = single if self.epochs_single is None else self.epochs_single
        multi = multi if self.epochs_multi is None else self.epochs_multi
        return [(single, 1), (multi, self.samples_multi)]


def run_config(cfg: SemhashConfig, epochs: int, samples: int) -> Config:
    return Config(
        data=DataConfig(
            name="20newsgroups",
            path=cfg.data_path,
            vocab_size=cfg.vocab_size,
            train_limit=cfg.train_limit,
            test_limit=cfg.test_limit,
        ),
        model=ModelConfig(
            network=cfg.encoder,
            hidden=[cfg.decoder_width] * cfg.decoder_depth,
            latent_dim=cfg.bits,
            likelihood="multinomial",
            multinomial_convention="saturated",
            posterior="bernoulli",
            prior="uniform-bernoulli",
            estimator=cfg.estimator,
            samples=samples,
        ),
        train=recipe_training(cfg, epochs=max(epochs, 1), log_every=200),
    )


def nelbo_by_convention(model, data, samples: int) -> dict[str, float]:
    """Mean NELBO per document in every convention (the model trains in `saturated`)."""
    model.samples = samples
    terms = evaluate(model, data, batch_size=100)
    offsets = {c: 0.0 for c in CONVENTIONS}
    for start in range(0, len(data), 2000):
        x = data.batch(slice(start, start + 2000))
        for c in CONVENTIONS:
            offsets[c] += float((convention_offset(x, c) - convention_offset(x, "saturated")).sum())
    out = {
        f"nelbo_{c.replace('-', '_')}": terms["negative_elbo"] + offsets[c] / len(data)
        for c in CONVENTIONS
    }
    return out | {"rate": terms["rate"], "distortion_saturated": terms["distortion"]}


@experiment(
    "semhash", SemhashConfig, "one semantic-hashing VAE on 20 Newsgroups: NELBO, precision@100"
)
def run_semhash(cfg: SemhashConfig, run_dir: Path) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    first = run_config(cfg, *cfg.phases[0])
    train, test = load_data(first.data)
    seed_everything(cfg.seed)
    model = build_vae(first.model, train.shape)
    started = time.perf_counter()
    epochs_run = 0
    for phase, (epochs, samples) in enumerate(cfg.phases, 1):
        if epochs == 0:
            continue
        phase_cfg = run_config(cfg, epochs, samples)
        model.samples = samples
        trainer = Trainer(
            model,
            train,
            phase_cfg.train,
            run_dir / f"phase{phase}",
            phase_cfg.to_dict(),
            evaluate=lambda m: evaluate(m, test),
        )
        trainer.fit()
        epochs_run += epochs
    model.to(trainer.device).eval()
    samples = cfg.samples_multi
    result = {
        "encoder": cfg.encoder,
        "bits": cfg.bits,
        "depth": cfg.decoder_depth,
        "estimator": cfg.estimator,
        "epochs": epochs_run,
        "phases": [{"epochs": e, "samples": s} for e, s in cfg.phases],
        "train": nelbo_by_convention(model, train, samples),
        "test": nelbo_by_convention(model, test, samples),
        "precision_at_100": precision_at_k(
            binary_codes(model, test), test.labels, binary_codes(model, train), train.labels, k=100
        ),
        "convention": "saturated (no multinomial coefficient, relative to the saturated model)",
        "documents": {
            "train": len(train),
            "test": len(test),
            "dropped_empty": [train.dropped_empty, test.dropped_empty],
        },
        "seconds": time.perf_counter() - started,
        "config": asdict(cfg),
    }
    write_json(run_dir / "results.json", result)
    paper = PAPER_TEST.get(cfg.bits, {}).get(cfg.decoder_depth)
    reference = f"{paper[ENCODERS.index(cfg.encoder)]}" if paper else "—"
    rows = [
        [
            c,
            result["train"][f"nelbo_{c.replace('-', '_')}"],
            result["test"][f"nelbo_{c.replace('-', '_')}"],
        ]
        for c in CONVENTIONS
    ]
    report = [
        f"# Semantic hashing: {cfg.encoder}, {cfg.bits} bits, decoder depth {cfg.decoder_depth}\n",
        f"{result['documents']['train']} training / {result['documents']['test']} test documents, "
        f"V = {cfg.vocab_size}; estimator {cfg.estimator}; {epochs_run} epochs "
        f"({', '.join(f'{e} × {s} sample(s)' for e, s in cfg.phases)}), batch {cfg.batch_size}, "
        f"Adam {cfg.lr:g}.\n",
        "## NELBO per document (nats)\n",
        markdown_table(["convention", "train", "test"], rows),
        f"\nPaper (Table 2, test, saturated convention, 1500 epochs): {reference}.\n",
        f"## Retrieval\n\nprecision@100 (test queries vs training set, Hamming): "
        f"{result['precision_at_100']:.4f}\n",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
    return result


# --- the 36-cell table ----------------------------------------------------------------------


@dataclass
class SemhashTableConfig:
    data_path: str | None = None
    vocab_size: int = at_least(1, default=10_000)
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS))
    bits: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    depths: list[int] = field(default_factory=lambda: [0, 1, 2])
    estimator: str = one_of(ESTIMATORS, default="disarm")  # one for discrete codes
    schedule: str = one_of(tuple(SCHEDULES), default="short")
    epochs_single: int | None = at_least(0, default=None)
    epochs_multi: int | None = at_least(0, default=None)
    samples_multi: int = at_least(2, default=10)
    batch_size: int = at_least(1, default=100)
    lr: float = at_least(0.0, strict=True, default=1e-3)
    seed: int = 0
    train_limit: int | None = at_least(1, default=None)
    test_limit: int | None = at_least(1, default=None)
    parallel: str = one_of(("ray", "none"), default="ray")
    address: str | None = None  # a Ray cluster ("ray://host:10001", "auto"); None: start one here
    workers: int | None = at_least(1, default=None)  # cells at once on a local Ray (default: cores)

    def __post_init__(self):
        check_discrete_estimator(self.estimator)
        for e in self.encoders:
            if e not in ENCODERS:
                raise ConfigError(f"encoders: unknown encoder {e!r}; use {', '.join(ENCODERS)}")
        if any(b < 1 for b in self.bits) or any(d < 0 for d in self.depths):
            raise ConfigError("bits must be ≥ 1 and depths ≥ 0")

    def cells(self) -> list[SemhashConfig]:
        common = {k: getattr(self, k) for k in SHARED_SETTINGS}
        return [
            SemhashConfig(
                **common,
                encoder=e,
                bits=b,
                decoder_depth=d,
                threads=1,
                progress=False,
                device="cpu",
            )
            for d in self.depths
            for b in self.bits
            for e in self.encoders
        ]


SHARED_SETTINGS = (
    "data_path", "vocab_size", "estimator", "schedule", "epochs_single", "epochs_multi",
    "samples_multi", "batch_size", "lr", "seed", "train_limit", "test_limit",
)  # fmt: skip


def cell_name(cell: SemhashConfig) -> str:
    return f"{cell.encoder}-{cell.bits}bit-depth{cell.decoder_depth}"


def _run_cell(cell: SemhashConfig, cell_dir: str) -> dict:
    return run_semhash(cell, Path(cell_dir))


def run_cells(cells: list[SemhashConfig], run_dir: Path, cfg: SemhashTableConfig) -> None:
    """Run the cells that have no results yet: on Ray (local or a cluster) or one by one."""
    todo = [c for c in cells if not (run_dir / cell_name(c) / "results.json").exists()]
    print(
        f"[semhash-table] {len(cells) - len(todo)} of {len(cells)} cells done; running {len(todo)}"
    )
    if not todo:
        return
    if cfg.parallel == "none":
        for i, cell in enumerate(todo, 1):
            print(f"[semhash-table] {i}/{len(todo)} {cell_name(cell)}")
            _run_cell(cell, str(run_dir / cell_name(cell)))
        return
    try:
        import ray
    except ImportError:
        raise VaelabError(
            "semhash-table: Ray is not installed (pip install 'vaelab[ray]'), or set parallel=none"
        ) from None
    from tqdm.auto import tqdm

    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=cfg.workers or os.cpu_count(), include_dashboard=False, log_to_driver=False
        )
    try:
        task = ray.remote(num_cpus=1)(_run_cell)
        pending = {task.remote(c, str(run_dir.resolve() / cell_name(c))): c for c in todo}
        with tqdm(total=len(pending), desc="cells") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(done[0])
                ray.get(done[0])  # re-raises a cell's error here
                bar.set_postfix_str(cell_name(cell))
                bar.update(1)
    finally:
        ray.shutdown()


@experiment(
    "semhash-table",
    SemhashTableConfig,
    "Table 2: NELBO and precision@100 over encoders × bits × depths",
)
def run_semhash_table(cfg: SemhashTableConfig, run_dir: Path) -> dict:
    cells = cfg.cells()
    run_cells(cells, run_dir, cfg)
    results = [read_json(run_dir / cell_name(c) / "results.json") for c in cells]
    rows = []
    for r in results:
        paper = PAPER_TEST.get(r["bits"], {}).get(r["depth"])
        paper_train = PAPER_TRAIN.get(r["bits"], {}).get(r["depth"])
        i = ENCODERS.index(r["encoder"])
        rows.append({
            "encoder": r["encoder"], "bits": r["bits"], "depth": r["depth"], "epochs": r["epochs"],
            "estimator": r["estimator"], "train_nelbo": r["train"]["nelbo_saturated"],
            "test_nelbo": r["test"]["nelbo_saturated"], "precision_at_100": r["precision_at_100"],
            "convention": "saturated", "paper_train_nelbo": paper_train[i] if paper_train else None,
            "paper_test_nelbo": paper[i] if paper else None,
        })  # fmt: skip
    write_json(run_dir / "table.json", {"cells": rows})
    write_table_report(run_dir, rows, cfg)
    return {"cells": rows}


def best_encoder_per_row(rows: list[dict]) -> dict[tuple[int, int], str]:
    """(bits, depth) → the encoder with the lowest test NELBO."""
    best: dict[tuple[int, int], dict] = {}
    for r in rows:
        key = (r["bits"], r["depth"])
        if key not in best or r["test_nelbo"] < best[key]["test_nelbo"]:
            best[key] = r
    return {k: v["encoder"] for k, v in best.items()}


def write_table_report(run_dir: Path, rows: list[dict], cfg: SemhashTableConfig) -> None:
    by = {(r["encoder"], r["bits"], r["depth"]): r for r in rows}
    encoders, depths = [e for e in ENCODERS if e in cfg.encoders], sorted(cfg.depths)
    headers = ["bits"] + [f"d{d} {e}" for d in depths for e in encoders]

    def table(key: str, paper: dict) -> str:
        lines = []
        for bits in sorted(cfg.bits):
            ours = [
                by.get((e, bits, d), {}).get(key, float("nan")) for d in depths for e in encoders
            ]
            ref = [
                paper.get(bits, {}).get(d, (None,) * 3)[ENCODERS.index(e)]
                for d in depths
                for e in encoders
            ]
            lines.append(
                [bits, *(f"{o:.1f} ({p})" if p else f"{o:.1f}" for o, p in zip(ours, ref))]
            )
        return markdown_table(headers, lines)

    precision = [
        [
            bits,
            *(
                f"{by.get((e, bits, d), {}).get('precision_at_100', float('nan')):.3f}"
                for d in depths
                for e in encoders
            ),
        ]
        for bits in sorted(cfg.bits)
    ]
    winners = best_encoder_per_row(rows)
    e1_best = sum(1 for v in winners.values() if v == "e1")
    epochs = sorted({r["epochs"] for r in rows})
    report = [
        "# Semantic hashing on 20 Newsgroups — Table 2\n",
        f"Estimator {cfg.estimator}, schedule {cfg.schedule} ({epochs} epochs per cell), batch "
        f"{cfg.batch_size}, Adam {cfg.lr:g}. NELBO per document, nats, saturated convention; the "
        "paper's value (1500 epochs, ARM) in brackets.\n",
        "## Test NELBO\n",
        table("test_nelbo", PAPER_TEST),
        "\n## Train NELBO\n",
        table("train_nelbo", PAPER_TRAIN),
        "\n## precision@100 (test queries vs training set)\n",
        markdown_table(headers, precision),
        f"\ne1 has the lowest test NELBO in {e1_best} of {len(winners)} (bits, depth) rows.\n",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
