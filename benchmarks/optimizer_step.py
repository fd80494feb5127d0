"""Cost of one Adam update on CPU: PyTorch's three implementations on the parameters vaelab
trains, with the second moments normal and with them decayed into denormal range.

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/optimizer_step.py

Parameters: the MLP VAE of benchmarks/rd_sweep.py (Fashion-MNIST, hidden [512, 256], 16
latents: 12 tensors, 0.95 M values) and a semhash-sized dense layer (10,000 × 500).
Implementations: `single` (a Python loop over tensors, about ten passes each: what
`torch.optim.Adam` does on CPU by default), `foreach` (multi-tensor ops) and `fused` (one
kernel per tensor, the trainer's choice since `training/schedules.py:_fused`). The
`denormal` case sets every second moment to 1e-40 first: a weight whose gradient is always
zero (a border pixel of Fashion-MNIST feeds a constant 0) reaches it after ~10⁵ steps of
v ← 0.999·v, and torch.sqrt on denormals is ~30× slower.

At each thread count (`--threads`), each (parameters, case) times `--steps` updates of every
implementation in turn, `--repeats` times interleaved (the order rotates); reported: median
milliseconds per update and the median per-repeat ratio single / fused with a 95 % interval
of the mean ratio. Writes benchmarks/results/optimizer_step.json (`--output`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from vaelab.evaluation.verdicts import interval
from vaelab.files import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402

KINDS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
SHAPES = {
    "rd_sweep MLP": [(512, 784), (512,), (256, 512), (256,), (32, 256), (32,),
                     (256, 16), (256,), (512, 256), (512,), (784, 512), (784,)],
    "semhash dense layer": [(10_000, 500), (500,)],
}  # fmt: skip


def optimizer(shapes, kind: str, denormal: bool, seed: int) -> torch.optim.Adam:
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(*s, generator=generator)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * (1e-21 if denormal else 1.0)
    opt = torch.optim.Adam(params, lr=1e-3, **KINDS[kind])
    opt.step()  # creates the state
    if denormal:
        for p in params:
            opt.state[p]["exp_avg_sq"].fill_(1e-40)
    return opt


def time_steps(opt, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--output", default=str(RESULTS / "optimizer_step.json"))
    args = p.parse_args(argv)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, shapes in SHAPES.items():
            for denormal in (False, True):
                opts = {k: optimizer(shapes, k, denormal, seed=0) for k in KINDS}
                seconds = {k: [] for k in KINDS}
                for r in range(args.repeats):
                    order = list(KINDS)[r % 3 :] + list(KINDS)[: r % 3]
                    for k in order:
                        if denormal:  # keep the moments denormal: Adam's decay keeps them so
                            for st in opts[k].state.values():
                                st["exp_avg_sq"].fill_(1e-40)
                        seconds[k].append(time_steps(opts[k], args.steps))
                ratios = [a / b for a, b in zip(seconds["single"], seconds["fused"])]
                stat = interval(ratios)
                row = {
                    "threads": threads,
                    "parameters": name,
                    "second_moments": "denormal" if denormal else "normal",
                    **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in seconds.items()},
                    "single_over_fused_median": statistics.median(ratios),
                    "single_over_fused_ci95": [stat["low"], stat["high"]],
                }
                rows.append(row)
                print(
                    f"{threads} thread(s) {name:20s} {row['second_moments']:8s} "
                    + "  ".join(f"{k} {row[f'{k}_ms']:.3f} ms" for k in KINDS)
                    + f"  single/fused {row['single_over_fused_median']:.1f}×"
                )
    result = {"benchmark": "optimizer_step", "repeats": args.repeats, "steps": args.steps,
              "rows": rows, **provenance()}  # fmt: skip
    write_json(args.output, result)
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
