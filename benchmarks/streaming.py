"""Streamed against in-memory image folders: peak memory and training images/s.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine):

    python benchmarks/streaming.py

For each of `--sizes` (5,000 and 20,000 by default), a folder of generated 64×64×3 PNG
images (written once into a temporary folder) is trained on with `vaelab.runs.train_run` — a
conv VAE (channels [32, 32, 64, 64], 16 latents), batch 128, `--epochs` epochs — once with
`data.storage = "memory"` (decoded up front as uint8: 58.6 MB per 5,000 images) and once with
`"stream"` (decoded by `--workers` DataLoader workers), each in a fresh subprocess,
alternating, `--repeats` times. Per run: the training images/s (from the trainer's own clock,
`TrainState.seconds`, so loading is excluded), the peak resident memory of the main process
(ru_maxrss) and, separately, the largest peak of its finished worker children (ru_maxrss of
RUSAGE_CHILDREN: a maximum, not a sum, and it counts pages shared with the parent by fork),
and the resident memory after imports.

What it decides, per storage: the growth of the main process's peak memory between the
smallest and the largest size, per MB of decoded data added (≈ 1 when the data is held, ≈ 0
when it is streamed; at 5,000 images the peak is dominated by torch and the training working
set, so the growth, not the peak, says whether the data is held), and the streamed path's
images/s over the in-memory path's at the largest size, against the margin stated here:
`SPEED_MARGIN` (streaming at most 10 % slower). On a machine whose cores all train, the
workers' decoding is taken from training, so the script also times decoding the training
images once in one process (seconds per image, `decode_s`) and states the rate that cost alone
predicts, 1 / (1 / memory images/s + decode_s), and the streamed rate against it: what
streaming costs beyond the decoding it cannot avoid. Writes benchmarks/results/streaming.json
atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import provenance

SPEED_MARGIN = 0.10  # streamed images/s ≥ (1 − margin) × in-memory images/s

CHILD = r"""
import json, resource, sys
def rss():  # kB → bytes, this process and its waited-for children (DataLoader workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own * 1024, kids * 1024
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.runs import train_run
base = rss()[0]
folder, storage, workers, epochs, run_dir, n_train = sys.argv[1:7]
cfg = Config(
    data=DataConfig(name="image-folder", path=folder, storage=storage, workers=int(workers)),
    model=ModelConfig(network="conv", channels=[32, 32, 64, 64], hidden=[256], latent_dim=16),
    train=TrainConfig(epochs=int(epochs), batch_size=128, progress=False, device="cpu",
                      eval_every=10**6, checkpoint_every=10**6),
)
run = train_run(cfg, run_dir, report=False)
own, kids = rss()
n = int(n_train) * int(epochs)
print(json.dumps({"images_per_s": n / run.state.seconds, "train_seconds": run.state.seconds,
                  "peak_rss": own, "peak_rss_workers": kids, "rss_after_imports": base}))
"""


def make_folder(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        cy, cx = rng.integers(8, 56, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)[..., None]
        pixels = 220 * blob * rng.uniform(0.3, 1.0, size=3) + rng.uniform(0, 30, (64, 64, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"{i:05d}.png")


def n_train(n: int) -> int:
    """The training split of an n-image folder without train/ and test/ (`image_folder`)."""
    from vaelab.data.image_folder import TEST_FRACTION

    return n - max(1, math.floor(TEST_FRACTION * n))


def decode_seconds_per_image(folder: Path, n: int) -> float:
    """CPU seconds (one thread) to decode one image of `folder` as the workers do."""
    from vaelab.data.image_folder import FileDecoder, image_files

    decode, files = FileDecoder(None, 3), image_files(folder)[:n]
    started = time.process_time()
    for file in files:
        decode(file)
    return (time.process_time() - started) / len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "streaming.json"))
    args = parser.parse_args(argv)
    from vaelab.files import write_json

    sizes = sorted(args.sizes)
    runs: dict[str, dict[str, list[dict]]] = {}
    decode_s: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"images{n}"
            folder.mkdir()
            make_folder(folder, n)
            decode_s[n] = decode_seconds_per_image(folder, n_train(n))
            runs[str(n)] = {"memory": [], "stream": []}
            for r in range(args.repeats):
                order = ["memory", "stream"] if r % 2 == 0 else ["stream", "memory"]
                for storage in order:
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(folder), storage, str(args.workers),
                         str(args.epochs), str(Path(tmp) / f"{storage}{n}_{r}"), str(n_train(n))],
                        check=True, capture_output=True, text=True,
                    )  # fmt: skip
                    runs[str(n)][storage].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(n, storage, runs[str(n)][storage][-1], file=sys.stderr)
            shutil.rmtree(folder)

    def median(n: int, storage: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[str(n)][storage])

    mb = 2**20
    decoded = {n: n * 64 * 64 * 3 / mb for n in sizes}
    summary = {
        str(n): {
            storage: {
                "images_per_s_median": median(n, storage, "images_per_s"),
                "peak_rss_median_mb": median(n, storage, "peak_rss") / mb,
                "peak_rss_workers_median_mb": median(n, storage, "peak_rss_workers") / mb,
            }
            for storage in ("memory", "stream")
        }
        for n in sizes
    }
    small, large = sizes[0], sizes[-1]
    growth = {
        storage: (median(large, storage, "peak_rss") - median(small, storage, "peak_rss"))
        / mb / (decoded[large] - decoded[small])
        for storage in ("memory", "stream")
    } if large > small else None  # fmt: skip
    memory_rate = median(large, "memory", "images_per_s")
    speed = median(large, "stream", "images_per_s") / memory_rate
    decode_bound = 1 / (1 / memory_rate + decode_s[large])
    write_json(
        Path(args.out),
        {
            "benchmark": "streaming",
            "sizes": sizes, "shape": [3, 64, 64], "decoded_uint8_mb": decoded,
            "epochs": args.epochs, "workers": args.workers, "repeats": args.repeats,
            "runs": runs, "summary": summary,
            "peak_rss_growth_per_decoded_mb": growth,
            "stream_over_memory_speed": speed,
            "speed_margin": SPEED_MARGIN,
            "decode_seconds_per_image": decode_s,
            "decode_bound_images_per_s": decode_bound,
            "stream_over_decode_bound": median(large, "stream", "images_per_s") / decode_bound,
            "goals": {
                f"stream images/s >= {1 - SPEED_MARGIN:g} x memory at {large}": speed
                >= 1 - SPEED_MARGIN,
                f"stream images/s >= {1 - SPEED_MARGIN:g} x the decode-bound rate at {large}": (
                    median(large, "stream", "images_per_s") >= (1 - SPEED_MARGIN) * decode_bound
                ),
                "stream peak memory does not grow with the data (growth < 0.1 MB per MB)": (
                    growth is not None and growth["stream"] < 0.1
                ),
            },
            **provenance(),
        },
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
