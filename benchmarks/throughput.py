"""Training throughput (images per second) of the trainer's step for the MLP and ResNet
VAEs, on the CPU and, when present, on CUDA, in float32, bf16 and with torch.compile.

Reproduce (from the repository root, in the project's virtualenv, on a quiet machine):

    python benchmarks/throughput.py

Each row: a Gaussian VAE (learned shared σ_x, 16 latents, Adam) built by `build_vae` — the
MLP [512, 256] on 28×28×1 and the ResNet (`network = "resnet"`) on 64×64×3 — trained with
`Trainer._step` (forward, backward, optimiser, the trainer's bookkeeping) on batches of 128
random images already on the device, `--warmup` untimed steps (compilation happens there),
then `--steps` timed steps, `--repeats` times; images/s = 128·steps / median time. Rows this
machine cannot run (no GPU) are written with `"measured": false`. Threads: torch's default.
Writes benchmarks/results/throughput.json atomically.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vaelab.config import ModelConfig, TrainConfig
from vaelab.data.base import ImageData
from vaelab.files import write_json
from vaelab.models import build_vae
from vaelab.training import Trainer

BATCH = 128
MODELS = {  # name → (model config, image shape)
    "mlp": (ModelConfig(network="mlp", hidden=[512, 256], latent_dim=16), (1, 28, 28)),
    "resnet": (ModelConfig(network="resnet", latent_dim=16), (3, 64, 64)),
}
VARIANTS = [("32", False), ("bf16", False), ("32", True)]  # (precision, compile)


def images_per_second(model_name, device, precision, compile_, steps, warmup, repeats):
    model_cfg, shape = MODELS[model_name]
    torch.manual_seed(0)
    model = build_vae(model_cfg, shape)
    images = torch.randint(0, 256, (BATCH, *shape), dtype=torch.uint8)
    data = ImageData("random", images)
    cfg = TrainConfig(
        epochs=1, batch_size=BATCH, progress=False, device=device, precision=precision,
        compile=compile_,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, data, cfg, run_dir, {})
        index = torch.arange(BATCH, device=trainer.train_data.device)

        def step():
            trainer._step(trainer.train_data.batches([index]), [BATCH], False)

        for _ in range(warmup):
            step()
        times = []
        for _ in range(repeats):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        compiled = trainer.wrapped is not trainer.eager
    return BATCH * steps / statistics.median(times), times, compiled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="mlp,resnet")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "throughput.json"))
    args = parser.parse_args(argv)
    devices = ["cpu", "cuda"]
    rows = []
    for name in args.models.split(","):
        for device in devices:
            for precision, compile_ in VARIANTS:
                row = {"model": name, "device": device, "precision": precision,
                       "compile": compile_, "batch": BATCH, "image_shape": list(MODELS[name][1])}  # fmt: skip
                if device == "cuda" and not torch.cuda.is_available():
                    rows.append(row | {"measured": False, "images_per_s": None,
                                       "why": "no CUDA device on this machine"})  # fmt: skip
                    continue
                rate, times, compiled = images_per_second(
                    name, device, precision, compile_, args.steps, args.warmup, args.repeats
                )
                rows.append(row | {"measured": True, "images_per_s": rate, "seconds": times,
                                   "compiled": compiled})  # fmt: skip
                print(f"{name:7s} {device:4s} {precision:5s} compile={compile_!s:5s} "
                      f"{rate:9.1f} images/s", file=sys.stderr)  # fmt: skip
    write_json(
        Path(args.out),
        {
            "benchmark": "throughput",
            "command": "python benchmarks/throughput.py " + " ".join(argv or sys.argv[1:]),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
            "rows": rows,
        },
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
