"""`vaelab run semhash` and `vaelab run semhash-table`: semantic hashing of 20 Newsgroups with
Bernoulli-latent VAEs (Shekhovtsov, Schlesinger & Flach, ICLR 2022, §4.3, Table 2).

A document's word counts x are encoded into L bits, z ~ Π Bern(σ(ℓ(x))), prior uniform, and
decoded by a multinomial over the vocabulary. Encoders e1 (linear on counts — the consistent
set's encoder), e2 (2 hidden layers of 512 on frequencies), e3 (linear on frequencies);
decoder depth 0–2. The encoder gradient comes from ARM / DisARM / REINFORCE / Gumbel-ST.
Schedule of the paper: 1000 epochs with 1 sample, then 500 with 10, Adam 1e-3.

NELBO is reported per document in the three multinomial conventions (see
`distributions.multinomial`). The paper never states its convention (its eq. 13 keeps the
base measure); its public reproduction (ReScience C 9(2), 2023, code proger/vae) reports
`saturated` on the Rainbow-lexed corpus, with a small count smoothing, and the lowest
one-sample test estimate over its epochs. Absolute NELBOs of different preprocessings are
not comparable: beside each is the **collapsed baseline** (the training unigram for every
document, rate 0, `data.bow.collapsed_baseline`) and the model's **gain** over it — the same in every
convention, since a convention adds the same constant per document to both. Retrieval
(`evaluation.retrieval`): precision@100, precision within Hamming radius 2 and MAP of test
queries against the training set, codes 1[q(z|x) > ½], relevant = same newsgroup, ties
counted in expectation over a random order, with chance levels.

Data settings, labelled in every report and results.json: `preprocessing` "vaelab" (data
set `20newsgroups`) or "rainbow" (`20newsgroups-rainbow`, approximating the papers' Rainbow-
lexed corpus: `data.bow`, measured by benchmarks/semhash_preset.py); `strip_headers`;
`count_smoothing` (the reproduction's: every document gets one pseudo-word spread by the
smoothed training unigram, `data.bow.smooth_counts`; the three conventions stay defined for
the non-integer counts — lgamma in `full`, x log(x/n) in `saturated`).

Checkpoints: every phase is a run directory of its own (`phase1/`, `phase2/`, each with its
checkpoint; the last one holds the final weights, named in results.json's `final_run`).
`vaelab eval RUN_DIR/phase2` re-evaluates them without retraining — the NELBO in the three
conventions, the collapsed baseline, the gain and retrieval (`runs.word_count_measures`, the
same function this recipe reports with), count smoothing re-applied from the checkpoint's
config. `vaelab eval RUN_DIR` on the recipe's directory names the phases to choose from.

`semhash-table` runs one `semhash` per encoder × bits × depth × seed as a cell of the grid
runner (`sweeps`, target `SEMHASH`) and tabulates the means over seeds with 95 % intervals.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from ..config import Config, DataConfig, ModelConfig
from ..data.bow import convention_shifts, in_conventions
from ..distributions.multinomial import CONVENTIONS
from ..errors import VaelabError
from ..evaluation import evaluate
from ..files import atomic_write_text, read_jsonl, write_json
from ..models import build_vae
from ..report import markdown_table
from ..runs import (
    WORD_COUNTS,
    load_run_data,
    retrieval_section,
    seed_everything,
    word_count_measures,
)
from ..sweeps import (
    Cell,
    Target,
    interval,
    make_cell,
    run_sweep,
    show,
    summarise,
)
from ..training import Trainer
from .base import experiment
from .settings import (
    DATASETS_BY_PREPROCESSING,
    ENCODERS,
    SemhashConfig,
    SemhashSettings,
    SemhashTableConfig,
    recipe_training,
)

# Table 2 of the paper, test NELBO (convention unstated), decoder depth 0..2 × e1, e2, e3
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


def paper_value(paper: dict, encoder: str, bits: int, depth: int) -> int | None:
    """The paper's number for a cell in `PAPER_TEST` or `PAPER_TRAIN`; None where it has none."""
    row = paper.get(bits, {}).get(depth)
    return row[ENCODERS.index(encoder)] if row else None


def run_config(cfg: SemhashConfig, epochs: int, samples: int, steps_per_epoch: int = 200) -> Config:
    """One phase's run: a train record per epoch (its running mean over the epoch's batches,
    as the reproduction reports) and a test evaluation at the end, or after every epoch when
    `selection` is "lowest"."""
    every_epoch = {"eval_every": 1} if cfg.selection == "lowest" else {}
    return Config(
        data=DataConfig(
            name=DATASETS_BY_PREPROCESSING[cfg.preprocessing],
            path=cfg.data_path,
            vocab_size=cfg.vocab_size,
            train_limit=cfg.train_limit,
            test_limit=cfg.test_limit,
            strip_headers=cfg.strip_headers,
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
        train=recipe_training(cfg, epochs=max(epochs, 1), log_every=steps_per_epoch, **every_epoch),
    )


def logged_nelbos(run_dir: Path, phases: int) -> dict[str, list[dict]]:
    """The train (running mean over each epoch) and test records of every phase's
    metrics.jsonl, each with its epoch counted over all phases."""
    out: dict[str, list[dict]] = {"train": [], "test": []}
    done = 0
    for phase in range(1, phases + 1):
        records = read_jsonl(run_dir / f"phase{phase}" / "metrics.jsonl")
        for r in records:
            if r["split"] in out:
                out[r["split"]].append(
                    {"epoch": done + r["epoch"] + 1, "nelbo": r["negative_elbo"]}
                )
        done += max((r["epoch"] + 1 for r in records), default=0)
    return out


@experiment(
    "semhash", SemhashConfig, "one semantic-hashing VAE on 20 Newsgroups: NELBO, precision@100"
)
def run_semhash(cfg: SemhashConfig, run_dir: Path) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    first = run_config(cfg, *cfg.phases[0])
    train, test = load_run_data(first, cfg.word_counts)
    seed_everything(cfg.seed)
    model = build_vae(first.model, train.shape)
    started = time.perf_counter()
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    extra = {WORD_COUNTS: cfg.word_counts} if cfg.word_counts else {}
    for phase, (epochs, samples) in enumerate(cfg.phases, 1):
        if epochs == 0:
            continue
        phase_cfg = run_config(cfg, epochs, samples, steps_per_epoch)
        model.samples = samples
        trainer = Trainer(
            model,
            train,
            phase_cfg.train,
            run_dir / f"phase{phase}",
            phase_cfg.to_dict() | extra,
            evaluate=lambda m: evaluate(m, test),
        )
        trainer.fit()
        final_run = f"phase{phase}"
    model.to(trainer.device).eval()
    measures = word_count_measures(model, train, test, samples=cfg.samples_multi)
    result: dict = {
        "encoder": cfg.encoder,
        "bits": cfg.bits,
        "depth": cfg.decoder_depth,
        "estimator": cfg.estimator,
        "epochs": cfg.total_epochs,
        "phases": [{"epochs": e, "samples": s} for e, s in cfg.phases],
        **{k: measures[k] for k in ("train", "test", "collapsed_baseline", "gain", "retrieval")},
        "convention": "every NELBO in the three conventions of distributions.multinomial; "
        "trained in saturated (no coefficient, relative to the saturated model)",
        "preprocessing": cfg.preprocessing,
        "strip_headers": cfg.strip_headers,
        "count_smoothing": cfg.count_smoothing,
        "final_run": final_run,
        "documents": {
            "train": len(train),
            "test": len(test),
            "dropped_empty": [train.dropped_empty, test.dropped_empty],
        },
        "seconds": time.perf_counter() - started,
        "config": asdict(cfg),
    }
    logged = logged_nelbos(run_dir, len(cfg.phases))
    last_epoch = logged["train"][-1]
    result["train_running_mean"] = in_conventions(last_epoch["nelbo"], convention_shifts(train))
    if cfg.selection == "lowest":
        lowest = min(logged["test"], key=lambda r: r["nelbo"])
        result["test_lowest"] = in_conventions(lowest["nelbo"], convention_shifts(test)) | {
            "epoch": lowest["epoch"],
            "estimate": f"{cfg.phases[0][1]} / {cfg.samples_multi} sample(s) per document "
            "in the two phases, one pass over the test set per epoch",
        }
    result["selection"] = cfg.selection
    result["selected_test"] = result["test_lowest"] if cfg.selection == "lowest" else result["test"]
    write_json(run_dir / "results.json", result)
    reference = paper_value(PAPER_TEST, cfg.encoder, cfg.bits, cfg.decoder_depth) or "—"
    base = result["collapsed_baseline"]
    keys = {c: f"nelbo_{c.replace('-', '_')}" for c in CONVENTIONS}
    rows = [
        [c, result["train"][k], result["test"][k], base["train"][k], base["test"][k]]
        for c, k in keys.items()
    ]
    report = [
        f"# Semantic hashing: {cfg.encoder}, {cfg.bits} bits, decoder depth {cfg.decoder_depth}\n",
        f"{result['documents']['train']} training / {result['documents']['test']} test documents, "
        f"V = {cfg.vocab_size}; estimator {cfg.estimator}; {cfg.total_epochs} epochs "
        f"({', '.join(f'{e} × {s} sample(s)' for e, s in cfg.phases)}), batch {cfg.batch_size}, "
        f"Adam {cfg.lr:g}. Data: {cfg.data_label()}.\n",
        "## NELBO per document (nats)\n",
        markdown_table(
            ["convention", "train", "test", "collapsed baseline, train", "… test"], rows
        ),
        f"\nGain over the collapsed baseline (training unigram, rate 0; the same in every "
        f"convention): train {result['gain']['train']:.1f}, test {result['gain']['test']:.1f} "
        "nats per document — the number comparable across preprocessings.\n",
        f"\nTrain NELBO as the running mean over the last epoch's batches (the reproduction's "
        f"train number; the table's is a pass after training): "
        f"{result['train_running_mean']['nelbo_saturated']:.1f} (saturated).\n",
        selection_text(result),
        f"\nPaper (Table 2, test, 1500 epochs, its convention unstated, on the Rainbow-lexed "
        f"corpus, the lowest estimate over epochs): {reference}.\n",
        *retrieval_section(result["retrieval"]),
        f"\nThe final weights are in `{final_run}/` (each phase keeps its checkpoint); "
        f"`vaelab eval {run_dir / final_run}` re-evaluates them without retraining.\n",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
    return result


def selection_text(result: dict) -> str:
    """The report's sentence on which test NELBO the cell reports (`SELECTIONS`)."""
    if result["selection"] == "final":
        return '\nReported test NELBO: after the last epoch (`selection = "final"`).\n'
    low = result["test_lowest"]
    return (
        f'\nReported test NELBO (`selection = "lowest"`, the paper\'s rule): the lowest '
        f"per-epoch test estimate, {low['nelbo_saturated']:.1f} (saturated) at epoch "
        f"{low['epoch']} — chosen by looking at the test set, and a minimum of noisy "
        "estimates, so biased low.\n"
    )


# --- the 36-cell table, on the grid runner ----------------------------------------------------


def semhash_cell(cfg: SemhashConfig, cell_dir: Path) -> dict[str, float]:
    """`run_semhash` in `cell_dir` (resumes); the cell's `METRICS`."""
    result = run_semhash(cfg, cell_dir)
    return {
        "train_nelbo": result["train"]["nelbo_saturated"],
        "test_nelbo": result["selected_test"]["nelbo_saturated"],
        "test_rate": result["test"]["rate"],
        "test_gain": result["gain"]["test"],
        "precision_at_100": result["retrieval"]["precision_at_100"],
        "map": result["retrieval"]["map"],
    }


METRICS = (
    "train_nelbo",
    "test_nelbo",
    "test_rate",
    "test_gain",
    "precision_at_100",
    "map",
)  # of `semhash_cell`
SEMHASH = Target("semhash", SemhashConfig, semhash_cell, "seed", "device", {"progress": False})


def table_cells(cfg: SemhashTableConfig) -> list[Cell]:
    """The table's cells: `<encoder>-<bits>bit-depth<depth>/seed<s>`, point {encoder, bits,
    depth}."""
    shared = {f.name: getattr(cfg, f.name) for f in fields(SemhashSettings)}
    cells = []
    for d in cfg.depths:
        for b in cfg.bits:
            for e in cfg.encoders:
                config = SemhashConfig(**shared, encoder=e, bits=b, decoder_depth=d)
                point = {"encoder": e, "bits": b, "depth": d}
                cells += [
                    make_cell(SEMHASH, f"{e}-{b}bit-depth{d}/seed{s}", config, point, s)
                    for s in cfg.seeds
                ]
    return cells


@experiment(
    "semhash-table",
    SemhashTableConfig,
    "Table 2: NELBO and precision@100 over encoders × bits × depths (× seeds)",
)
def run_semhash_table(cfg: SemhashTableConfig, run_dir: Path) -> dict:
    """Run (or resume) every cell, then write table.json and report.md (and the grid runner's
    sweep.md) of what finished; refuses, naming them, when cells failed."""
    records = run_sweep(table_cells(cfg), run_dir, SEMHASH, cfg.sweep)
    rows = table_rows(records, cfg)
    failed = [
        {"cell": r["name"], "error": r.get("error", r["status"])}
        for r in records
        if r["status"] != "done"
    ]
    write_json(run_dir / "table.json", {"seeds": cfg.seeds, "cells": rows, "failed": failed})
    write_table_report(run_dir, rows, failed, cfg)
    if failed:
        raise VaelabError(
            f"semhash-table: {len(failed)} of {len(records)} cells failed ("
            + "; ".join(f"{f['cell']}: {f['error']}" for f in failed[:3])
            + f"); the others are in {run_dir / 'report.md'}; fix and run again "
            "(finished cells are kept)"
        )
    return {"cells": rows, "failed": failed}


def table_rows(records: list[dict], cfg: SemhashTableConfig) -> list[dict]:
    """Per (encoder, bits, depth), in the cells' order: the seeds that finished, how many
    failed, the mean of every metric of `METRICS` over the finished seeds (None without one)
    and its 95 % interval (`sweeps.interval`, in "intervals"), and the paper's NELBOs."""
    _, _, summary = summarise(records)
    rows = []
    for s in summary:
        e, bits, depth = (s["point"][k] for k in ("encoder", "bits", "depth"))
        stats = {m: s["stats"].get(m, interval([])) for m in METRICS}
        rows.append({
            "encoder": e, "bits": bits, "depth": depth, "epochs": cfg.total_epochs,
            "estimator": cfg.estimator, "seeds": s["seeds"], "failed": s["failed"],
            "preprocessing": cfg.preprocessing, "count_smoothing": cfg.count_smoothing,
            **{m: stats[m]["mean"] for m in METRICS}, "intervals": stats,
            "convention": "saturated",
            "paper_train_nelbo": paper_value(PAPER_TRAIN, e, bits, depth),
            "paper_test_nelbo": paper_value(PAPER_TEST, e, bits, depth),
        })  # fmt: skip
    return rows


def best_encoder_per_row(rows: list[dict]) -> dict[tuple[int, int], str]:
    """(bits, depth) → the encoder with the lowest test NELBO (mean over seeds), among the
    rows that have one."""
    best: dict[tuple[int, int], dict] = {}
    for r in (r for r in rows if r["test_nelbo"] is not None):
        key = (r["bits"], r["depth"])
        if key not in best or r["test_nelbo"] < best[key]["test_nelbo"]:
            best[key] = r
    return {k: v["encoder"] for k, v in best.items()}


def write_table_report(
    run_dir: Path, rows: list[dict], failed: list[dict], cfg: SemhashTableConfig
) -> None:
    by = {(r["encoder"], r["bits"], r["depth"]): r for r in rows}
    encoders, depths = [e for e in ENCODERS if e in cfg.encoders], sorted(cfg.depths)
    headers = ["bits"] + [f"d{d} {e}" for d in depths for e in encoders]

    def entry(key: str, paper: dict | None, e: str, bits: int, d: int) -> str:
        ours = show(by[(e, bits, d)]["intervals"][key]) if (e, bits, d) in by else "—"
        ref = paper_value(paper, e, bits, d) if paper else None
        return ours if ref is None else f"{ours} ({ref})"

    def table(key: str, paper: dict | None = None) -> str:
        lines = [
            [bits, *(entry(key, paper, e, bits, d) for d in depths for e in encoders)]
            for bits in sorted(cfg.bits)
        ]
        return markdown_table(headers, lines)

    winners = best_encoder_per_row(rows)
    e1_best = sum(1 for v in winners.values() if v == "e1")
    over_seeds = (
        f"the mean over seeds {cfg.seeds} ± the half-width of its 95 % Student-t interval; "
        if len(cfg.seeds) > 1
        else f"seed {cfg.seeds[0]}; "
    )
    report = [
        "# Semantic hashing on 20 Newsgroups — Table 2\n",
        f"Estimator {cfg.estimator}, schedule {cfg.schedule} ({cfg.total_epochs} epochs per cell), "
        f"batch {cfg.batch_size}, Adam {cfg.lr:g}; data: {cfg.data_label()}. NELBO per "
        "document, nats, saturated "
        f"convention; {over_seeds}the paper's value (1500 epochs, ARM) in brackets. Every "
        "cell: [sweep.md](sweep.md).\n",
        "## Test NELBO\n",
        table("test_nelbo", PAPER_TEST),
        "\n## Train NELBO\n",
        table("train_nelbo", PAPER_TRAIN),
        "\n## precision@100 (test queries vs training set)\n",
        table("precision_at_100"),
        f"\ne1 has the lowest test NELBO in {e1_best} of {len(winners)} (bits, depth) rows.\n",
    ]
    if failed:
        report += [
            f"## Failed cells ({len(failed)}; run the same command again to retry them)\n",
            *(f"- `{f['cell']}`: {f['error']}" for f in failed),
            "",
        ]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
