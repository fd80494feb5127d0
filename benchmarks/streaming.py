"""Streamed against in-memory image folders: peak memory and training images/s.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine):

    python benchmarks/streaming.py

For each of `--sizes` training sets (5,000 and 25,000 generated 64×64×3 PNG images by
default; the test split is the same 500 images each time, in FOLDER/test, so that only the
training set grows) a conv VAE (channels [32, 32, 64, 64], 16 latents, batch 128, `--epochs`
epochs) is trained with `vaelab.runs.train_run` once with `data.storage = "memory"` (decoded
up front as uint8: 58.6 MB per 5,000 images) and once per `--workers` count with `"stream"`
(decoded by that many DataLoader workers; 0: in the main process, between steps), each in a
fresh subprocess, every setting once per repeat, the order rotating, `--repeats` times; and
once per `--cached-workers` count streamed from a decoded cache (`data.decoded_cache`: each
image decoded once into a uint8 file before training, made by the first such run of a size,
read back by row while training). Per
run: the training images/s (the trainer's own clock, `TrainState.seconds`, so loading is
excluded), the seconds the trainer waited for its next batch (decoding in the main process, or
a worker queue that ran dry), the peak resident memory of the main process (ru_maxrss) and,
separately, the largest peak of its finished worker children (ru_maxrss of RUSAGE_CHILDREN: a
maximum, not a sum, and it counts pages shared with the parent by fork), and the resident
memory after imports.

What it decides, per setting, paired by repeat (repeat r of every setting ran in the same slot
of the rotation at every size; mean and 95 % interval over repeats): the growth of the main
process's peak memory from the smallest to the largest size per MB of decoded training data
added (≈ 1 when the data is held, ≈ 0 when it is streamed; the peak itself is dominated by
torch and the training working set, so the growth, not the peak, says whether the data is
held), against `GROWTH_LIMIT` and against the in-memory growth; and the streamed images/s over the in-memory images/s at the
largest size, against `SPEED_MARGIN` (at most 10 % slower). On a machine whose cores all train,
decoding is taken from training: the script times decoding the training images once in one
process (CPU seconds per image, `decode_s`) and states the rate that cost alone predicts,
1 / (1 / memory images/s + decode_s), and the streamed rate against it — what streaming costs
beyond the decoding it cannot avoid. A goal is "met" when the interval lies on its side of the
limit, "not met" when on the other, else "inconclusive". Writes
benchmarks/results/streaming.json atomically; `--recompute JSON` re-decides a results file
from its stored runs without measuring again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import provenance

from vaelab.evaluation.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED, stat, verdict

SPEED_MARGIN = 0.10  # streamed images/s ≥ (1 − margin) × in-memory images/s
GROWTH_LIMIT = 0.10  # streamed peak memory grows < 0.1 MB per decoded MB of training data
TEST_IMAGES = 500
MB = 2**20

CHILD = r"""
import json, resource, sys
def rss():  # kB → bytes, this process and its waited-for children (DataLoader workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own * 1024, kids * 1024
import time
from vaelab.config import Config, DataConfig, ModelConfig, TrainConfig
from vaelab.data.base import TrainingData
from vaelab.data.streaming import StreamedImages
from vaelab.runs import train_run
base = rss()[0]
waited = [0.0]  # seconds the trainer waited for its next batch
def timed(batches):
    def wrapper(self, chunks):
        it = iter(batches(self, chunks))
        while True:
            started = time.perf_counter()
            try:
                images = next(it)
            except StopIteration:
                return
            waited[0] += time.perf_counter() - started
            yield images
    return wrapper
for cls in (TrainingData, StreamedImages):
    cls.batches = timed(cls.batches)
folder, storage, workers, epochs, run_dir, n_train, cache = sys.argv[1:8]
cfg = Config(
    data=DataConfig(name="image-folder", path=folder, storage=storage, workers=int(workers),
                    decoded_cache=cache or None),
    model=ModelConfig(network="conv", channels=[32, 32, 64, 64], hidden=[256], latent_dim=16),
    train=TrainConfig(epochs=int(epochs), batch_size=128, progress=False, device="cpu",
                      eval_every=10**6, checkpoint_every=10**6),
)
run = train_run(cfg, run_dir, report=False)
own, kids = rss()
n = int(n_train) * int(epochs)
print(json.dumps({"images_per_s": n / run.state.seconds, "train_seconds": run.state.seconds,
                  "data_wait_seconds": waited[0],
                  "peak_rss": own, "peak_rss_workers": kids, "rss_after_imports": base}))
"""


def make_images(folder: Path, n: int, seed: int) -> None:
    """n PNG images 64×64×3 of a coloured blob on noise in `folder`."""
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        cy, cx = rng.integers(8, 56, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)[..., None]
        pixels = 220 * blob * rng.uniform(0.3, 1.0, size=3) + rng.uniform(0, 30, (64, 64, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def decode_seconds_per_image(folder: Path) -> float:
    """CPU seconds (one thread) to decode one image of `folder` as the workers do."""
    from vaelab.data.image_folder import FileDecoder, image_files

    decode, files = FileDecoder(None, 3), image_files(folder)
    started = time.process_time()
    for file in files:
        decode(file)
    return (time.process_time() - started) / len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 25000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--cached-workers", type=int, nargs="*", default=[0],
        help="worker counts of the streamed runs read from a decoded cache (data.decoded_cache)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "streaming.json"))
    parser.add_argument(
        "--recompute", metavar="JSON", help="only re-decide the runs stored in this results file"
    )
    args = parser.parse_args(argv)
    if args.recompute:
        return recompute(Path(args.recompute))
    from vaelab.files import write_json

    sizes = sorted(args.sizes)
    settings = (
        {"memory": ("memory", 0, False)}
        | {f"stream{w}": ("stream", w, False) for w in args.workers}
        | {f"cached{w}": ("stream", w, True) for w in args.cached_workers}
    )
    runs: dict[str, dict[str, list[dict]]] = {}
    decode_s: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_images(Path(tmp) / "test", TEST_IMAGES, seed=1)
        for n in sizes:
            root = Path(tmp) / f"images{n}"
            make_images(root / "train", n, seed=0)
            (root / "test").symlink_to(Path(tmp) / "test", target_is_directory=True)
            decode_s[str(n)] = decode_seconds_per_image(root / "train")
            runs[str(n)] = {name: [] for name in settings}
            for r in range(args.repeats):
                names = list(settings)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    storage, workers, cached = settings[name]
                    cache = str(Path(tmp) / f"cache{n}") if cached else ""
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(root), storage, str(workers),
                         str(args.epochs), str(Path(tmp) / f"{name}_{n}_{r}"), str(n), cache],
                        check=True, capture_output=True, text=True,
                    )  # fmt: skip
                    runs[str(n)][name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(n, name, runs[str(n)][name][-1], file=sys.stderr)

    write_json(
        Path(args.out),
        {
            "benchmark": "streaming",
            "sizes": sizes, "test_images": TEST_IMAGES, "shape": [3, 64, 64],
            "decoded_uint8_mb": {str(n): n * 64 * 64 * 3 / MB for n in sizes},
            "epochs": args.epochs, "workers": args.workers, "repeats": args.repeats,
            "runs": runs, "decode_seconds_per_image": decode_s,
            **decide(runs, decode_s, args.epochs),
            **provenance(),
        },
    )  # fmt: skip
    return 0


def recompute(path: Path) -> int:
    """Rewrite the decisions of a results file from its stored runs (no new measurement): the
    measurement's command, machine and source stay; `recomputed` records this one's."""
    from vaelab.files import write_json

    stored = json.loads(path.read_text())
    decisions = decide(stored["runs"], stored["decode_seconds_per_image"], stored["epochs"])
    write_json(path, stored | decisions | {"recomputed": provenance()})
    return 0


def decide(runs: dict[str, dict[str, list[dict]]], decode_s: dict[str, float], epochs: int):
    """Summary, memory growth and speed ratios of `runs` {size: {setting: [run per repeat]}}
    and the goals they decide. Repeat r of every setting at every size ran in the same slot of
    the rotation, so growth and speed are paired by repeat: per repeat, the growth of the peak
    from the smallest to the largest size per decoded MB added, and streamed ÷ in-memory
    images/s at the largest size (mean, 95 % interval)."""
    sizes = sorted(int(n) for n in runs)
    settings = list(runs[str(sizes[0])])
    streamed = [name for name in settings if name != "memory"]
    small, large = str(sizes[0]), str(sizes[-1])

    def per_image_ms(run: dict, n: int) -> float:
        return 1e3 * run["data_wait_seconds"] / (n * epochs)

    def median(n: str, name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[n][name])

    summary = {
        str(n): {
            name: {
                "images_per_s_median": median(str(n), name, "images_per_s"),
                "data_wait_ms_per_image": stat([per_image_ms(r, n) for r in runs[str(n)][name]]),
                "peak_rss_median_mb": median(str(n), name, "peak_rss") / MB,
                "peak_rss_workers_median_mb": median(str(n), name, "peak_rss_workers") / MB,
            }
            for name in settings
        }
        for n in sizes
    }
    added_mb = (sizes[-1] - sizes[0]) * 64 * 64 * 3 / MB
    growth = {
        name: [
            (b["peak_rss"] - a["peak_rss"]) / MB / added_mb
            for a, b in zip(runs[small][name], runs[large][name])
        ]
        for name in settings
    } if sizes[-1] > sizes[0] else None  # fmt: skip
    memory_rates = [r["images_per_s"] for r in runs[large]["memory"]]
    decode = decode_s[large]
    rates = {name: [r["images_per_s"] for r in runs[large][name]] for name in streamed}
    speed = {name: [s / m for s, m in zip(rates[name], memory_rates)] for name in streamed}
    over_bound = {  # streamed rate / the decode-bound rate 1 / (1 / memory rate + decode_s)
        name: [s * (1 / m + decode) for s, m in zip(rates[name], memory_rates)] for name in streamed
    }
    goals = {}
    for name in streamed:
        goals[f"{name}: images/s >= {1 - SPEED_MARGIN:g} x memory at {large}"] = outcome(
            speed[name], 1 - SPEED_MARGIN
        )
        if not name.startswith("cached"):  # a cached run decodes nothing while it trains
            goals[f"{name}: images/s >= {1 - SPEED_MARGIN:g} x the decode-bound rate at {large}"] = (
                outcome(over_bound[name], 1 - SPEED_MARGIN)
            )
        goals[f"{name}: peak memory grows < {GROWTH_LIMIT:g} MB per decoded MB"] = (
            outcome([-g for g in growth[name]], -GROWTH_LIMIT) if growth else "not measured"
        )
        goals[f"{name}: peak memory grows less than in memory"] = (
            outcome([m - g for m, g in zip(growth["memory"], growth[name])], 0.0)
            if growth else "not measured"
        )  # fmt: skip
    return {
        "summary": summary,
        "peak_rss_growth_per_decoded_mb": (
            {name: stat(g) for name, g in growth.items()} if growth else None
        ),
        "growth_limit": GROWTH_LIMIT,
        "stream_over_memory_speed": {k: stat(v) for k, v in speed.items()},
        "speed_margin": SPEED_MARGIN,
        "decode_bound_images_per_s": 1 / (1 / statistics.median(memory_rates) + decode),
        "stream_over_decode_bound": {k: stat(v) for k, v in over_bound.items()},
        "goals": goals,
    }


def outcome(ratios: list[float], goal: float) -> str:
    """Whether the ratios reach `goal`: "met" when their 95 % interval lies above it, "not met"
    when below, else "inconclusive" (`verdict` on the effect ratio − goal)."""
    decided = verdict("streamed speed", [r - goal for r in ratios], +1)["verdict"]
    return {REPRODUCED: "met", CONTRADICTED: "not met", INCONCLUSIVE: "inconclusive"}[decided]


if __name__ == "__main__":
    raise SystemExit(main())
