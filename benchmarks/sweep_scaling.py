"""How a sweep scales with workers: 8 small digits cells with 1 and with 2 concurrent workers.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine):

    python benchmarks/sweep_scaling.py

Each cell is an ordinary `vaelab sweep` run of a decoupled Gaussian MLP VAE on scikit-learn's
8×8 digits (hidden [256, 128], 8 latents, σ_x learned, 1437 training images, --epochs each),
β over 8 log-spaced values; every worker has one CPU and one torch thread (cpus_per_run = 1).
One local Ray cluster (2 CPUs) serves every sweep, started before the timing; a sweep's
wall-clock is measured around `vaelab.sweep` (scheduling, cell start-up, training, test
evaluation, writing run directories and the table), in fresh directories each time. The two
settings are interleaved (1, 2, 1, 2, ...) for --repeats rounds so that drifts of the
machine's speed hit both alike; speedup = mean t(1 worker) / mean t(2 workers), with the 95 %
interval of the ratio from the per-round ratios (Student t).

Goal: speedup ≥ 1.7 on this 2-core machine. Results: benchmarks/results/sweep_scaling.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vaelab.files import write_json
from vaelab.sweeps import interval, sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=8)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of (1, 2) workers")
    p.add_argument("--out", default=str(RESULTS / "sweep_scaling.json"))
    return p.parse_args(argv)


def base_config(epochs: int) -> dict:
    return {
        "data": {"name": "digits"},
        "model": {
            "network": "mlp",
            "hidden": [256, 128],
            "latent_dim": 8,
            "sigma_mode": "learned-shared",
        },
        "train": {"epochs": epochs, "batch_size": 64, "log_every": 100, "checkpoint_every": 1000},
    }


def timed_sweep(config: dict, betas: list[float], workers: int, root: Path) -> float:
    with tempfile.TemporaryDirectory(dir=root) as run_dir:
        started = time.perf_counter()
        records = sweep(
            config,
            {"model.beta": betas},
            [0],
            run_dir,
            cpus_per_run=1,
            max_concurrent=workers,
            progress=False,
        )
        seconds = time.perf_counter() - started
    failed = [r["name"] for r in records if r["status"] != "done"]
    if failed:
        raise SystemExit(f"cells failed: {failed}")
    return seconds


def main(argv=None) -> None:
    import ray

    args = parse_args(argv)
    betas = [float(b) for b in np.logspace(-2, 1, args.cells)]
    config = base_config(args.epochs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        timed_sweep(config, betas[:2], 2, Path(tmp))  # warm-up: workers import torch once
        for round_ in range(args.repeats):
            for workers in (1, 2):
                seconds = timed_sweep(config, betas, workers, Path(tmp))
                times[workers].append(seconds)
                print(f"round {round_ + 1}: {workers} worker(s) {seconds:.1f} s", flush=True)
    ray.shutdown()
    t1, t2 = np.mean(times[1]), np.mean(times[2])
    ratios = interval([a / b for a, b in zip(times[1], times[2])])
    goal = 1.7
    if ratios["low"] is not None and ratios["low"] >= goal:
        verdict = "met: the 95 % interval of the per-round speedup lies above 1.7"
    elif t1 / t2 >= goal:
        verdict = (
            "met by the estimate; the 95 % interval of the per-round speedup reaches below 1.7"
        )
    else:
        verdict = "not met"
    result = {
        "speedup": float(t1 / t2),
        "speedup_per_round": ratios,
        "cells": args.cells,
        "seconds_1_worker": times[1],
        "seconds_2_workers": times[2],
        "goal": "speedup ≥ 1.7",
        "met": bool(t1 / t2 >= goal),
        "verdict": verdict,
        "setting": {
            "epochs": args.epochs,
            "betas": betas,
            "cpus_per_run": 1,
            "ray_cpus": 2,
            "repeats": args.repeats,
            "order": "interleaved 1, 2 workers per round; one warm-up sweep first",
        },
    } | provenance()
    write_json(args.out, result)
    print(
        f"speedup {t1 / t2:.2f} (rounds: {', '.join(f'{a / b:.2f}' for a, b in zip(times[1], times[2]))});"
        f" {verdict}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
