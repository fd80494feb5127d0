"""What TensorBoard logging costs a training run: the same small run with train.loggers = []
and with ["tensorboard"], side by side.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine):

    python benchmarks/tracking_overhead.py

Both sides train the same MLP Gaussian VAE (hidden [128, 64], 8 latents, learned shared σ_x)
on scikit-learn's 8×8 digits (1,437 training images) from the same seed, batch 64, for
--epochs epochs (default 15: 345 steps), a train record every --log-every steps and a
test evaluation every epoch (so TensorBoard logs every train term, every test term and the
two image grids 15 times, and the hyper-parameters at the end), through
`vaelab.training.Trainer(...).fit()` with progress off, each in a fresh temporary run
directory (never a resume). The timing covers Trainer construction (building the loggers,
importing TensorBoard's writer once it is imported) and fit().

The repetitions are interleaved (the two settings alternate which goes first) after one
untimed run of each (imports, kernels, allocator). Each round gives a ratio tensorboard /
none of the two back-to-back runs (a pair shares the machine's drift); the result is the
mean ratio with its 95 % Student-t interval over rounds, the median ratio, and the per-step
overhead in ms. The final test losses of the two settings must be equal (a logger must not
change training: its images are drawn inside torch.random.fork_rng). Before each timing
the script waits (up to --quiet-wait s) for a second in which other processes use < 5 % of
a core, and it records the CPU-seconds other processes used during each timed run.

Results: benchmarks/results/tracking_overhead.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.evaluation import evaluate
from vaelab.evaluation.verdicts import stat
from vaelab.files import write_json
from vaelab.models import build_vae
from vaelab.runs import seed_everything
from vaelab.training import Trainer, distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402
from trainer_overhead import timed, wait_for_quiet  # noqa: E402

MODEL = ModelConfig(
    network="mlp",
    hidden=[128, 64],
    latent_dim=8,
    likelihood="gaussian",
    sigma_mode="learned-shared",
)
SETTINGS = {"none": [], "tensorboard": ["tensorboard"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--log-every", type=int, default=10, help="steps between train records")
    p.add_argument("--runs", type=int, default=11, help="interleaved rounds of both settings")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--quiet-wait", type=float, default=60.0)
    p.add_argument("--output", default=str(RESULTS / "tracking_overhead.json"))
    args = p.parse_args(argv)
    if min(args.epochs, args.batch_size, args.log_every, args.runs) < 1:
        p.error("--epochs, --batch-size, --log-every and --runs must be ≥ 1")
    return args


def train_once(loggers: list[str], train, test, args, device) -> tuple[float, int]:
    """One fresh run; (final test loss, bytes the loggers wrote)."""
    tcfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        log_every=args.log_every,
        seed=args.seed,
        device=str(device),
        progress=False,
        loggers=loggers,
    )
    dcfg = DataConfig(name="digits")
    with tempfile.TemporaryDirectory(prefix="vaelab-tracking-") as tmp:
        run_dir = Path(tmp) / "run"
        seed_everything(args.seed)
        model = build_vae(MODEL, train.shape)
        run_config = Config(data=dcfg, model=MODEL, train=tcfg).to_dict()
        trainer = Trainer(
            model, train, tcfg, run_dir, run_config, evaluate=lambda m: evaluate(m, test)
        )
        loss = trainer.fit().last_test["loss"]
        logged = sum(p.stat().st_size for p in (run_dir / "tensorboard").rglob("*") if p.is_file())
    return loss, logged


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = distributed.resolve_device("auto")
    train, test = load_data(DataConfig(name="digits"))
    steps = args.epochs * -(-len(train) // args.batch_size)
    print(
        f"tracking overhead: digits {len(train)} train / {len(test)} test, {steps} steps, "
        f"log every {args.log_every}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for loggers in SETTINGS.values():  # untimed warm-up
        train_once(loggers, train, test, args, device)

    seconds = {name: [] for name in SETTINGS}
    foreign = {name: [] for name in SETTINGS}
    losses = {name: [] for name in SETTINGS}
    written = {name: [] for name in SETTINGS}
    for r in range(args.runs):
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            if args.quiet_wait > 0:
                wait_for_quiet(args.quiet_wait)
            t, (loss, size), _, other = timed(
                lambda n=name: train_once(SETTINGS[n], train, test, args, device), device
            )
            seconds[name].append(t)
            foreign[name].append(other)
            losses[name].append(loss)
            written[name].append(size)
        ratio = seconds["tensorboard"][-1] / seconds["none"][-1]
        print(
            f"round {r + 1}/{args.runs} ({order[0]} first): none {seconds['none'][-1]:.2f} s, "
            f"tensorboard {seconds['tensorboard'][-1]:.2f} s, ratio {ratio:.3f}"
        )

    ratios = [t / n for t, n in zip(seconds["tensorboard"], seconds["none"])]
    summary = stat(ratios)
    medians = {name: statistics.median(ts) for name, ts in seconds.items()}
    result = {
        "benchmark": "tracking_overhead",
        "ratio": summary,
        "ratio_definition": "per round: tensorboard_seconds / none_seconds of the same round; "
        "mean over rounds with its 95 % Student-t interval",
        "median_ratio": statistics.median(ratios),
        "per_round_ratio": ratios,
        "seconds": seconds,
        "median_seconds": medians,
        "per_step_overhead_ms": (medians["tensorboard"] - medians["none"]) / steps * 1e3,
        "identical_training": len({*losses["none"], *losses["tensorboard"]}) == 1,
        "final_test_loss": losses,
        "tensorboard_bytes": written["tensorboard"][-1],
        "other_processes_cpu_seconds": foreign,
        "steps": steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "log_every": args.log_every,
        "evaluations": args.epochs,
        "model": dataclasses.asdict(MODEL),
        "device": str(device),
    } | provenance()
    write_json(Path(args.output), result)
    ci = summary["ci95"]
    shown = f" [95 % {ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    print(
        f"ratio tensorboard / none = {summary['mean']:.3f}{shown}, median "
        f"{result['median_ratio']:.3f}; {result['per_step_overhead_ms']:+.3f} ms/step; "
        f"identical training: {result['identical_training']}; wrote {args.output}"
    )
    return result


if __name__ == "__main__":
    main()
