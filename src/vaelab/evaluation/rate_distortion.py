"""Rate–distortion curves: test-set R(β) and D(β) of β-VAE sweeps and β-conditional models.

An unconditional run is one point, at the β it was trained with; a β-conditional run is a
whole curve, evaluated at every β of the grid by feeding β to the model (DESIGN §1b).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..data.base import ImageData
from ..files import atomic_write_text
from ..models import VAE
from ..report import markdown_table
from .elbo import evaluate
from .figures import plot_rate_distortion

COLUMNS = ("regime", "run", "beta", "rate", "distortion", "mse", "negative_elbo", "loss", "sigma")


def regime_of(cfg: ModelConfig) -> str:
    """The study's name for a model: classic (σ_x fixed) or decoupled, sweep or β-conditional."""
    decoupled = cfg.sigma_mode != "fixed"
    if cfg.conditioning is None:
        return "(ii) decoupled β-VAE" if decoupled else "(i) classic β-VAE"
    return "(iv) decoupled β-conditional" if decoupled else "(iii) classic β-conditional"


def log_grid(low: float, high: float, n: int) -> list[float]:
    """n β values log-spaced on [low, high], rounded to 3 significant digits."""
    return [float(f"{b:.3g}") for b in np.geomspace(low, high, n)]


def rd_points(
    model: VAE, data: ImageData, betas: Sequence[float], label: str, run: str, batch_size: int = 500
) -> list[dict]:
    """Test-set terms per β: every β of `betas` for a conditional model, else its own β."""
    betas = list(betas) if model.conditional else [model.beta]
    points = []
    for beta in betas:
        m = evaluate(model, data, batch_size=batch_size, beta=beta)
        points.append({"regime": label, "run": run, "beta": beta} | m)
    return points


def write_rd(out_dir: str | Path, points: list[dict], title: str = "") -> None:
    """rd.csv, rd.md (a table per regime) and rd.png (rate vs distortion and vs MSE)."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(points)
    atomic_write_text(out_dir / "rd.csv", buf.getvalue())
    curves: dict[str, list[dict]] = {}
    for p in points:
        curves.setdefault(p["regime"], []).append(p)
    lines = ["# Rate–distortion (test set, per example, nats)\n"]
    for regime in sorted(curves):
        rows = [
            [
                p["run"],
                p["beta"],
                p["rate"],
                p["distortion"],
                p["mse"],
                p["negative_elbo"],
                p["loss"],
            ]
            for p in sorted(curves[regime], key=lambda p: p["beta"])
        ]
        lines += [
            f"## {regime}\n",
            markdown_table(["run", "β", "R", "D", "MSE/dim", "−ELBO", "D + βR"], rows),
        ]
    lines.append("![rate–distortion](rd.png)\n")
    atomic_write_text(out_dir / "rd.md", "\n".join(lines))
    plot_rate_distortion(out_dir / "rd.png", {k: curves[k] for k in sorted(curves)}, title=title)
