"""SIGKILL `vaelab train` at random moments and resume it with the same command: is what the
resumed run writes exactly what an uninterrupted run writes?

Reproduce (from the repository root, in the project's virtualenv):

    python benchmarks/kill_resume.py

Runs: tiny MLP Gaussian VAEs (4 latents, hidden [32], batch 64, 20 epochs of 24 steps) on
the default data (scikit-learn's 8×8 digits), through the command line exactly as a user runs
it — `python -m vaelab train CONFIG --run-dir RUN` in a subprocess, one torch thread. Five
configs differ in `checkpoint_every` / `log_every` (and one in `eval_every`); each has one
uninterrupted reference run. Run r uses config r mod 5 and is killed `--kills-per-run` times
(default 2; 10 runs for the default 20 kills), resumed after each kill with the same command,
then left to finish. Each kill is aimed at one of three kinds of moment, by watching the run
directory (every `--poll` s):

* random: a uniform moment of the training time left (from the reference's wall-clock),
  counted from when `Trainer.fit` starts (config.json rewritten);
* checkpoint_write: while a `.checkpoint.safetensors.*.tmp` exists (the n-th one seen, n
  uniform over the checkpoints left), i.e. during the write;
* after_epoch_checkpoint: as soon as the checkpoint file is replaced (the n-th time) in a
  config whose checkpoints all fall on epoch ends, i.e. between an epoch-end checkpoint and
  that epoch's test evaluation.

Where each kill really landed is read from the directory afterwards (a checkpoint
temporary present; the checkpoint's step an evaluated epoch end without its `test` record),
so the counts of kills during writes and between checkpoint and evaluation are measured, not
assumed. Compared with the reference when the run has finished: every model tensor
(`torch.equal`; the optimiser state too), metrics.jsonl record by record without the
wall-clock `seconds`, eval.json, latents.json, report.md, and the temporary files left in
the run directory. A kill counts as resumed when the next invocation of the command ran
without error (it finished, or was itself killed at its aimed moment). Output:
benchmarks/results/kill_resume.json (via vaelab.files.write_json) with the counts, the goal
(every count = kills, tmp_files_left = 0) and every kill's details.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vaelab.checkpoint import checkpoint_metadata, load_checkpoint
from vaelab.files import read_json, read_jsonl, stale_temporaries, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance  # noqa: E402

STEPS_PER_EPOCH = 24  # 1,500 digits training images, batch 64
CHECKPOINT, METRICS = "checkpoint.safetensors", "metrics.jsonl"
COMPARED_FILES = ("eval.json", "latents.json", "report.md")
# (name, train settings, the moments its kills aim at, in turn)
CONFIGS = [
    (
        "ckpt24_log10",
        {"checkpoint_every": 24, "log_every": 10},
        ["after_epoch_checkpoint", "random"],
    ),
    ("ckpt7_log5", {"checkpoint_every": 7, "log_every": 5}, ["checkpoint_write", "random"]),
    (
        "ckpt48_log9_eval2",
        {"checkpoint_every": 48, "log_every": 9, "eval_every": 2},
        ["after_epoch_checkpoint", "checkpoint_write"],
    ),
    ("ckpt10_log1", {"checkpoint_every": 10, "log_every": 1}, ["random", "checkpoint_write"]),
    ("ckpt5_log50", {"checkpoint_every": 5, "log_every": 50}, ["checkpoint_write", "random"]),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in all")
    p.add_argument("--kills-per-run", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--poll", type=float, default=0.0005, help="seconds between looks at a run")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the runs' folder")
    p.add_argument("--output", default=str(RESULTS / "kill_resume.json"))
    args = p.parse_args(argv)
    if args.kills < 1 or args.kills_per_run < 1 or args.epochs < 3:
        p.error("--kills and --kills-per-run must be ≥ 1, --epochs ≥ 3")
    return args


def write_config(path: Path, epochs: int, train: dict) -> Path:
    lines = ["[data]", "name = 'digits'", "[model]", "latent_dim = 4", "hidden = [32]", "[train]"]
    lines += [f"epochs = {epochs}", "batch_size = 64", "progress = false", "device = 'cpu'"]
    lines += [f"{k} = {v}" for k, v in train.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def train_command(config: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "vaelab", "train", str(config), "--run-dir", str(run_dir)]


def environment() -> dict[str, str]:
    return dict(os.environ) | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def checkpoint_step(run_dir: Path) -> int:
    path = run_dir / CHECKPOINT
    return checkpoint_metadata(path)["step"] if path.exists() else 0


def checkpoints_left(step: int, total: int, every: int, final: bool) -> int:
    """Checkpoint writes after `step`: at multiples of `every` below `total` (+ the final)."""
    return (total - 1) // every - step // every + int(final)


def evaluation_missing(run_dir: Path, step: int, total: int, eval_every: int) -> bool:
    """The run stopped between an epoch-end checkpoint and that epoch's `test` record."""
    epochs, offset = divmod(step, STEPS_PER_EPOCH)
    if offset or not 0 < step < total or epochs % eval_every:
        return False
    records = read_jsonl(run_dir / METRICS)
    return not any(r["split"] == "test" and r["step"] == step for r in records)


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def watch_and_kill(cmd, log: Path, run_dir: Path, target: str, n: int, delay: float, poll: float):
    """Run `cmd` and SIGKILL it at the aimed moment; returns (process, killed, seconds from
    launch)."""
    ckpt = run_dir / CHECKPOINT
    seen, last_inode, inside = 0, inode(ckpt), False
    started = None  # when Trainer.fit rewrote config.json
    launched = time.time()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=environment(), stdout=out, stderr=subprocess.STDOUT)
    while proc.poll() is None:
        now = time.time()
        if target == "random":
            if started is None:
                try:
                    if (run_dir / "config.json").stat().st_mtime >= launched:
                        started = now
                except FileNotFoundError:
                    pass
            elif now - started >= delay:
                break
        elif target == "checkpoint_write":
            writing = any(p.name.startswith(f".{CHECKPOINT}.") for p in stale_temporaries(run_dir))
            if writing and not inside:
                seen += 1
                if seen == n:
                    break
            inside = writing
        else:  # after_epoch_checkpoint: the checkpoint file was just replaced
            current = inode(ckpt)
            if current is not None and current != last_inode:
                seen += 1
                if seen == n:
                    break
            last_inode = current
        time.sleep(poll)
    if proc.poll() is not None:
        return proc, False, time.time() - launched
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc, True, time.time() - launched


def compare(run_dir: Path, reference: Path) -> dict[str, bool | int]:
    a, _ = load_checkpoint(reference / CHECKPOINT)
    b, _ = load_checkpoint(run_dir / CHECKPOINT)

    def same(prefix: str) -> bool:
        ka = {k for k in a if k.startswith(prefix)}
        return ka == {k for k in b if k.startswith(prefix)} and all(
            torch.equal(a[k], b[k]) for k in ka
        )

    def records(folder: Path) -> list[dict]:
        return [
            {k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(folder / METRICS)
        ]

    def same_file(name: str) -> bool:
        x, y = reference / name, run_dir / name
        if not (x.exists() and y.exists()):
            return False
        return (
            read_json(x) == read_json(y)
            if name.endswith(".json")
            else x.read_text() == y.read_text()
        )

    return {
        "weights_identical": same("model."),
        "optimizer_identical": same("optimizer."),
        "metrics_identical": records(run_dir) == records(reference),
        **{f"{name.split('.')[0]}_identical": same_file(name) for name in COMPARED_FILES},
        "tmp_files_left": len(stale_temporaries(run_dir)),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="vaelab-kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    total = args.epochs * STEPS_PER_EPOCH
    references: dict[str, tuple[Path, float]] = {}
    runs, kills, attempts = [], 0, 0
    t0 = time.time()
    try:
        while kills < args.kills and attempts < 3 * args.kills:
            r = len(runs)
            name, train, aims = CONFIGS[r % len(CONFIGS)]
            config = write_config(work / f"{name}.toml", args.epochs, train)
            if name not in references:  # the uninterrupted run, in a folder of the same name
                ref = work / "reference" / name / "run"
                subprocess.run(
                    train_command(config, ref), env=environment(), check=True, capture_output=True
                )
                seconds = read_jsonl(ref / METRICS)[-1]["seconds"]
                references[name] = (ref, seconds)
                print(f"reference {name}: {seconds:.2f} s of training", flush=True)
            ref, ref_seconds = references[name]
            run_dir = work / f"run{r:02d}_{name}" / "run"
            run_dir.parent.mkdir(parents=True)
            cmd, log = train_command(config, run_dir), run_dir.parent / "output.log"
            run = {"run": r, "config": name, "train": train, "kills": []}
            planned = min(args.kills_per_run, args.kills - kills)
            previous = None  # the kill whose resume the next invocation is
            while True:
                step = checkpoint_step(run_dir)
                if len(run["kills"]) == planned:  # the last resume: let it finish
                    with open(log, "ab") as out:
                        proc = subprocess.run(cmd, env=environment(), stdout=out, stderr=out)
                    if previous is not None:
                        previous["resume_exit_code"] = proc.returncode
                    break
                target = aims[len(run["kills"]) % len(aims)]
                left = planned - len(run["kills"])
                every = train["checkpoint_every"]
                n_max = max(
                    1, checkpoints_left(step, total, every, target == "checkpoint_write") // left
                )
                n = rng.randint(1, n_max)
                delay = rng.uniform(0, ref_seconds * (total - step) / total)
                attempts += 1
                proc, killed, after = watch_and_kill(cmd, log, run_dir, target, n, delay, args.poll)
                if previous is not None:
                    previous["resume_exit_code"] = -signal.SIGKILL if killed else proc.returncode
                if not killed:  # finished (or failed) before the aimed moment
                    run["missed"] = run.get("missed", 0) + 1
                    previous = None
                    break
                kills += 1
                after_step = checkpoint_step(run_dir)
                tmp = [p.name for p in stale_temporaries(run_dir)]
                eval_every = train.get("eval_every", 1)
                previous = {
                    "target": target,
                    "aim": {"occurrence": n} if target != "random" else {"seconds_into_fit": delay},
                    "seconds_after_launch": round(after, 3),
                    "checkpoint_step_before": step,
                    "checkpoint_step_after": after_step,
                    "tmp_files_after_kill": tmp,
                    "during_checkpoint_write": any(t.startswith(f".{CHECKPOINT}.") for t in tmp),
                    "between_checkpoint_and_evaluation": evaluation_missing(
                        run_dir, after_step, total, eval_every
                    ),
                }
                run["kills"].append(previous)
                print(
                    f"run {r} ({name}): kill {kills}/{args.kills} aimed {target}, checkpoint "
                    f"step {after_step}, tmp {len(tmp)}, gap {previous['between_checkpoint_and_evaluation']}",
                    flush=True,
                )
            run["exit_code"] = proc.returncode
            run |= (
                compare(run_dir, ref)
                if proc.returncode == 0
                else {"tmp_files_left": len(stale_temporaries(run_dir))}
            )
            for kill in run["kills"]:
                kill["resumed"] = kill.get("resume_exit_code") in (0, -signal.SIGKILL)
            runs.append(run)
            print(
                f"run {r} ({name}) finished: "
                + ", ".join(
                    f"{k} {v}" for k, v in run.items() if k.endswith(("identical", "left"))
                ),
                flush=True,
            )
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    every_kill = [(run, kill) for run in runs for kill in run["kills"]]

    def count(key: str) -> int:
        return sum(bool(run.get(key)) for run, _ in every_kill)

    result = {
        "benchmark": "kill_resume",
        "kills": len(every_kill),
        "resumed": sum(kill["resumed"] for _, kill in every_kill),
        "weights_identical": count("weights_identical"),
        "optimizer_identical": count("optimizer_identical"),
        "metrics_identical": count("metrics_identical"),
        "eval_identical": count("eval_identical"),
        "latents_identical": count("latents_identical"),
        "report_identical": count("report_identical"),
        "tmp_files_left": sum(run["tmp_files_left"] for run in runs),
        "kills_during_checkpoint_write": sum(k["during_checkpoint_write"] for _, k in every_kill),
        "kills_between_checkpoint_and_evaluation": sum(
            k["between_checkpoint_and_evaluation"] for _, k in every_kill
        ),
        "kills_by_target": {
            t: sum(k["target"] == t for _, k in every_kill)
            for t in ("random", "checkpoint_write", "after_epoch_checkpoint")
        },
        "missed_attempts": sum(run.get("missed", 0) for run in runs),
        "goal": "resumed, weights_identical, metrics_identical, eval_identical, "
        "report_identical all equal kills; tmp_files_left = 0",
        "train_command": "python -m vaelab train CONFIG --run-dir RUN (the same after every kill)",
        "setup": {
            "data": "digits (1500 train / 297 test)",
            "model": "MLP Gaussian VAE, hidden [32], 4 latents",
            "epochs": args.epochs,
            "steps": total,
            "batch_size": 64,
            "configs": {name: train for name, train, _ in CONFIGS},
            "kills_per_run": args.kills_per_run,
            "seed": args.seed,
            "poll_seconds": args.poll,
        },
        "seconds": round(time.time() - t0, 1),
        "runs": runs,
        **provenance(),
    }
    counts = (
        "resumed",
        "weights_identical",
        "metrics_identical",
        "eval_identical",
        "report_identical",
    )
    result["goal_met"] = (
        result["kills"] >= args.kills
        and result["tmp_files_left"] == 0
        and all(result[k] == result["kills"] for k in counts)
    )
    write_json(args.output, result)
    print(
        ", ".join(
            f"{k} {result[k]}"
            for k in (
                "kills",
                *counts,
                "tmp_files_left",
                "kills_during_checkpoint_write",
                "kills_between_checkpoint_and_evaluation",
            )
        )
    )
    print(f"goal {'met' if result['goal_met'] else 'NOT met'}; wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
