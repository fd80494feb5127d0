"""Streamed against in-memory image folders: peak memory and training images/s.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine):

    python benchmarks/streaming.py

A folder of 5,000 generated 64×64×3 PNG images (written once into a temporary folder) is
trained on with `vaelab.runs.train_run` — a conv VAE (channels [32, 32, 64, 64], 16 latents),
batch 128, `--epochs` epochs — once with `data.storage = "memory"` (decoded up front: 61 MB of
uint8) and once with `"stream"` (decoded by `--workers` DataLoader workers), each in a fresh
subprocess, alternating, `--repeats` times. Per run: the training images/s (from the trainer's
own clock, `TrainState.seconds`, so loading is excluded) and the peak resident memory of the
run's process tree (ru_maxrss of the process plus that of its finished worker children), and
the resident memory after imports, before loading, so the data's share can be read off.
Writes benchmarks/results/streaming.json atomically.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys
def rss():  # kB → bytes, this process and its waited-for children (DataLoader workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own * 1024, kids * 1024
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.runs import train_run
base = rss()[0]
folder, storage, workers, epochs, run_dir = sys.argv[1:6]
cfg = Config(
    data=DataConfig(name="image-folder", path=folder, storage=storage, workers=int(workers)),
    model=ModelConfig(network="conv", channels=[32, 32, 64, 64], hidden=[256], latent_dim=16),
    train=TrainConfig(epochs=int(epochs), batch_size=128, progress=False, device="cpu",
                      eval_every=10**6, checkpoint_every=10**6),
)
run = train_run(cfg, run_dir, report=False)
own, kids = rss()
n = 4500 * int(epochs)  # the 90 % training split
print(json.dumps({"images_per_s": n / run.state.seconds, "train_seconds": run.state.seconds,
                  "peak_rss": own, "peak_rss_workers": kids, "rss_after_imports": base}))
"""


def make_folder(root: Path, n: int = 5000) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        cy, cx = rng.integers(8, 56, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)[..., None]
        pixels = 220 * blob * rng.uniform(0.3, 1.0, size=3) + rng.uniform(0, 30, (64, 64, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"{i:05d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "streaming.json"))
    args = parser.parse_args(argv)
    from vaelab.files import write_json

    runs: dict[str, list[dict]] = {"memory": [], "stream": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_folder(folder)
        for r in range(args.repeats):
            order = ["memory", "stream"] if r % 2 == 0 else ["stream", "memory"]
            for storage in order:
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(folder), storage, str(args.workers),
                     str(args.epochs), str(Path(tmp) / f"{storage}{r}")],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                runs[storage].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(storage, runs[storage][-1], file=sys.stderr)
    summary = {
        storage: {
            "images_per_s_median": statistics.median(r["images_per_s"] for r in rs),
            "peak_rss_median_mb": statistics.median(r["peak_rss"] for r in rs) / 2**20,
            "data_share_mb": statistics.median(r["peak_rss"] - r["rss_after_imports"] for r in rs)
            / 2**20,
        }
        for storage, rs in runs.items()
    }
    decoded_mb = 5000 * 64 * 64 * 3 / 2**20
    speed = summary["stream"]["images_per_s_median"] / summary["memory"]["images_per_s_median"]
    write_json(
        Path(args.out),
        {
            "benchmark": "streaming",
            "command": "python benchmarks/streaming.py " + " ".join(argv or sys.argv[1:]),
            "images": 5000, "shape": [3, 64, 64], "decoded_uint8_mb": decoded_mb,
            "epochs": args.epochs, "workers": args.workers, "repeats": args.repeats,
            "runs": runs, "summary": summary,
            "stream_over_memory_speed": speed,
            "stream_peak_rss_saving_mb": summary["memory"]["peak_rss_median_mb"]
            - summary["stream"]["peak_rss_median_mb"],
        },
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
