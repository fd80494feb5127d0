"""A training run end to end: data → model → trainer → evaluation, figures and report.

A run is a directory (DESIGN §3): its resolved config, metrics, checkpoint, figures and
report.md. Running again on the same directory resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import checkpoint_metadata, load_checkpoint, load_model_weights
from .config import Config, from_dict
from .data import ImageData, load_data
from .errors import CheckpointError, ConfigError, DataError, VaelabError
from .evaluation import evaluate
from .evaluation.figures import plot_training_curves, save_image_grid, save_reconstructions
from .evaluation.kl_decomposition import latent_usage
from .files import atomic_write_text, read_jsonl, write_json
from .models import VAE, build_vae
from .registry import LIKELIHOODS
from .report import markdown_table
from .training import CHECKPOINT, METRICS, Trainer, distributed
from .training.trainer import TrainState

LATENT_EXAMPLES = 5000  # test examples of a report's latent usage


@dataclass
class Run:
    run_dir: Path
    config: Config
    model: VAE
    test_data: ImageData
    state: TrainState | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_run(cfg: Config, run_dir: str | Path, report: bool = True) -> Run:
    """Train (or resume) the run in `run_dir`; the main process writes figures and report."""
    run_dir = Path(run_dir)
    checkpoint_file(run_dir, must_exist=False)
    placement = distributed.setup(cfg.train.device)
    try:
        train_data, test_data = load_data(cfg.data)
        check_data_fits(cfg, train_data)
        seed_everything(cfg.train.seed)
        model = build_vae(cfg.model, train_data.shape)
        trainer = Trainer(
            model,
            train_data,
            cfg.train,
            run_dir,
            cfg.to_dict(),
            evaluate=lambda m: evaluate(m, test_data),
            placement=placement,
        )
        state = trainer.fit()
        run = Run(run_dir, cfg, model, test_data, state)
        if report and placement.is_main:
            write_run_report(run, state.last_test)
        return run
    finally:
        distributed.teardown(placement)


def check_data_fits(cfg: Config, data) -> None:
    """Refuse data the decoder likelihood cannot model: non-binary data for a likelihood of
    binary data (`Likelihood.binary_data`, e.g. Bernoulli)."""
    if LIKELIHOODS.get(cfg.model.likelihood).binary_data and not data.binary:
        raise DataError(
            f"model.likelihood = {cfg.model.likelihood!r} models binary data, but "
            f"{cfg.data.name} is not binary; set data.binarize = true (or use a likelihood "
            "for its values, e.g. gaussian)"
        )


def checkpoint_file(run_dir: Path, must_exist: bool = True) -> Path:
    """The checkpoint path of `run_dir`; one line when it is a directory or (`must_exist`)
    missing."""
    path = run_dir / CHECKPOINT
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file")
    if must_exist and not path.exists():
        raise CheckpointError(f"{str(run_dir)!r} holds no {CHECKPOINT}: not a trained run")
    return path


def require_finite(metrics: dict, what: str) -> None:
    """One line (VaelabError) when a number in `metrics` is NaN or infinite."""
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        shown = ", ".join(f"{k} = {metrics[k]}" for k in bad[:3])
        raise VaelabError(f"{what} is not finite ({shown}); the weights give no valid measure")


def load_run(run_dir: str | Path, device: str = "auto", test_data: ImageData | None = None) -> Run:
    """Rebuild a trained model from its run directory (weights and config from the checkpoint).

    `test_data`: the run's test set when the caller already holds it (else it is loaded)."""
    run_dir = Path(run_dir)
    path = checkpoint_file(run_dir)
    tensors, meta = load_checkpoint(path)
    cfg = stored_config(path, meta)
    if test_data is None:
        _, test_data = load_data(cfg.data)
    model = build_vae(cfg.model, test_data.shape)
    load_model_weights(model, tensors, str(path))
    model.to(distributed.resolve_device(device)).eval()
    state = TrainState(
        step=meta["step"],
        seconds=meta["seconds"],
        finished=meta["finished"],
        last_test=meta.get("last_test", {}),
    )
    return Run(run_dir, cfg, model, test_data, state)


def stored_config(path: Path, meta: dict) -> Config:
    """The typed config stored in checkpoint `path`'s metadata; a bad one names the file."""
    try:
        return from_dict(Config, meta.get("config"))
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} stores an invalid config: {exc}") from None


OnError = Callable[[Path, VaelabError], None]


def find_runs(root: str | Path, on_error: OnError | None = None) -> list[Path]:
    """Every VAE run directory at or below `root`, sorted: one whose checkpoint's config has
    a model section (not the sub-model fits of `training.fit` a recipe keeps beside them).
    A checkpoint that cannot be read raises, or is passed to `on_error(run_dir, error)` and
    skipped when that is given."""
    runs = []
    for path in sorted(Path(root).rglob(CHECKPOINT)):
        try:
            config = checkpoint_metadata(checkpoint_file(path.parent)).get("config")
        except VaelabError as exc:
            if on_error is None:
                raise
            on_error(path.parent, exc)
            continue
        if isinstance(config, dict) and "model" in config:
            runs.append(path.parent)
    return runs


def load_runs(root: str | Path, device: str = "auto", on_error: OnError | None = None) -> list[Run]:
    """All runs below `root`, reading each distinct data set once. A run that cannot be
    loaded (its checkpoint, stored config, data or weights) raises, or is passed to
    `on_error(run_dir, error)` and left out when that is given."""
    runs, data_sets = [], {}
    for run_dir in find_runs(root, on_error):
        try:
            path = checkpoint_file(run_dir)
            cfg = stored_config(path, checkpoint_metadata(path))
            key = json.dumps(dataclasses.asdict(cfg.data), sort_keys=True)
            if key not in data_sets:
                data_sets[key] = load_data(cfg.data)[1]
            runs.append(load_run(run_dir, device, data_sets[key]))
        except VaelabError as exc:
            if on_error is None:
                raise
            on_error(run_dir, exc)
    return runs


def write_run_report(
    run: Run, metrics: dict[str, float] | None = None, n_images: int = 32
) -> dict[str, float]:
    """Test metrics (eval.json), latent usage (latents.json: active units, KL per dimension),
    training curves (training_curves.png), reconstruction and sample grids (image data), and
    report.md."""
    model, data = run.model, run.test_data
    metrics = metrics or evaluate(model, data)
    require_finite(metrics, f"the test loss of {str(run.run_dir)!r}")
    write_json(run.run_dir / "eval.json", metrics)
    usage = latent_usage(model, data.limit(LATENT_EXAMPLES))
    write_json(run.run_dir / "latents.json", usage)
    figures = []
    if plot_training_curves(run.run_dir / "training_curves.png", read_jsonl(run.run_dir / METRICS)):
        figures.append("![training curves](training_curves.png)\n")
    device = next(model.parameters()).device
    if isinstance(data, ImageData):
        x = data.batch(slice(0, n_images)).to(device)
        save_reconstructions(run.run_dir / "reconstructions.png", x, model.reconstruct(x))
        with torch.random.fork_rng():
            torch.manual_seed(0)
            samples = model.generate(n_images)
        save_image_grid(run.run_dir / "samples.png", samples, title="decoder means of z ~ p(z)")
        figures += ["![reconstructions](reconstructions.png)\n", "![samples](samples.png)\n"]
    m = run.config.model
    decoder = model.likelihood.describe(model.condition(1, None, device)[1])
    settings = ", ".join(
        f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in decoder.items()
        if k != "likelihood" and v is not None
    )
    lines = [
        f"# vaelab run `{run.run_dir.name}`\n",
        f"Data: {run.config.data.name} ({len(data)} test examples, shape {list(data.shape)}). "
        f"Model: {m.network} encoder/decoder, {m.latent_dim} latents, {decoder['likelihood']} "
        f"decoder ({settings or 'no settings'}), β = {m.beta:g} on the rate only. Test terms "
        "use σ_x as it is at evaluation (frozen from training where it is fitted to batches).\n",
        f"Trained {run.state.step if run.state else '?'} steps, seed {run.config.train.seed}.\n",
        "## Test set (per example, nats)\n",
        markdown_table(["term", "value"], [[k, v] for k, v in metrics.items()]),
        f"\n## Latents ({min(len(data), LATENT_EXAMPLES)} test examples)\n",
        f"Active units (Cov_x E_q[z_j|x] > {usage['threshold']:g}): {usage['active_units']} of "
        f"{len(usage['kl_per_dimension'])}. Mean KL(q(z_j|x) ‖ p(z_j)) per dimension, nats:\n",
        markdown_table(
            ["z_j", "KL", "Var_x E[z_j|x]"],
            [
                [j, kl, v]
                for j, (kl, v) in enumerate(zip(usage["kl_per_dimension"], usage["mean_variance"]))
            ],
        ),
        "\n## Figures\n",
        *figures,
    ]
    atomic_write_text(run.run_dir / "report.md", "\n".join(lines))
    return metrics
