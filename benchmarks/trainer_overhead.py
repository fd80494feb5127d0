"""Overhead of vaelab's Trainer over a minimal hand-written PyTorch training loop.

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/trainer_overhead.py

Both sides train the same MLP Gaussian VAE (hidden [512, 256], 16 latents, learned shared
σ_x) on Fashion-MNIST from the same seed-initialised weights, with Adam (lr 1e-3), batch
size 128, for the same number of epochs (default 1 full epoch of the 60,000 training
images), and both finish with one test-set evaluation.

* plain: what a careful researcher writes by hand: the training images as one float tensor
  in memory (converted once, outside the timing), `torch.randperm` with a seeded generator
  per epoch, batches by indexing, `loss = model(x).loss.mean()`, zero_grad/backward/step,
  and the mean test loss once at the end. No logging, no checkpoints.
* vaelab: `vaelab.training.Trainer(...).fit()` with its default logging and checkpoint
  settings, except `progress=False` (no tqdm) and `eval_every=epochs` (evaluate only at the
  end), in a fresh temporary run directory per repetition (so it never resumes). The timing
  covers Trainer construction and fit(), i.e. including its metrics lines, config.json and
  final checkpoint.
* dataloader (extra information, not part of the ratio): the plain loop with batches from
  `DataLoader(TensorDataset(x), batch_size, shuffle=True)` instead of randperm + indexing.

The repetitions are interleaved (plain and vaelab alternate which goes first; the
DataLoader variant, if on, runs third) after an untimed warm-up of a few steps of each.
All variants use the same torch.set_num_threads (default: torch's default). The result is
the median of the paired per-run ratios vaelab / plain (goal: ≤ 1.02; the host's speed
drifts, and a back-to-back pair shares the drift), with the mean paired ratio and its 95 %
Student-t interval beside it, written atomically to
benchmarks/results/trainer_overhead.json with the per-run times and ratios.

Timings on a shared machine are only as good as its quietness: before each timing the script
waits (up to --quiet-wait s) for a second in which other processes use < 5% of a core, and
it records, per timed run, the CPU-seconds other processes used meanwhile (from /proc/stat),
warning when that exceeds 0.2 s. Noise from outside the OS (a busy VM host) is not visible
there; the per-run ratios, the ratio of the minimums and the CPU-time ratio help judge it.

Data: --data PATH, else $VAELAB_FASHION_MNIST, else ../shared/data/fashion-mnist relative
to the repository root.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import vaelab
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data import ImageData, load_data
from vaelab.data.base import to_float
from vaelab.evaluation import evaluate
from vaelab.evaluation.verdicts import shown, stat
from vaelab.files import write_json
from vaelab.models import build_vae
from vaelab.runs import seed_everything
from vaelab.training import Trainer, distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, fashion_mnist_folder, machine, source_state  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "trainer_overhead.json"
GOAL = 1.02  # issue 16: with the defaults (callbacks off)

MODEL = ModelConfig(
    network="mlp",
    hidden=[512, 256],
    latent_dim=16,
    likelihood="gaussian",
    sigma_mode="learned-shared",
)
EVAL_BATCH = 500  # the batch size of vaelab.evaluation.evaluate; the plain loop uses the same


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data",
        help="Fashion-MNIST folder (default: $VAELAB_FASHION_MNIST, "
        "else ../shared/data/fashion-mnist relative to the repository root)",
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--runs", type=int, default=11, help="interleaved repetitions of each variant")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for both (default: torch's default)",
    )
    p.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use only the first N training images (for quick checks)",
    )
    p.add_argument(
        "--no-dataloader",
        action="store_true",
        help="skip the extra DataLoader(TensorDataset) variant",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=20,
        help="untimed training steps of each variant before the repetitions",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each timing, wait up to this many seconds for a second in which "
        "other processes use < 5%% of a core (0: don't wait)",
    )
    p.add_argument("--output", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.epochs < 1 or args.runs < 1 or args.batch_size < 1:
        p.error("--epochs, --runs and --batch-size must be ≥ 1")
    return args


def fresh_model(seed: int, shape: tuple[int, ...]) -> torch.nn.Module:
    seed_everything(seed)
    return build_vae(MODEL, shape)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the variants --------------------------------------------------------------------------


def plain_loop(model, train_x, test_x, epochs, batch_size, lr, seed, device) -> float:
    """A hand-written loop; returns the mean test loss (per example)."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator()
    torch.manual_seed(seed)  # the noise of the reparameterisation
    n = len(train_x)
    for epoch in range(epochs):
        gen.manual_seed(seed + epoch)
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            x = train_x[perm[start : start + batch_size]]
            loss = model(x).loss.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return evaluate_loss(model, test_x)


def dataloader_loop(model, train_x, test_x, epochs, batch_size, lr, seed, device) -> float:
    """The plain loop with DataLoader(TensorDataset, shuffle=True) batches."""
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(train_x), batch_size=batch_size, shuffle=True, generator=gen)
    for _ in range(epochs):
        for (x,) in loader:
            loss = model(x).loss.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return evaluate_loss(model, test_x)


@torch.no_grad()
def evaluate_loss(model, test_x) -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(test_x), EVAL_BATCH):
        total += model(test_x[start : start + EVAL_BATCH]).loss.sum()
    model.train()
    return float(total) / len(test_x)


def vaelab_fit(
    model, train: ImageData, test: ImageData, tcfg: TrainConfig, run_config, run_dir
) -> float:
    trainer = Trainer(model, train, tcfg, run_dir, run_config, evaluate=lambda m: evaluate(m, test))
    state = trainer.fit()
    return state.last_test["loss"]


# --- timing --------------------------------------------------------------------------------


def cpu_busy_seconds() -> float | None:
    """CPU time spent by the whole machine so far (all processes, all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_for_quiet(max_wait: float, window: float = 1.0, threshold: float = 0.05) -> float:
    """Wait (at most `max_wait` s) for a `window` in which other processes use < `threshold`
    of a core; returns the seconds waited. A no-op where /proc/stat is missing."""
    waited = 0.0
    while waited < max_wait:
        busy0, own0 = cpu_busy_seconds(), own_cpu_seconds()
        if busy0 is None:
            return waited
        time.sleep(window)
        waited += window
        if (cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0) < threshold * window:
            return waited
    return waited


def timed(fn, device) -> tuple[float, object, float, float | None]:
    """(wall seconds, fn's result, this process's CPU-seconds, CPU-seconds used meanwhile by
    *other* processes)."""
    gc.collect()
    sync(device)
    busy0, own0 = cpu_busy_seconds(), own_cpu_seconds()
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    busy1, own1 = cpu_busy_seconds(), own_cpu_seconds()
    foreign = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0))
    return seconds, result, own1 - own0, foreign


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # the same fixed value for every variant
    device = distributed.resolve_device("auto")

    folder = fashion_mnist_folder(args.data)
    dcfg = DataConfig(name="fashion-mnist", path=str(folder), train_limit=args.train_limit)
    train, test = load_data(dcfg)
    shape = train.shape
    # the plain loop's data: float tensors in memory, made once (not timed)
    train_x = to_float(train.images).to(device)
    test_x = to_float(test.images).to(device)

    tcfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=str(device),
        progress=False,
        eval_every=args.epochs,
    )
    run_config = Config(data=dcfg, model=MODEL, train=tcfg).to_dict()
    steps_per_epoch = -(-len(train) // args.batch_size)

    # same initial weights for every variant (each builds its model from the same seed)
    reference = fresh_model(args.seed, shape).state_dict()
    check = fresh_model(args.seed, shape).state_dict()
    assert all(torch.equal(reference[k], check[k]) for k in reference), (
        "seeded init is not repeatable"
    )

    print(f"vaelab trainer overhead: {len(train)} train / {len(test)} test images from {folder}")
    print(
        f"torch {torch.__version__}, device {device}, threads {threads}, batch {args.batch_size}, "
        f"epochs {args.epochs} ({steps_per_epoch} steps each), runs {args.runs}"
    )

    variants = {
        "plain": lambda m: plain_loop(
            m, train_x, test_x, args.epochs, args.batch_size, args.lr, args.seed, device
        ),
    }
    if not args.no_dataloader:
        variants["dataloader"] = lambda m: dataloader_loop(
            m, train_x, test_x, args.epochs, args.batch_size, args.lr, args.seed, device
        )

    def run_vaelab(m, train_data=train, test_data=test, cfg=tcfg):
        with tempfile.TemporaryDirectory(prefix="vaelab-bench-") as tmp:
            return vaelab_fit(m, train_data, test_data, cfg, run_config, Path(tmp) / "run")

    variants["vaelab"] = run_vaelab

    # untimed warm-up: a few steps of each (kernels, allocator, lazy imports)
    if args.warmup_steps > 0:
        n_warm = min(len(train), args.warmup_steps * args.batch_size)
        small_train, small_test = train.limit(n_warm), test.limit(EVAL_BATCH)
        warm_cfg = TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=str(device),
            progress=False,
        )
        plain_loop(
            fresh_model(args.seed, shape),
            train_x[:n_warm],
            test_x[:EVAL_BATCH],
            1,
            args.batch_size,
            args.lr,
            args.seed,
            device,
        )
        if "dataloader" in variants:
            dataloader_loop(
                fresh_model(args.seed, shape),
                train_x[:n_warm],
                test_x[:EVAL_BATCH],
                1,
                args.batch_size,
                args.lr,
                args.seed,
                device,
            )
        run_vaelab(fresh_model(args.seed, shape), small_train, small_test, warm_cfg)

    seconds: dict[str, list[float]] = {name: [] for name in variants}
    test_loss: dict[str, list[float]] = {name: [] for name in variants}
    foreign: dict[str, list[float | None]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    load_before = os.getloadavg()
    waited: list[float] = []
    for r in range(args.runs):
        order = ["plain", "vaelab"] if r % 2 == 0 else ["vaelab", "plain"]
        if "dataloader" in variants:
            order.append("dataloader")
        for name in order:
            model = fresh_model(args.seed, shape)
            if args.quiet_wait > 0:
                waited.append(wait_for_quiet(args.quiet_wait))
            t, loss, used, other = timed(lambda m=model, n=name: variants[n](m), device)
            cpu[name].append(used)
            seconds[name].append(t)
            test_loss[name].append(loss)
            foreign[name].append(other)
            del model
        ratio = seconds["vaelab"][-1] / seconds["plain"][-1]
        extra = f", dataloader {seconds['dataloader'][-1]:.2f} s" if "dataloader" in seconds else ""
        busy = [foreign[name][-1] for name in order if foreign[name][-1] is not None]
        noisy = (
            f"  [other processes used {max(busy):.2f} CPU-s during one timing]"
            if busy and max(busy) > 0.2
            else ""
        )
        print(
            f"run {r + 1}/{args.runs} ({order[0]} first): plain {seconds['plain'][-1]:.2f} s, "
            f"vaelab {seconds['vaelab'][-1]:.2f} s, ratio {ratio:.3f}{extra}{noisy}"
        )

    med = {name: statistics.median(ts) for name, ts in seconds.items()}
    per_run = [v / p for v, p in zip(seconds["vaelab"], seconds["plain"])]
    # The host's speed drifts over tens of seconds; back-to-back pairs share the drift, so
    # the median of the paired ratios is the robust figure (the ratio of medians is kept too).
    ratio = statistics.median(per_run)
    total_steps = args.epochs * steps_per_epoch
    result = {
        "benchmark": "trainer_overhead",
        "ratio": ratio,
        "goal": f"ratio <= {GOAL}",
        "goal_met": ratio <= GOAL,
        "runs": args.runs,
        "command": command_line(),
        "plain_seconds": seconds["plain"],
        "vaelab_seconds": seconds["vaelab"],
        "per_run_ratio": per_run,
        "ratio_definition": "median over runs of vaelab_seconds / plain_seconds of the same run",
        "mean_ratio": stat(per_run),
        "ratio_of_medians": med["vaelab"] / med["plain"],
        "plain_median_seconds": med["plain"],
        "vaelab_median_seconds": med["vaelab"],
        "per_step_overhead_ms": (med["vaelab"] - med["plain"]) / total_steps * 1e3,
        "epochs": args.epochs,
        "steps": total_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "data": str(folder),
        "train_examples": len(train),
        "test_examples": len(test),
        "threads": threads,
        "device": str(device),
        "warmup_steps": args.warmup_steps,
        # extra views, not the goal: ratio of the fastest runs (noise only ever adds time) and
        # of the process CPU time (less sensitive to a noisy host, blind to idle waits)
        "ratio_of_minimums": min(seconds["vaelab"]) / min(seconds["plain"]),
        "cpu_seconds": cpu,
        "cpu_ratio_of_medians": statistics.median(cpu["vaelab"]) / statistics.median(cpu["plain"]),
        "test_loss": {name: losses for name, losses in test_loss.items()},
        # contention check: CPU-seconds other processes used during each timed run (/proc/stat)
        "other_processes_cpu_seconds": foreign,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "quiet_wait_seconds_total": sum(waited),
        "model": {
            "network": MODEL.network,
            "hidden": MODEL.hidden,
            "latent_dim": MODEL.latent_dim,
            "likelihood": MODEL.likelihood,
            "sigma_mode": MODEL.sigma_mode,
        },
        "torch": torch.__version__,
        "vaelab": vaelab.__version__,
        "source": source_state()
        | {
            "trainer_py_sha256": hashlib.sha256(
                Path(vaelab.training.trainer.__file__).read_bytes()
            ).hexdigest()
        },
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if "dataloader" in seconds:
        result["extra"] = {
            "dataloader_seconds": seconds["dataloader"],
            "dataloader_median_seconds": med["dataloader"],
            "dataloader_over_plain": med["dataloader"] / med["plain"],
            "note": "plain loop with DataLoader(TensorDataset, shuffle=True) batches; not part of the ratio",
        }
    out = Path(args.output)
    write_json(out, result)

    worst = max((v for vs in foreign.values() for v in vs if v is not None), default=0.0)
    if worst > 0.2:
        print(
            f"warning: other processes used up to {worst:.2f} CPU-s during a timed run; "
            "the machine was not quiet, so the numbers may be skewed"
        )

    print(
        f"median: plain {med['plain']:.2f} s, vaelab {med['vaelab']:.2f} s "
        f"({result['per_step_overhead_ms']:+.2f} ms/step)"
    )
    if "dataloader" in med:
        print(
            f"        dataloader {med['dataloader']:.2f} s ({med['dataloader'] / med['plain']:.3f}× plain, extra)"
        )
    print(
        f"median paired ratio vaelab/plain = {ratio:.3f} (goal ≤ {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}); "
        f"mean {shown(result['mean_ratio'])} (95 % t interval); "
        f"per run: {', '.join(f'{x:.3f}' for x in per_run)}"
    )
    print(
        f"extra: ratio of minimums {result['ratio_of_minimums']:.3f}, "
        f"ratio of median process CPU time {result['cpu_ratio_of_medians']:.3f}"
    )
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
