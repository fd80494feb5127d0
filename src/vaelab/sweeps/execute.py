"""Running a sweep's cells: as Ray tasks (a local Ray started and shut down here, or a
cluster by address), or one after another in this process when Ray is not installed.

Both paths run `execute_cell`, with the same torch thread count and device, so they give the
same weights. A cell records itself (`cell.json`) when it starts and ends; a rerun skips the
cells whose record says done and reruns the others, which resume from their checkpoints.
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from ..config import SweepOptions
from ..errors import ConfigError, VaelabError
from ..files import read_json, write_json
from .cells import CELL_RECORD, Cell, Target


def one_line(exc: BaseException) -> str:
    """A cell's error as one line: the message of a `VaelabError`, else type and message."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, VaelabError) else f"{type(exc).__name__}: {text}"


def _finite(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Metrics as strict-JSON numbers (a non-finite value becomes null)."""
    out = {}
    for key, value in metrics.items():
        value = float(value)
        out[key] = value if math.isfinite(value) else None
    return out


def execute_cell(target: Target, cell: Cell, cell_dir: str, device: str, threads: int) -> dict:
    """Run one cell in `cell_dir` with `threads` torch threads on `device`; its record (also
    written to cell_dir/cell.json). An error is recorded as one line, never raised.

    The cell holds an exclusive lock on cell_dir/.lock while it runs (released by the OS if
    its process dies): a worker left over from a killed sweep finishes or dies before a new
    one touches the directory, and what it finished is not run again."""
    path = Path(cell_dir)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = read_record(path)
        if (
            previous
            and previous.get("status") == "done"
            and previous.get("digest") == cell.digest(target)
        ):
            return previous
        return _execute_locked(target, cell, path, device, threads)


def cell_record(target: Target, cell: Cell, status: str) -> dict:
    """What cell.json says of a cell before its outcome is added."""
    return {
        "name": cell.name,
        "point": cell.point,
        "seed": cell.seed,
        "digest": cell.digest(target),
        "target": target.name,
        "config": cell.config,
        "status": status,
    }


def _execute_locked(target: Target, cell: Cell, path: Path, device: str, threads: int) -> dict:
    record = cell_record(target, cell, "running")
    write_json(path / CELL_RECORD, record)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        metrics = target.run(target.placed(cell.config, device), path)
        record |= {"status": "done", "metrics": _finite(metrics)}
    except Exception as exc:  # the sweep goes on; the table shows the error
        record |= {"status": "failed", "error": one_line(exc)}
    finally:
        torch.set_num_threads(previous)
    record["seconds"] = time.perf_counter() - started
    write_json(path / CELL_RECORD, record)
    return record


def read_record(cell_dir: Path) -> dict | None:
    try:
        return read_json(cell_dir / CELL_RECORD)
    except (OSError, ValueError):
        return None


def existing_cells(run_dir: Path) -> dict[str, Path]:
    """Digest → directory of every cell recorded below `run_dir`."""
    found = {}
    for path in sorted(run_dir.rglob(CELL_RECORD)):
        record = read_record(path.parent)
        if record and "digest" in record:
            found.setdefault(record["digest"], path.parent)
    return found


class Progress:
    """'[sweep] 3/8 done · 2 running · 1 failed · about 1 min left' after every cell."""

    def __init__(self, total: int, skipped: int, slots: int, enabled: bool):
        self.total, self.done, self.failed = total, skipped, 0
        self.slots, self.enabled = slots, enabled
        self.seconds: list[float] = []

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"[sweep] {text}", flush=True)

    def update(self, record: dict, running: int) -> None:
        self.done += 1
        self.failed += record["status"] == "failed"
        self.seconds.append(record.get("seconds", 0.0))
        remaining = self.total - self.done
        left = sum(self.seconds) / len(self.seconds) * math.ceil(remaining / self.slots)
        what = "failed: " + record["error"] if record["status"] == "failed" else "done"
        self.say(
            f"{self.done}/{self.total} done · {running} running · {self.failed} failed · "
            f"about {_duration(left)} left  ({record['name']} {what} in "
            f"{_duration(record.get('seconds', 0.0))})"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ray_or_none():
    try:
        import ray
    except ImportError:
        return None
    return ray


def check_reachable(address: str) -> None:
    """Refuse, in one line, a 'host:port' / 'ray://host:port' where nothing answers."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"--address {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head` or drop --address to run locally"
        ) from None


def connect(ray, options: SweepOptions) -> bool:
    """Join the cluster of `options.address` / $RAY_ADDRESS, else start a local Ray with
    this machine's cores; True when this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS")
    quiet = {"log_to_driver": False, "logging_level": "ERROR"}
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"--address {address!r}: cannot join the Ray cluster: {exc}"
            ) from None
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
    return True


def slots(resources: dict[str, float], options: SweepOptions, cpus: int) -> int:
    """Cells of `cpus` CPUs (and `options.gpus` GPUs) that fit at once in `resources`,
    capped by `max_concurrent`; refuses a cell larger than the cluster."""
    fit = [("CPU", cpus)] + [("GPU", options.gpus)] * (options.gpus > 0)
    counts = []
    for name, need in fit:
        have = resources.get(name, 0.0)
        if have < need:
            flag = f"--{name.lower()}s-per-run"
            raise ConfigError(f"{flag} {need:g}: the Ray cluster has {have:g} {name}(s)")
        counts.append(int(have // need + 1e-9))
    return max(1, min(counts + [options.max_concurrent or math.inf]))


def run_cells(
    cells: list[Cell], run_dir: str | Path, target: Target, options: SweepOptions
) -> list[dict]:
    """Run every cell of `cells` that is not done yet below `run_dir` (a cell recorded with the
    same digest is found wherever it lies); the records of all of them, in order."""
    run_dir = Path(run_dir).resolve()
    names = [c.name for c in cells]
    if len(set(names)) < len(names):
        raise ConfigError("sweep: two cells share a name; give each grid point a distinct value")
    known = existing_cells(run_dir)
    dirs = {c.name: known.get(c.digest(target), run_dir / c.name) for c in cells}
    records = {c.name: read_record(dirs[c.name]) for c in cells}
    todo = [c for c in cells if (records[c.name] or {}).get("status") != "done"]
    ray = None if options.in_process else ray_or_none()
    if ray is None and options.gpus > 0 and not torch.cuda.is_available():
        raise ConfigError(f"--gpus-per-run {options.gpus:g}: CUDA is not available")
    started = ray is not None and todo and connect(ray, options)
    try:
        threads = options.cpus(len(cells))
        n_slots = slots(ray.cluster_resources(), options, threads) if ray and todo else 1
        progress = Progress(len(cells), len(cells) - len(todo), n_slots, options.progress)
        where = (
            f"on Ray, {n_slots} at once"
            if ray
            else "one after another in this process"
            + ("" if options.in_process else " (Ray is not installed)")
        )
        progress.say(
            f"{len(cells)} cells, {len(cells) - len(todo)} done already"
            + (f"; running {len(todo)} {where}, {threads} thread(s) each" if todo else "")
        )
        if ray is None:
            for cell in todo:
                record = execute_cell(target, cell, str(dirs[cell.name]), options.device, threads)
                records[cell.name] = record
                progress.update(record, running=0)
        else:
            task = ray.remote(execute_cell).options(
                num_cpus=threads, num_gpus=options.gpus, max_retries=0
            )
            queue, running = list(todo), {}
            while queue or running:
                while queue and len(running) < n_slots:
                    cell = queue.pop(0)
                    ref = task.remote(target, cell, str(dirs[cell.name]), options.device, threads)
                    running[ref] = cell
                (ref,), _ = ray.wait(list(running), num_returns=1)
                cell = running.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died (e.g. out of memory)
                    error = one_line(exc).split(". ")[0]
                    record = cell_record(target, cell, "failed") | {"error": error}
                    write_json(dirs[cell.name] / CELL_RECORD, record)
                records[cell.name] = record
                progress.update(record, running=min(len(running) + len(queue), n_slots))
    finally:
        if started:
            ray.shutdown()
    return [records[c.name] | {"dir": str(dirs[c.name])} for c in cells]
