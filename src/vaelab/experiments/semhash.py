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
from ..evaluation.figures import plot_per_epoch
from ..evaluation.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED, shown, stat, verdict
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
from ..sweeps import Cell, Target, make_cell, run_sweep, summarise
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
    result["learning_curve"] = logged
    write_json(run_dir / "results.json", result)
    plot_per_epoch(
        run_dir / "learning_curve.png",
        {
            "train (running mean over the epoch)": [
                (r["epoch"], r["nelbo"]) for r in logged["train"]
            ],
            "test (one estimate per evaluation)": [
                (r["epoch"], r["nelbo"]) for r in logged["test"]
            ],
        },
        "NELBO per document, saturated (nats)",
        marks=[sum(e for e, _ in cfg.phases[:i]) for i in range(1, len(cfg.phases))],
    )
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
        "\n![learning curve](learning_curve.png)\n",
        f"Learning curve: the train running mean per epoch and every test estimate "
        f"({'after every epoch' if cfg.selection == 'lowest' else 'at the end of each phase'}); "
        "dashed: where a phase ends.\n",
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


NELBO_KEYS = {c.replace("-", "_"): f"nelbo_{c.replace('-', '_')}" for c in CONVENTIONS}


def semhash_cell(cfg: SemhashConfig, cell_dir: Path) -> dict[str, float]:
    """`run_semhash` in `cell_dir` (resumes); the cell's metrics: train (a pass after
    training) and selected test NELBO in every convention, the collapsed baseline's, the gain
    over it, the train running mean, the test rate and retrieval."""
    result = run_semhash(cfg, cell_dir)
    base, test = result["collapsed_baseline"], result["selected_test"]
    out = {}
    for key in NELBO_KEYS.values():
        out |= {f"train_{key}": result["train"][key], f"test_{key}": test[key]}
        out |= {f"collapsed_{split}_{key}": base[split][key] for split in ("train", "test")}
    return out | {
        "train_running_mean_nelbo_saturated": result["train_running_mean"]["nelbo_saturated"],
        "train_gain": result["gain"]["train"],
        "test_gain": base["test"]["nelbo_saturated"] - test["nelbo_saturated"],
        "test_rate": result["test"]["rate"],
        **{k: result["retrieval"][k] for k in RETRIEVAL},
    }


RETRIEVAL = ("precision_at_100", "precision_within_radius_2", "map")
SEMHASH = Target("semhash", SemhashConfig, semhash_cell, "seed", "device", {"progress": False})
ORDER = ("e1", "e2", "e3")  # the paper's ordering of test NELBO, lowest first


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
    "Table 2: NELBO and retrieval over encoders × bits × depths × seeds, with verdicts",
)
def run_semhash_table(cfg: SemhashTableConfig, run_dir: Path) -> dict:
    """Run (or resume) every cell, then write table.json and report.md (and the grid runner's
    sweep.md) of what finished; refuses, naming them, when cells failed."""
    records = run_sweep(table_cells(cfg), run_dir, SEMHASH, cfg.sweep)
    cells, rows = table_rows(records, cfg), order_verdicts(records)
    failed = [
        {"cell": r["name"], "error": r.get("error", r["status"])}
        for r in records
        if r["status"] != "done"
    ]
    table = {"seeds": cfg.seeds, "cells": cells, "rows": rows, "failed": failed}
    write_json(run_dir / "table.json", table)
    write_table_report(run_dir, table, cfg)
    if failed:
        raise VaelabError(
            f"semhash-table: {len(failed)} of {len(records)} cells failed ("
            + "; ".join(f"{f['cell']}: {f['error']}" for f in failed[:3])
            + f"); the others are in {run_dir / 'report.md'}; fix and run again "
            "(finished cells are kept)"
        )
    return table


def table_rows(records: list[dict], cfg: SemhashTableConfig) -> list[dict]:
    """Per (encoder, bits, depth), in the cells' order: the seeds that finished, how many
    failed, every metric of `semhash_cell` as a `stat` over the finished seeds (NELBOs by
    convention; the collapsed baseline, the same for every seed, as its mean), the paper's
    NELBOs and the settings that make the numbers what they are."""
    rows = []
    for s in summarise(records)[2]:
        e, bits, depth = (s["point"][k] for k in ("encoder", "bits", "depth"))
        done = [r for r in records if r["point"] == s["point"] and r["status"] == "done"]

        def of(metric: str, done: list[dict] = done) -> dict:
            return stat([r["metrics"][metric] for r in done])

        rows.append({
            "encoder": e, "bits": bits, "depth": depth, "seeds": s["seeds"],
            "failed": s["failed"], "epochs": cfg.total_epochs, "schedule": cfg.schedule,
            "estimator": cfg.estimator, "selection": cfg.selection,
            "preprocessing": cfg.preprocessing, "count_smoothing": cfg.count_smoothing,
            **{f"{split}_nelbo": {c: of(f"{split}_{k}") for c, k in NELBO_KEYS.items()}
               for split in ("train", "test")},
            "train_nelbo_running_mean": of("train_running_mean_nelbo_saturated"),
            "collapsed_baseline": {
                split: {c: of(f"collapsed_{split}_{k}")["mean"] for c, k in NELBO_KEYS.items()}
                for split in ("train", "test")
            },
            "gain": {"train": of("train_gain"), "test": of("test_gain")},
            "test_rate": of("test_rate"),
            **{k: of(k) for k in RETRIEVAL},
            "paper_train_nelbo": paper_value(PAPER_TRAIN, e, bits, depth),
            "paper_test_nelbo": paper_value(PAPER_TEST, e, bits, depth),
        })  # fmt: skip
    return rows


def order_verdicts(records: list[dict]) -> list[dict]:
    """Per (bits, depth): the paper's ordering e1 < e2 < e3 of test NELBO as two claims, each
    decided by `verdict` on the per-seed difference of the two encoders' test NELBOs (paired
    by seed; the convention cancels), and the row's verdict — reproduced when both are,
    contradicted when either is, else inconclusive."""
    nelbo: dict[tuple[int, int], dict[str, dict[int, float]]] = {}
    for r in (r for r in records if r["status"] == "done"):
        key = (r["point"]["bits"], r["point"]["depth"])
        by_seed = nelbo.setdefault(key, {}).setdefault(r["point"]["encoder"], {})
        by_seed[r["seed"]] = r["metrics"]["test_nelbo_saturated"]
    rows = []
    for (bits, depth), by in nelbo.items():
        claims = []
        for low, high in zip(ORDER, ORDER[1:]):
            a, b = by.get(low, {}), by.get(high, {})
            claims.append(verdict(
                f"{low} has a lower test NELBO than {high} ({bits} bits, depth {depth})",
                [b[s] - a[s] for s in sorted(a) if s in b], +1,
            ))  # fmt: skip
        outcomes = {c["verdict"] for c in claims}
        overall = (
            CONTRADICTED if CONTRADICTED in outcomes
            else REPRODUCED if outcomes == {REPRODUCED} else INCONCLUSIVE
        )  # fmt: skip
        paper = PAPER_TEST.get(bits, {}).get(depth)
        rows.append({
            "bits": bits, "depth": depth, "claims": claims, "verdict": overall,
            "paper_order_holds": None if paper is None else bool(paper[0] < paper[1] < paper[2]),
        })  # fmt: skip
    return rows


def plus_minus(s: dict) -> str:
    """A `stat` as '72.6 ± 1.3' (mean ± half-width of its 95 % interval), or the mean alone."""
    if s["mean"] is None:
        return "—"
    if s["ci95"] is None:
        return f"{s['mean']:.4g}"
    return f"{s['mean']:.4g} ± {(s['ci95'][1] - s['ci95'][0]) / 2:.2g}"


def write_table_report(run_dir: Path, table: dict, cfg: SemhashTableConfig) -> None:
    by = {(r["encoder"], r["bits"], r["depth"]): r for r in table["cells"]}
    encoders, depths = [e for e in ENCODERS if e in cfg.encoders], sorted(cfg.depths)
    headers = ["bits"] + [f"d{d} {e}" for d in depths for e in encoders]

    def grid(value, paper: dict | None = None) -> str:
        """A bits × (depth, encoder) table of value(cell), the paper's number in brackets."""

        def entry(e: str, bits: int, d: int) -> str:
            ours = plus_minus(value(by[(e, bits, d)])) if (e, bits, d) in by else "—"
            ref = paper_value(paper, e, bits, d) if paper else None
            return ours if ref is None else f"{ours} ({ref})"

        lines = [
            [bits, *(entry(e, bits, d) for d in depths for e in encoders)]
            for bits in sorted(cfg.bits)
        ]
        return markdown_table(headers, lines)

    over_seeds = (
        f"the mean over seeds {cfg.seeds} ± the half-width of its 95 % Student-t interval"
        if len(cfg.seeds) > 1
        else f"seed {cfg.seeds[0]} alone (no interval)"
    )
    selection = (
        "the lowest per-epoch test estimate (the paper's rule: chosen on the test set, biased low)"
        if cfg.selection == "lowest"
        else "after the last epoch"
    )
    report = [
        "# Semantic hashing on 20 Newsgroups — Table 2\n",
        f"Estimator {cfg.estimator} (the paper: ARM); schedule {cfg.schedule}, "
        f"{cfg.total_epochs} epochs per cell (the paper: 1000 × 1 + 500 × 10 samples); batch "
        f"{cfg.batch_size}, Adam {cfg.lr:g}; data: {cfg.data_label()}. Test NELBO "
        f"{selection}; train NELBO a pass after training. NELBO per document, nats; "
        f"{over_seeds}; the paper's value (its convention unstated, on the Rainbow-lexed "
        "corpus) in brackets — absolute values of other preprocessings are not comparable, "
        "the gain over the collapsed baseline is. Every cell: [sweep.md](sweep.md).\n",
    ]
    for c in NELBO_KEYS:
        report += [
            f"## Test NELBO, {c} convention\n",
            grid(lambda r, c=c: r["test_nelbo"][c], PAPER_TEST),
            "",
        ]
    report += [
        "## Train NELBO, saturated convention\n",
        grid(lambda r: r["train_nelbo"]["saturated"], PAPER_TRAIN),
        "\n## Gain over the collapsed baseline, test (nats per document; every convention)\n",
        grid(lambda r: r["gain"]["test"]),
        "\n## precision@100 (test queries vs training set, ties in expectation)\n",
        grid(lambda r: r["precision_at_100"]),
        "\n## MAP\n",
        grid(lambda r: r["map"]),
        "\n## The paper's ordering e1 < e2 < e3 of test NELBO, per row\n",
        "Each claim's effect is the per-seed difference of test NELBOs (the higher encoder's "
        "minus the lower's; paired by seed), decided by `evaluation.verdicts.verdict`; a row is "
        "reproduced when both claims are, contradicted when either is.\n",
        markdown_table(
            ["bits", "depth", "e2 − e1", "verdict", "e3 − e2", "verdict", "row", "paper's order"],
            [
                [
                    row["bits"],
                    row["depth"],
                    *(x for c in row["claims"] for x in (shown(c), c["verdict"])),
                    row["verdict"],
                    {True: "holds", False: "does not hold", None: "—"}[row["paper_order_holds"]],
                ]
                for row in table["rows"]
            ],
        ),  # fmt: skip
        "",
    ]
    if table["failed"]:
        report += [
            f"## Failed cells ({len(table['failed'])}; run the same command again to retry them)\n",
            *(f"- `{f['cell']}`: {f['error']}" for f in table["failed"]),
            "",
        ]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
