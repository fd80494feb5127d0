"""One β-conditional decoupled VAE against a sweep of K separately trained decoupled β-VAEs,
like for like, over seeds, for one or more variants of the conditional model.

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/rd_sweep.py                      # σ optimal-shared on both sides
    python benchmarks/rd_sweep.py --sigma learned      # learned-shared vs learned-beta
    python benchmarks/rd_sweep.py --classic            # σ_x² = ½ fixed on both sides
    python benchmarks/rd_sweep.py --variant film tilted gate-mr-vae latent   # a table

Fashion-MNIST; the same MLP Gaussian VAE (hidden [512, 256], 16 latents), the same epochs,
batch size, Adam settings and learning-rate schedule (`--lr-schedule`) for every run. The
sweep trains K = 8 models per seed with β log-spaced on [a, b] = [0.01, 10]; each variant's
conditional model (one per seed) draws β as its variant says (by default log β ~ U[log a,
log b] once per minibatch) and is FiLM-conditioned (YOTO) on it by default.

σ_x, the same semantics on both sides (`--sigma`):
- optimal (default): `optimal-shared` on both — the training batch's optimum, one σ for the
  batch, which the conditional side can use because β is one per minibatch too;
- learned: `learned-shared` (one learned σ) for the sweep against `learned-beta` (a learned
  σ(β)) for the conditional model;
- `--classic`: σ_x² = ½ fixed on both (Σ(x−μ)² + β·KL: MR-VAE / YOTO as published), written
  to rd_sweep_classic.json.
Test losses are D + β·R per example on the test set, with σ_x frozen from training (the
running average of the training optimum, a function of β on the conditional side), so both
sides' losses are bounds, independent of the test data's errors.

Per variant: per β the relative gap (conditional − separate) / |separate| of each seed (the
conditional model of seed s against the separate model of seed s at that β), its mean and
95 % Student-t interval over seeds; the worst mean gap; the wall-clock ratio = (seconds to
train the K sweep models) / (seconds to train the conditional model), over all seeds, both
measured in this one process around `vaelab.runs.train_run` (data loading, training, final
test evaluation), with the machine's load average recorded before and after.

Variants (`VARIANTS`; the first given is the default reported at the top level): the β law
and scheme, the range β is drawn from (wider than the one evaluated), MR-VAE gating
(sigmoid, or the paper's decoder form) against FiLM, where the modulation enters (every
block, the blocks next to the code, the output heads), its strength and the conditioner's
width; and one diagnostic, `film-2x-epochs` (twice the epochs: not a candidate, it halves the
cost advantage), which tells a gap that more training closes from one it does not. Each row
also says where its gap sits: at the two ends of the β range, and the rate the conditional
model leaves unspent at the smallest β. A variant the σ semantics cannot take (a per-example β with a
σ fitted to the whole batch) is refused in one line before anything trains.

Goals: wallclock_ratio ≥ 7.5; mean relative gap ≤ 1 % at every β.
Smoke check (seconds): --epochs 1 --train-limit 512 --test-limit 256 --k 2 --seeds 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.errors import ConfigError
from vaelab.evaluation import evaluate
from vaelab.evaluation.verdicts import interval
from vaelab.files import write_json
from vaelab.runs import train_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, fashion_mnist_folder, provenance  # noqa: E402

GOAL_RATIO, GOAL_GAP = 7.5, 0.01

# name → ModelConfig fields of the conditional side (on top of conditioning = "film",
# per-minibatch log-uniform β at every block)
VARIANTS: dict[str, dict] = {
    "film": {},
    "gate": {"conditioning": "gate"},
    "gate-mr-vae": {"conditioning": "gate", "gate_decoder": "mr-vae"},
    "gate-mlp": {"conditioning": "gate", "condition_hidden": 32},
    "tilted": {"beta_law": "tilted", "beta_tilt": 2.0},
    "tilted-1": {"beta_law": "tilted", "beta_tilt": 1.0},
    # between log-uniform (small-β gaps) and tilted-1 (large-β gaps), by the last sweep
    "tilted-0.5": {"beta_law": "tilted", "beta_tilt": 0.5},
    "narrow-tilted-1": {"condition_hidden": 8, "beta_law": "tilted", "beta_tilt": 1.0},
    "stratified": {"beta_sampling": "stratified"},  # per example: --sigma learned only
    "latent": {"condition_at": ["latent"]},
    "heads": {"condition_at": ["blocks", "heads"]},
    "strong": {"condition_scale": 0.3},
    "wide": {"condition_hidden": 128},
    "narrow": {"condition_hidden": 8},  # a quarter of FiLM's conditioner parameters: cheaper steps
    # β drawn from a wider range than the one evaluated, so that its ends are interior
    "wide-range": {"widen": [2.0, 2.0]},
    "tilted-1-wide-range": {"beta_law": "tilted", "beta_tilt": 1.0, "widen": [1.0, 3.0]},
    # a diagnostic, not a candidate (it halves the cost advantage): twice the epochs, to
    # tell a gap that more training closes (a step budget) from one it does not (capacity)
    "film-2x-epochs": {"epochs_factor": 2},
}
# variant keys the benchmark reads itself: the conditional run's epochs × factor, and the β
# range it samples, [a / low, b · high] (evaluation stays on [a, b])
RUN_KEYS = ("epochs_factor", "widen")
# --sigma → (the sweep's σ mode, the conditional model's)
SIGMAS = {"optimal": ("optimal-shared", "optimal-shared"), "learned": ("learned-shared", "learned-beta")}  # fmt: skip


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds: integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds: distinct integers ≥ 0, got {text!r}")
    return seeds


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", help="Fashion-MNIST folder (default: $VAELAB_FASHION_MNIST or ../shared)"
    )
    p.add_argument("--k", type=int, default=8, help="number of β in the sweep")
    p.add_argument("--beta-range", type=float, nargs=2, default=[0.01, 10.0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="constant", help="train.lr_schedule of both sides")
    p.add_argument("--sigma", choices=sorted(SIGMAS), default="optimal")
    p.add_argument(
        "--classic",
        action="store_true",
        help="the classic regimes instead: σ_x² = ½ fixed (Σ(x−μ)² + β·KL) for both",
    )
    p.add_argument(
        "--variant",
        nargs="+",
        choices=list(VARIANTS),
        default=["film"],
        help="conditional variants to measure (the first is the default reported on top)",
    )
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="e.g. 0,1,2")
    p.add_argument(
        "--train-limit", type=int, default=None, help="first N training images (quick checks)"
    )
    p.add_argument("--test-limit", type=int, default=None, help="first N test images")
    p.add_argument(
        "--output", help="default: results/rd_sweep.json (rd_sweep_classic.json with --classic)"
    )
    args = p.parse_args(argv)
    if args.classic and args.sigma != "optimal":
        p.error("--classic fixes σ_x on both sides; leave --sigma out")
    if len(set(args.variant)) < len(args.variant):
        p.error("--variant: name each variant once")
    args.output = args.output or str(
        RESULTS / ("rd_sweep_classic.json" if args.classic else "rd_sweep.json")
    )
    return args


def sigma_fields(args, conditional: bool) -> dict:
    if args.classic:
        return dict(sigma_mode="fixed", sigma=0.5**0.5)
    return dict(sigma_mode=SIGMAS[args.sigma][conditional])


def config(args, beta: float, seed: int, variant: str | None) -> Config:
    """A sweep run's config (variant None) or a conditional variant's."""
    conditional = variant is not None
    fields = sigma_fields(args, conditional)
    spec = VARIANTS[variant] if conditional else {}
    if conditional:
        low, high = spec.get("widen", (1.0, 1.0))
        fields |= dict(conditioning="film", beta_range=[args.beta_range[0] / low, args.beta_range[1] * high])  # fmt: skip
        fields |= {k: v for k, v in spec.items() if k not in RUN_KEYS}
    model = ModelConfig(network="mlp", hidden=[512, 256], latent_dim=16, beta=beta, **fields)
    return Config(
        data=DataConfig(
            name="fashion-mnist",
            path=str(fashion_mnist_folder(args.data)),
            train_limit=args.train_limit,
            test_limit=args.test_limit,
        ),
        model=model,
        train=TrainConfig(
            epochs=args.epochs * spec.get("epochs_factor", 1),
            batch_size=args.batch_size,
            lr=args.lr,
            lr_schedule=args.lr_schedule,
            seed=seed,
            progress=False,
            eval_every=args.epochs,
            checkpoint_every=10_000,
            log_every=200,
        ),
    )


def timed_run(cfg: Config, run_dir: Path):
    start = time.perf_counter()
    run = train_run(cfg, run_dir, report=False)
    return run, time.perf_counter() - start


def loss(run, beta: float) -> dict[str, float]:
    m = evaluate(run.model, run.test_data, beta=beta)
    return {"rate": m["rate"], "distortion": m["distortion"], "loss": m["distortion"] + beta * m["rate"]}  # fmt: skip


def mean(values) -> float:
    return float(np.mean(values))


def load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def summarise(betas, seeds, separate, conditional, sweep_seconds, cond_seconds) -> dict:
    """A variant's row: per β the losses and rates (means over seeds) and the gap's mean and
    95 % interval over seeds; the worst mean gap; the wall-clock ratio."""
    per_beta = []
    for beta in betas:
        c = [conditional[s][beta] for s in seeds]
        p = [separate[s][beta] for s in seeds]
        gaps = [(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(c, p)]
        gap = interval(gaps)
        per_beta.append({
            "beta": beta,
            "conditional_loss": mean([a["loss"] for a in c]),
            "separate_loss": mean([b["loss"] for b in p]),
            "relative_gap": gap["mean"],
            "gap_ci95": None if gap["low"] is None else [gap["low"], gap["high"]],
            "gap_per_seed": gaps,
            "conditional_rate": mean([a["rate"] for a in c]),
            "separate_rate": mean([b["rate"] for b in p]),
            "conditional_distortion": mean([a["distortion"] for a in c]),
            "separate_distortion": mean([b["distortion"] for b in p]),
            "goal_met": gap["mean"] <= GOAL_GAP,
        })  # fmt: skip
    ratio = sum(sweep_seconds.values()) / sum(cond_seconds.values())
    return {
        "wallclock_ratio": ratio,
        "wallclock_ratio_per_seed": [sweep_seconds[s] / cond_seconds[s] for s in seeds],
        "sweep_seconds": sum(sweep_seconds.values()),
        "conditional_seconds": sum(cond_seconds.values()),
        "worst_gap": max(r["relative_gap"] for r in per_beta),
        "beta_met": sum(r["goal_met"] for r in per_beta),
        # where the gap sits: the two ends of the range, and the rate the conditional model
        # does not spend at the smallest β (nats; > 0: less than the separate model)
        "gap_smallest_beta": per_beta[0]["relative_gap"],
        "gap_largest_beta": per_beta[-1]["relative_gap"],
        "rate_deficit_smallest_beta": per_beta[0]["separate_rate"] - per_beta[0]["conditional_rate"],
        "per_beta": per_beta,
        "goal_met": ratio >= GOAL_RATIO and all(r["goal_met"] for r in per_beta),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    betas = [float(f"{b:.4g}") for b in np.geomspace(*args.beta_range, args.k)]
    for variant in args.variant:  # refused before anything trains
        try:
            config(args, 1.0, args.seeds[0], variant)
        except ConfigError as exc:
            sys.exit(f"rd_sweep: variant {variant!r} with these σ semantics: {exc}")
    print(
        f"rd_sweep: K = {args.k} β {betas}, {args.epochs} epochs, seeds {args.seeds}, "
        f"variants {args.variant}, threads {torch.get_num_threads()}"
    )
    load_before = load()
    separate = {s: {} for s in args.seeds}
    conditional = {v: {s: {} for s in args.seeds} for v in args.variant}
    sweep_seconds, cond_seconds = {}, {v: {} for v in args.variant}
    with tempfile.TemporaryDirectory(prefix="vaelab-rd-sweep-") as tmp:
        for variant in (args.variant[0], None):  # untimed: the first run's imports and reads
            warm = config(args, 1.0, args.seeds[0], variant)
            warm.data.train_limit = warm.data.test_limit = args.batch_size
            train_run(warm, Path(tmp) / f"warm-up-{variant or 'sweep'}", report=False)
        for seed in args.seeds:  # side by side: each seed's conditional runs, then its sweep
            for variant in args.variant:
                run, seconds = timed_run(
                    config(args, 1.0, seed, variant), Path(tmp) / f"{variant}-seed{seed}"
                )
                cond_seconds[variant][seed] = seconds
                conditional[variant][seed] = {beta: loss(run, beta) for beta in betas}
                print(f"seed {seed} conditional {variant}: {seconds:.1f} s")
            sweep_seconds[seed] = 0.0
            for beta in betas:
                run, seconds = timed_run(
                    config(args, beta, seed, None), Path(tmp) / f"beta{beta:g}-seed{seed}"
                )
                sweep_seconds[seed] += seconds
                separate[seed][beta] = loss(run, beta)
                print(f"seed {seed} separate β = {beta:g}: {seconds:.1f} s")

    variants = []
    for variant in args.variant:
        row = summarise(
            betas, args.seeds, separate, conditional[variant], sweep_seconds, cond_seconds[variant]
        )
        cfg = config(args, 1.0, args.seeds[0], variant)
        model = cfg.model
        variants.append({
            "name": variant, "fields": VARIANTS[variant], "conditioning": model.conditioning,
            "beta_sampling": model.beta_sampling, "beta_law": model.beta_law,
            "beta_range": model.beta_range, "epochs": cfg.train.epochs, **row,
        })  # fmt: skip
        print(
            f"{variant:12s} ratio {row['wallclock_ratio']:.2f}  worst gap "
            f"{100 * row['worst_gap']:+.2f} %  gaps "
            + " ".join(f"{100 * r['relative_gap']:+.2f}" for r in row["per_beta"])
        )
    default = variants[0]
    sweep_sigma, cond_sigma = (
        ("fixed", "fixed") if args.classic else SIGMAS[args.sigma]
    )  # fmt: skip
    result = {
        "benchmark": "rd_sweep",
        "default_variant": default["name"],
        "wallclock_ratio": default["wallclock_ratio"],
        "seeds": args.seeds,
        "beta_sampling": default["beta_sampling"],
        "beta_law": default["beta_law"],
        "sigma_mode": {"sweep": sweep_sigma, "conditional": cond_sigma},
        "per_beta": default["per_beta"],
        "variants": variants,
        "goals": {
            f"wallclock_ratio >= {GOAL_RATIO}": default["wallclock_ratio"] >= GOAL_RATIO,
            f"mean relative_gap <= {GOAL_GAP} at every beta": all(
                r["goal_met"] for r in default["per_beta"]
            ),
        },
        "loss_definition": "test D + beta * R per example, nats; D with sigma_x frozen from training (the running average of the training batches' optimum, a function of beta for the conditional model, or the learned sigma_x): it does not depend on the test data or the evaluation batch; relative_gap = (conditional - separate) / |separate| per seed, mean and 95 % Student-t interval over seeds",
        "machine_load": {"loadavg_1min_before": load_before, "loadavg_1min_after": load()},
        "settings": {k: v for k, v in vars(args).items() if k != "output"} | {"betas": betas},
        **provenance(),
    }
    write_json(args.output, result)
    met = sum(r["goal_met"] for r in default["per_beta"])
    print(
        f"{default['name']}: wallclock ratio {default['wallclock_ratio']:.2f}; mean gap ≤ 1 % "
        f"at {met}/{len(betas)} β"
    )
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
