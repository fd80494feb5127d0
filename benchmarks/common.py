"""What every benchmark records: the exact command, the machine, the code version, the data."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SHARED_DATA = REPO.parent / "shared" / "data"  # benchmarks may read it; the product never does


def fashion_mnist_folder(arg: str | None) -> Path:
    """--data PATH, else $VAELAB_FASHION_MNIST, else ../shared/data/fashion-mnist."""
    if arg:
        return Path(arg).expanduser().resolve()
    env = os.environ.get("VAELAB_FASHION_MNIST")
    return Path(env).expanduser().resolve() if env else (SHARED_DATA / "fashion-mnist").resolve()


def command_line() -> str:
    """The command that reproduces this run, from the repository root when run there."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(script)
    prefix = "" if Path.cwd().resolve() == REPO else f"cd {shlex.quote(str(Path.cwd()))} && "
    return prefix + shlex.join(["python", shown, *sys.argv[1:]])


def git(*cmd: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def source_state() -> dict[str, object]:
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_files": (
            git("status", "--porcelain", "--untracked-files=no", "--", "src") or ""
        ).splitlines(),
    }


def machine() -> dict[str, object]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def provenance() -> dict[str, object]:
    """The fields every result JSON ends with: command, machine, source and time."""
    import time

    return {
        "command": command_line(),
        "machine": machine(),
        "source": source_state(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
