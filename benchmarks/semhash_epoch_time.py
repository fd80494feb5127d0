"""Epoch time of the semantic-hashing VAE (issue 15 item 8): the multinomial likelihood before
and after its sparse formula, in both phases of the paper's schedule, where the time goes, and
what the paper's full schedule costs on this machine and on a GPU.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine; ~20 min):

    python benchmarks/semhash_epoch_time.py

A check of the script itself (~1 min; its numbers mean little on a busy machine):

    python benchmarks/semhash_epoch_time.py --documents 200 --test-documents 100 --runs 1 \
        --cell-steps 1 --cells e1-64-0 --profile-steps 1 --threads 1 \
        --output /tmp/semhash_epoch_time_check.json

The model is the depth-0, 64-bit e1 cell of Table 2 (Shekhovtsov et al., ICLR 2022): encoder e1
(linear on counts), DisARM, multinomial decoder over V = 10,000 words, Adam 1e-3, batch 100,
trained for one epoch over the first --documents training documents of 20 Newsgroups
(../shared/data or --data / $VAELAB_20NEWS), from a fresh model with the run's seed, in the
paper's two phases: 1 antithetic pair per document and `--samples-multi` (10) pairs.

1. before / after, interleaved. `before` is the likelihood as it was before the change
   (commit 29ffdab, `BeforeMultinomialLikelihood` below, copied verbatim: log_softmax over
   [S, B, V], x·log π, a dense sum and dense convention offsets); `after` is vaelab's
   (`distributions/multinomial.py`: n·A + Σ_{x_v≠0} x_v (m − ℓ_v), one [S, B, V] temporary,
   the gradient made in place). Nothing else differs (same estimator, trainer, random numbers),
   so the training agrees to float round-off: one step in float64 (`float64_step_relative_
   difference`, loss and gradient, ~1e-14), and after the float32 epoch the mean loss and the
   parameters (`parameters_relative_difference_max`: Adam's first steps are ±lr wherever a
   gradient is round-off-sized, e.g. DisARM's f(b) − f(b̃) for a bit that barely matters).
   Each run is one process per allocator setting, the order alternating between runs; an
   epoch's time is the trainer's training loop (`TrainState.seconds`), after one warm-up
   epoch over 200 documents per variant and phase. The ratio is before / after per run:
   median with its min–max.
2. Two changes outside this file's reach, measured the same way: transparent huge pages for
   PyTorch's CPU allocator (`THP_MEM_ALLOC_ENABLE=1`, read when torch starts: every fresh
   [S, B, V] tensor otherwise costs ~20,000 page faults) and fused Adam
   (`torch.optim.Adam(fused=True)`, one kernel for all parameters).
3. The naive comparison kept from before: the whole count matrix dense and a Python loop over
   documents computing each one's DisARM gradient (1 pair) — `speedup` = naive / after,
   goal ≥ 3.
4. A profile (torch.profiler, `--profile-steps` steps of each phase, before and after): time
   per step in batch building, forward (of which the likelihood), backward and optimiser, and
   the top operators.
5. Every cell of Table 2 (e1/e2/e3 × 8/16/32/64 bits × depth 0/1/2, or `--cells`):
   `--cell-steps` timed training steps per phase, a 500-document test batch without gradients
   (the recipe's evaluation), and one profiled step whose FLOPs (matrix products, counted by
   the profiler) and memory traffic (every other kernel: 4 bytes × (Σ input sizes + largest
   input), i.e. read the inputs, write one output as large as the largest) give the GPU
   estimate below.

Projection. The paper's schedule is 1,000 epochs × 1 pair + 500 epochs × 10 pairs over 11,269
training documents (113 steps of 100) per cell, 36 cells. On this machine: measured seconds per
step × 113 × epochs, cells one after another with torch's threads; with the paper's selection
rule (the lowest test estimate over epochs) a pass over the 7,505 test documents every epoch
is added. On a GPU (none here; stated assumption, change with --gpu-*): each kernel of the
profiled step takes max(FLOPs / (peak × efficiency), bytes / (bandwidth × efficiency)) plus a
fixed launch-and-dispatch cost, kernels one after another.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import load_data
from vaelab.distributions.exponential_family import MultinomialEF
from vaelab.distributions.multinomial import MultinomialLikelihood
from vaelab.distributions.reconstruction import Reconstruction
from vaelab.evaluation import evaluate
from vaelab.files import read_jsonl, write_json
from vaelab.models import build_vae
from vaelab.training import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, provenance  # noqa: E402

BATCH = 100
PAPER = {"epochs": [[1000, 1], [500, 10]], "train_documents": 11269, "test_documents": 7505}
ENCODERS, BITS, DEPTHS = ("e1", "e2", "e3"), (8, 16, 32, 64), (0, 1, 2)
THP = {"THP_MEM_ALLOC_ENABLE": "1"}
# (likelihood, fused Adam) of each variant, and the allocator setting its process runs with
VARIANTS = {
    "before": ("before", False),
    "after": ("after", False),
    "after+thp": ("after", False),
    "after+thp+fused-adam": ("after", True),
    "naive": (None, False),
}
PROCESSES = {"plain": ["before", "after", "naive"], "thp": ["after+thp", "after+thp+fused-adam"]}
# a GPU of the A100 class, FP32 without tensor cores (stated assumption)
GPU = {"name": "NVIDIA A100 (FP32, no TF32)", "tflops": 19.5, "flop_efficiency": 0.6,
       "bandwidth_gb_s": 1555.0, "bandwidth_efficiency": 0.7, "launch_us": 10.0}  # fmt: skip
VIEW_OPS = {  # no kernel, no traffic
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resize_", "aten::view",
    "aten::as_strided", "aten::t", "aten::transpose", "aten::expand", "aten::reshape",
    "aten::_reshape_alias", "aten::detach", "aten::alias", "aten::unsqueeze", "aten::squeeze",
    "aten::select", "aten::slice", "aten::permute", "aten::lift_fresh", "aten::_unsafe_view",
    "aten::unflatten", "aten::flatten", "aten::contiguous", "aten::numpy_T", "aten::to",
    "aten::result_type", "aten::set_", "aten::is_nonzero", "aten::item",
    "aten::_local_scalar_dense", "aten::split", "aten::chunk", "aten::narrow", "detach",
}  # fmt: skip


# --- BEFORE: the likelihood path as of commit 29ffdab (verbatim), for the comparison ---------
def before_convention_offset(x, convention):
    """BEFORE (29ffdab): per-document constant [B] to add to the no-coefficient NLL."""
    if convention == "no-coefficient":
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    if convention == "full":
        return -MultinomialEF().log_base_measure(x)
    if convention == "saturated":
        n = x.sum(-1, keepdim=True)
        return torch.xlogy(x, x / n.clamp_min(1)).sum(-1)
    raise ValueError(convention)


class BeforeMultinomialLikelihood(MultinomialLikelihood):
    """BEFORE (29ffdab): the dense multinomial NLL this benchmark compares against."""

    def pairwise(self, x, output, condition=None, weights=None):
        nll = -(F.log_softmax(output, dim=-1) @ x.T) + before_convention_offset(x, self.convention)
        return Reconstruction(nll, torch.zeros_like(nll), weights=weights)

    def forward(self, x, output, condition=None, weights=None):
        log_pi = F.log_softmax(output, dim=-1)
        nll = -(x * log_pi).sum(-1) + before_convention_offset(x, self.convention)
        return Reconstruction(nll, torch.zeros_like(nll), weights=weights)


# --- END OF BEFORE ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="20news-bydate.tar.gz (default: ../shared/data)")
    p.add_argument("--documents", type=int, default=3000, help="training documents per epoch")
    p.add_argument("--test-documents", type=int, default=1000, help="for the evaluation pass")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--samples-multi", type=int, default=10, help="pairs in the second phase")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--cell-steps", type=int, default=3, help="timed steps per cell and phase")
    p.add_argument("--cells", default="all", help="all, none, or e.g. e1-64-0,e2-8-2")
    for key, value in GPU.items():
        if key != "name":
            p.add_argument(f"--gpu-{key.replace('_', '-')}", type=float, default=value)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--output", default=str(RESULTS / "semhash_epoch_time.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: a JSON task
    return p.parse_args(argv)


def model_config(encoder="e1", bits=64, depth=0, samples=1) -> ModelConfig:
    return ModelConfig(network=encoder, hidden=[512] * depth, latent_dim=bits,
                       likelihood="multinomial", multinomial_convention="saturated",
                       posterior="bernoulli", prior="uniform-bernoulli", estimator="disarm",
                       samples=samples)  # fmt: skip


def build(task, likelihood: str, seed: int, encoder="e1", bits=64, depth=0, samples=1):
    torch.manual_seed(seed)
    cfg = model_config(encoder, bits, depth, samples)
    model = build_vae(cfg, (task["vocab"],))
    if likelihood == "before":
        model.likelihood = BeforeMultinomialLikelihood((task["vocab"],), "saturated")
    return model, cfg


def adam(model, fused: bool):
    return torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))


def train_epoch(model, cfg, train, seed: int, fused: bool) -> tuple[float, float]:
    """(seconds of the training loop, mean training loss over the epoch) of one epoch."""
    steps = math.ceil(len(train) / BATCH)
    train_cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, seed=seed, progress=False,
                            checkpoint_every=10**6, eval_every=10**6, log_every=steps,
                            device="cpu")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, train, train_cfg, tmp, Config(model=cfg).to_dict())
        if fused:
            trainer.optimizer = adam(model, fused=True)
        trainer.fit()
        (record,) = [r for r in read_jsonl(Path(tmp) / "metrics.jsonl") if r["split"] == "train"]
        return trainer.state.seconds, record["loss"]


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


def load(task):
    data = DataConfig(name="20newsgroups", path=task["data"], train_limit=task["documents"],
                      test_limit=task["test_documents"])  # fmt: skip
    return load_data(data)


# --- worker tasks (each in its own process; the allocator setting is the process's) ---------


def float64_step(task, train, samples: int) -> dict:
    """Relative difference of loss and gradient, before vs after, of one step in float64
    (same model, batch and random numbers): the formulas are the same, so ~1e-15."""
    x = train.batch(torch.arange(min(BATCH, len(train)))).double()
    found = {}
    for likelihood in ("before", "after"):
        model, _ = build(task, likelihood, 0, samples=samples)
        model.double()
        torch.manual_seed(1)
        loss = model(x).loss
        loss.mean().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters()])
        found[likelihood] = (loss.detach(), grad)
    (l0, g0), (l1, g1) = found["before"], found["after"]
    return {"loss": float(((l0 - l1).abs() / l0.abs()).max()),
            "gradient": float((g0 - g1).norm() / g0.norm())}  # fmt: skip


def task_epochs(task) -> dict:
    """One timed epoch (and evaluation pass) per variant and phase, in an alternating order."""
    train, test = load(task)
    task["vocab"] = train.shape[0]
    warm = train.subset(slice(0, 200))
    variants, seed = task["variants"], task["seed"]
    out = {v: {} for v in variants}
    for samples in task["phases"]:
        trained = {}
        order = variants if seed % 2 == 0 else variants[::-1]
        for name in order:
            likelihood, fused = VARIANTS[name]
            if likelihood is None:  # naive: one pair only
                if samples == 1:
                    out[name]["1"] = {"seconds": naive_epoch(train.dense(), seed)}
                continue
            model, cfg = build(task, likelihood, seed, samples=samples)
            train_epoch(model, cfg, warm, seed, fused)  # warm-up, its own model
            model, cfg = build(task, likelihood, seed, samples=samples)
            seconds, loss = train_epoch(model, cfg, train, seed, fused)
            trained[name] = torch.cat([p.detach().flatten().double() for p in model.parameters()])
            start = time.perf_counter()
            evaluate(model, test, batch_size=500)  # the recipe's evaluation pass
            out[name][str(samples)] = {
                "seconds": seconds,
                "loss": loss,
                "eval_seconds_per_document": (time.perf_counter() - start) / len(test),
            }
        if {"before", "after"} <= set(trained):  # the same training up to float round-off
            diff = (trained["before"] - trained["after"]).norm() / trained["after"].norm()
            out["after"][str(samples)]["parameters_relative_difference"] = float(diff)
            out["after"][str(samples)]["float64_step"] = float64_step(task, train, samples)
    return out


def profile_steps(model, optimizer, train, steps: int, annotate: bool = True):
    """torch.profiler over `steps` training steps (after one unprofiled step)."""
    inner = model.likelihood

    class Annotated(torch.nn.Module):  # the likelihood's forward as a named range
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            with record_function("likelihood forward"):
                return self.inner(*args, **kwargs)

    if annotate:
        model.likelihood = Annotated()

    def step(b):
        index = torch.arange(b * BATCH, (b + 1) * BATCH) % len(train)
        with record_function("batch"):
            x = train.batch(index)
        with record_function("forward"):
            loss = model(x).loss.mean()
        optimizer.zero_grad(set_to_none=True)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()

    step(0)
    with profiler() as prof:
        for b in range(1, steps + 1):
            step(b)
    model.likelihood = inner
    return prof


def profiler():
    return profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True)


def kernels(prof) -> list:
    """The profiled kernels: every event that counts FLOPs (a matrix product, its own
    sub-calls not counted again), else every event without children; view and allocation
    ops left out."""
    out, stack = [], [e for e in prof.events() if e.cpu_parent is None]
    while stack:
        e = stack.pop()
        if e.flops or not e.cpu_children:
            if e.name not in VIEW_OPS and not e.name.startswith("autograd::"):
                out.append(e)
        else:
            stack.extend(e.cpu_children)
    return out


def traffic(e) -> int:
    """Bytes a kernel moves, as assumed: 4 × (Σ input sizes + the largest input)."""
    sizes = [math.prod(s) for s in e.input_shapes if isinstance(s, list) and s]
    return 4 * (sum(sizes) + max(sizes, default=0))


def kernel_costs(prof, steps: int) -> dict:
    """Per step: FLOPs of matrix products, bytes moved by the other kernels, kernel count."""
    found = kernels(prof)
    flops = sum(e.flops or 0 for e in found)
    moved = sum(traffic(e) for e in found if not e.flops)
    return {"flops": flops / steps, "bytes": moved / steps, "kernels": len(found) / steps}


def gpu_seconds(prof, steps: int, gpu: dict) -> float:
    """Seconds per step on the stated GPU: per kernel max(compute, memory) + launch."""
    peak = gpu["tflops"] * 1e12 * gpu["flop_efficiency"]
    bandwidth = gpu["bandwidth_gb_s"] * 1e9 * gpu["bandwidth_efficiency"]
    total = sum(
        max((e.flops or 0) / peak, traffic(e) / bandwidth) + gpu["launch_us"] * 1e-6
        for e in kernels(prof)
    )
    return total / steps


def task_profile(task) -> dict:
    """Where a step's time goes, before and after, in both phases."""
    train, _ = load(task)
    task["vocab"] = train.shape[0]
    out = {}
    for samples in task["phases"]:
        for likelihood in ("before", "after"):
            model, _ = build(task, likelihood, 0, samples=samples)
            steps = task["profile_steps"]
            prof = profile_steps(model, adam(model, False), train, steps)
            ranges = {
                r: sum(e.cpu_time_total for e in prof.events() if e.name == r) / steps / 1e3
                for r in ("batch", "forward", "likelihood forward", "backward", "optimizer")
            }
            averages = prof.key_averages()
            total = sum(a.self_cpu_time_total for a in averages) / steps / 1e3
            top = sorted(averages, key=lambda a: a.self_cpu_time_total, reverse=True)[:12]
            out[f"{likelihood}, {samples} pair(s)"] = {
                "ms_per_step": total,
                "ranges_ms_per_step": ranges,
                "top_ops": [
                    {
                        "op": a.key,
                        "self_ms_per_step": a.self_cpu_time_total / steps / 1e3,
                        "share": a.self_cpu_time_total / steps / 1e3 / total,
                        "calls_per_step": a.count / steps,
                    }
                    for a in top
                ],
            }
    return out


def task_cells(task) -> dict:
    """Per cell and phase: timed steps, a test batch without gradients, one profiled step."""
    train, test = load(task)
    task["vocab"] = train.shape[0]
    x_test = test.batch(torch.arange(min(500, len(test))))
    out = {}
    for encoder, bits, depth in task["cells"]:
        cell = {}
        for samples in task["phases"]:
            model, _ = build(task, "after", 0, encoder, bits, depth, samples)
            optimizer = adam(model, task["fused"])
            times = []
            for b in range(task["cell_steps"] + 1):  # step 0: warm-up
                start = time.perf_counter()
                x = train.batch(torch.arange(b * BATCH, (b + 1) * BATCH) % len(train))
                loss = model(x).loss.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - start)
            model.eval()
            with torch.no_grad():
                start = time.perf_counter()
                model(x_test)
                eval_per_doc = (time.perf_counter() - start) / len(x_test)
            model.train()
            prof = profile_steps(model, optimizer, train, 1, annotate=False)
            cell[str(samples)] = {
                "step_seconds": statistics.median(times[1:]),
                "eval_seconds_per_document": eval_per_doc,
                "per_step": kernel_costs(prof, 1),
                "gpu_step_seconds": gpu_seconds(prof, 1, task["gpu"]),
            }
            model.eval()
            with torch.no_grad(), profiler() as eval_prof:
                model(x_test)
            gpu_eval = gpu_seconds(eval_prof, 1, task["gpu"]) / len(x_test)
            cell[str(samples)]["gpu_eval_seconds_per_document"] = gpu_eval
        out[f"{encoder}-{bits}-{depth}"] = cell
    return out


TASKS = {"epochs": task_epochs, "profile": task_profile, "cells": task_cells}


def run_worker(task: dict, env: dict | None = None) -> dict:
    """Run `task` in a fresh process (with `env` added) and return its result."""
    full_env = {k: v for k, v in os.environ.items() if k not in THP} | (env or {})
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(task)],
        env=full_env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"worker {task['task']} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


# --- summary and projection -------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "per_run": values}  # fmt: skip


def ratios(times, a: str, b: str, phase: str) -> dict:
    """a / b per run in `phase`."""
    return spread([r[a][phase]["seconds"] / r[b][phase]["seconds"] for r in times])


def schedule_hours(per_epoch: dict[str, float]) -> dict:
    """Hours of the paper's schedule from seconds per epoch of each phase ("1", "10")."""
    phases = {str(s): e * per_epoch[str(s)] / 3600 for e, s in PAPER["epochs"]}
    total = sum(phases.values())
    return {"hours": total, "hours_by_phase": phases, "multi_sample_share": phases["10"] / total}


def project(cells: dict, multi: str, key: str, eval_key: str) -> dict:
    """The paper's schedule per cell and over all cells, from per-step `key` seconds (and
    per-document `eval_key` seconds for the test pass of the lowest-over-epochs rule); the
    second phase from the cells' `multi`-pair measurements."""
    steps, test_docs = math.ceil(PAPER["train_documents"] / BATCH), PAPER["test_documents"]
    per_cell, total, total_eval = {}, 0.0, 0.0
    for name, cell in cells.items():
        phase = {"1": cell["1"], "10": cell[multi]}
        train = schedule_hours({s: c[key] * steps for s, c in phase.items()})
        with_eval = schedule_hours(
            {s: c[key] * steps + c[eval_key] * test_docs for s, c in phase.items()}
        )
        per_cell[name] = {"train_hours": train["hours"], "with_test_pass_hours": with_eval["hours"],
                          "multi_sample_share": train["multi_sample_share"]}  # fmt: skip
        total += train["hours"]
        total_eval += with_eval["hours"]
    return {"cells": len(cells), "train_hours": total, "with_test_pass_hours": total_eval,
            "train_days": total / 24, "with_test_pass_days": total_eval / 24,
            "per_cell": per_cell}  # fmt: skip


def selected_cells(spec: str) -> list[tuple[str, int, int]]:
    if spec == "none":
        return []
    if spec == "all":
        return [(e, b, d) for e in ENCODERS for b in BITS for d in DEPTHS]
    cells = []
    for item in spec.split(","):
        e, b, d = item.split("-")
        cells.append((e, int(b), int(d)))
    return cells


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        task = json.loads(args.worker)
        if task["threads"]:
            torch.set_num_threads(task["threads"])
        print("RESULT " + json.dumps(TASKS[task["task"]](task)), flush=True)
        return {}
    load_start = os.getloadavg()
    gpu = {"name": GPU["name"]} | {k: getattr(args, f"gpu_{k}") for k in GPU if k != "name"}
    base = {"data": args.data or str(SHARED_DATA / "20news-bydate.tar.gz"),
            "documents": args.documents, "test_documents": args.test_documents,
            "phases": [1, args.samples_multi], "gpu": gpu, "threads": args.threads}  # fmt: skip
    multi = str(args.samples_multi)
    times = []
    for r in range(args.runs):
        run = {}
        for setting in ["plain", "thp"] if r % 2 == 0 else ["thp", "plain"]:
            task = base | {"task": "epochs", "variants": PROCESSES[setting], "seed": r}
            run |= run_worker(task, THP if setting == "thp" else None)
        times.append(run)
        summary = ", ".join(
            f"{v} {run[v][p]['seconds']:.2f} s" for p in ("1", multi) for v in run if p in run[v]
        )
        print(f"run {r + 1}: {summary}", flush=True)
    print("profiling", flush=True)
    prof = run_worker(base | {"task": "profile", "profile_steps": args.profile_steps})
    cells_spec = selected_cells(args.cells)
    cells = {}
    for setting, fused in (("plain", False), ("thp", True)):
        if cells_spec:
            print(f"cells ({setting})", flush=True)
            task = base | {"task": "cells", "cells": cells_spec, "cell_steps": args.cell_steps,
                           "fused": fused}  # fmt: skip
            cells[setting] = run_worker(task, THP if setting == "thp" else None)

    phases = ("1", multi)
    before_after = {}
    for p in phases:
        losses = [abs(r["before"][p]["loss"] - r["after"][p]["loss"]) / abs(r["before"][p]["loss"]) for r in times]  # fmt: skip
        evals = [r["before"][p]["eval_seconds_per_document"] / r["after"][p]["eval_seconds_per_document"] for r in times]  # fmt: skip
        before_after[p] = {
            "speedup": ratios(times, "before", "after", p),
            "eval_speedup": spread(evals),
            "before_seconds": [r["before"][p]["seconds"] for r in times],
            "after_seconds": [r["after"][p]["seconds"] for r in times],
            "loss_relative_difference_max": max(losses),
            "parameters_relative_difference_max": max(
                r["after"][p]["parameters_relative_difference"] for r in times
            ),
            "float64_step_relative_difference": times[0]["after"][p]["float64_step"],
        }
    elsewhere = {
        p: {
            "thp (after / after+thp)": ratios(times, "after", "after+thp", p),
            "fused adam (after+thp / after+thp+fused-adam)": ratios(
                times, "after+thp", "after+thp+fused-adam", p
            ),  # fmt: skip
            "all (before / after+thp+fused-adam)": ratios(
                times, "before", "after+thp+fused-adam", p
            ),  # fmt: skip
            "seconds": {v: [r[v][p]["seconds"] for r in times] for v in PROCESSES["thp"]},
        }
        for p in phases
    }
    naive = [r["naive"]["1"]["seconds"] for r in times]
    after1 = [r["after"]["1"]["seconds"] for r in times]
    speedup = statistics.median([n / v for n, v in zip(naive, after1)])

    steps_full = math.ceil(PAPER["train_documents"] / BATCH)
    steps_here = math.ceil(args.documents / BATCH)
    e1_cell = {}  # the e1-64-0 cell from its measured epochs, scaled to 11,269 documents
    for v in ("before", "after", "after+thp+fused-adam"):
        per_epoch = {p: statistics.median(r[v][p]["seconds"] for r in times) * steps_full / steps_here for p in phases}  # fmt: skip
        evals = {p: statistics.median(r[v][p]["eval_seconds_per_document"] for r in times) * PAPER["test_documents"] for p in phases}  # fmt: skip
        e1_cell[v] = schedule_hours({"1": per_epoch["1"], "10": per_epoch[multi]}) | {
            "with_test_pass_hours": schedule_hours(
                {"1": per_epoch["1"] + evals["1"], "10": per_epoch[multi] + evals[multi]}
            )["hours"],
            "seconds_per_epoch": per_epoch,
        }
    projection = {
        "schedule": "1,000 epochs × 1 pair + 500 epochs × 10 pairs per cell (the paper's), "
        f"{PAPER['train_documents']:,} training documents = {steps_full} steps of {BATCH} per "
        f"epoch; 'with_test_pass' adds a pass over the {PAPER['test_documents']:,} test "
        "documents every epoch (the paper's lowest-over-epochs selection); cells one after "
        f"another with {args.threads or torch.get_num_threads()} torch thread(s)",
        "e1_64_0_from_epochs": e1_cell,
    }
    if "10" not in phases:
        projection["note"] = "--samples-multi is not 10: the schedule's second phase is scaled"
    for setting, label in (("plain", "as committed"), ("thp", "with THP and fused Adam")):
        if setting in cells:
            projection[f"this_machine ({label})"] = project(
                cells[setting], multi, "step_seconds", "eval_seconds_per_document"
            )
    if "plain" in cells:
        projection["gpu"] = {
            "assumption": gpu
            | {
                "model": "per kernel of one profiled step: max(FLOPs / (tflops × flop_efficiency), bytes / (bandwidth × bandwidth_efficiency)) + launch_us; FLOPs as counted by torch.profiler (matrix products), bytes 4 × (Σ input sizes + largest input) for every other kernel; kernels serial; the CPU's batch building and Python overhead hidden behind launches; nonzero's device synchronisation not counted"
            },  # fmt: skip
            **project(cells["plain"], multi, "gpu_step_seconds", "gpu_eval_seconds_per_document"),
        }
    result = {
        "benchmark": "semhash_epoch_time",
        "model": f"e1, 64 bits, depth 0, DisARM, V = 10,000, batch {BATCH}, Adam 1e-3; phases of 1 and {multi} pairs",  # fmt: skip
        "documents": args.documents,
        "test_documents": args.test_documents,
        "runs": args.runs,
        "torch_threads": args.threads or torch.get_num_threads(),
        "before": "the multinomial likelihood of commit 29ffdab (copied in this file)",
        "before_after": before_after,
        "elsewhere": elsewhere,
        "speedup": speedup,
        "goal": "speedup >= 3 (naive per-document loop / vaelab, 1 pair)",
        "goal_met": speedup >= 3,
        "naive_seconds": naive,
        "vaelab_seconds": after1,
        "profile": prof,
        "cells": cells,
        "projection": projection,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        **provenance(),
    }
    write_json(args.output, result)
    for p in phases:
        s = before_after[p]["speedup"]
        print(f"{p} pair(s): before / after {s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f}); "
              f"all changes {elsewhere[p]['all (before / after+thp+fused-adam)']['median']:.2f}×")  # fmt: skip
    print(f"naive / vaelab: {speedup:.1f}×")
    for key, value in projection.items():
        if isinstance(value, dict) and "train_hours" in value:
            print(f"{key}: {value['cells']} cells {value['train_hours']:.1f} h "
                  f"({value['with_test_pass_hours']:.1f} h with a test pass per epoch)")  # fmt: skip
    for v, c in e1_cell.items():
        print(f"e1-64-0 cell, {v}: {c['hours']:.2f} h, {c['multi_sample_share']:.0%} in the multi-sample phase")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
