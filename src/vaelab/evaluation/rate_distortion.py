"""Rate–distortion curves: test-set R(β) and D(β) of β-VAE sweeps and β-conditional models,
and the four regimes of DESIGN §1b they are compared across.

An unconditional run is one point, at the β it was trained with; a β-conditional run is a
whole curve, evaluated at every β of the grid by feeding β to the model (DESIGN §1b).

Against a sweep (`vaelab rd RUN --against SWEEP`, `add_gaps`), each point of a conditional
run gets the relative gap of its test loss to the separately trained runs at its β,
(conditional − separate) / |separate| (positive: the conditional model is worse; the losses
of continuous data are negative nats, hence the magnitude), one gap per separate run (its
seeds), their mean and 95 % Student-t interval (`verdicts.interval`, as sweep tables do).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from ..data.base import ImageData
from ..errors import ConfigError
from ..files import atomic_write_text
from ..models import VAE
from ..registry import SIGMA_MODES
from ..report import markdown_table
from .elbo import evaluate
from .figures import plot_rate_distortion
from .verdicts import interval

COLUMNS = ("regime", "run", "beta", "rate", "distortion", "mse", "negative_elbo", "loss", "sigma")
# added by `add_gaps`: the separate runs' mean loss, the relative gap and its interval, how many
GAP_COLUMNS = ("separate_loss", "relative_gap", "gap_low", "gap_high", "separate_runs")

CLASSIC_SIGMA = math.sqrt(0.5)  # σ² = ½: the Gaussian NLL is Σ(x − μ)² + const


@dataclass(frozen=True)
class Regime:
    """How a β-VAE is trained (DESIGN §1b): classic — σ_x² = ½ fixed, so the loss is
    Σ(x − μ)² + β·KL and β also stands in for the decoder variance — or decoupled — σ_x
    estimated (a σ mode whose flag `estimated` is set), β weighing the rate only; and a sweep
    (one run per β) or β-conditional (one run for every β, log β ~ U[log a, log b])."""

    name: str  # run sub-directory (a sweep's runs: name/beta<β>)
    label: str  # what tables, figures and JSON call it
    decoupled: bool
    conditional: bool

    def overrides(self, sigma_mode: str | None = None) -> dict[str, Any]:
        """The `ModelConfig` fields of the σ_x that make this regime; a decoupled regime
        takes the σ mode the study chose (conditioning settings are the study's)."""
        if not self.decoupled:
            return {"sigma_mode": "fixed", "sigma": CLASSIC_SIGMA}
        return {"sigma_mode": sigma_mode}

    def check_sigma_mode(self, sigma_mode: str, key: str) -> None:
        """Refuse, naming the setting `key`, a σ mode that does not make this regime."""
        mode = SIGMA_MODES.get(sigma_mode)
        if mode.estimated != self.decoupled:
            raise ConfigError(
                f"{key}: σ mode {sigma_mode!r} does not make regime {self.label!r} "
                f"({'σ_x estimated' if self.decoupled else 'σ_x fixed'}); choose another"
            )
        if mode.needs_condition and not self.conditional:
            raise ConfigError(
                f"{key}: σ mode {sigma_mode!r} is a function of β; the sweep regime "
                f"{self.label!r} has no β input, choose an unconditional σ mode"
            )

    def holds(self, cfg: ModelConfig) -> bool:
        """Whether a model of config `cfg` is of this regime."""
        decoupled = SIGMA_MODES.get(cfg.sigma_mode).estimated
        return decoupled == self.decoupled and (cfg.conditioning is not None) == self.conditional


CLASSIC_SWEEP = Regime("classic-sweep", "(i) classic β-VAE", False, False)
DECOUPLED_SWEEP = Regime("decoupled-sweep", "(ii) decoupled β-VAE", True, False)
CLASSIC_CONDITIONAL = Regime("classic-conditional", "(iii) classic β-conditional", False, True)
DECOUPLED_CONDITIONAL = Regime("decoupled-conditional", "(iv) decoupled β-conditional", True, True)
REGIMES = (CLASSIC_SWEEP, DECOUPLED_SWEEP, CLASSIC_CONDITIONAL, DECOUPLED_CONDITIONAL)


def regime_of(cfg: ModelConfig) -> str:
    """The label of the regime of any model config (a study knows its runs' regimes; `vaelab
    rd` over arbitrary runs asks this)."""
    return next(regime.label for regime in REGIMES if regime.holds(cfg))


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


def same_test_set(a, b, examples: int = 256) -> bool:
    """Whether two runs' test sets hold the same examples (the same object, or the same
    length and the same first `examples` examples, each drawn from the same seed: a set
    binarised at random draws alike)."""
    if a is b:
        return True
    if len(a) != len(b):
        return False
    part = slice(0, min(examples, len(a)))
    with torch.random.fork_rng(devices=[]):
        firsts = []
        for data in (a, b):
            torch.manual_seed(0)
            firsts.append(torch.as_tensor(data.batch(part)).cpu())
    return bool(torch.equal(*firsts))


def add_gaps(points: list[dict], separate: list[dict]) -> None:
    """Give every point of a β-conditional run (`points`) the `GAP_COLUMNS` against the
    points of separately trained runs (`separate`, one each, at its own β): those whose β
    equals the point's (to 1e-9 relative) are its sweep runs. No such run: separate_runs 0
    and no gap."""
    for p in points:
        losses = [s["loss"] for s in separate if math.isclose(s["beta"], p["beta"], rel_tol=1e-9)]
        gap = interval([(p["loss"] - s) / abs(s) for s in losses if s != 0])
        p.update(
            separate_loss=float(np.mean(losses)) if losses else None,
            relative_gap=gap["mean"],
            gap_low=gap["low"],
            gap_high=gap["high"],
            separate_runs=len(losses),
        )


def shown_gap(p: dict) -> str:
    """A point's gap as '+1.23 % [0.81, 1.65] (3 runs)', '+1.23 % (1 run)', or what is
    missing."""
    if not p.get("separate_runs"):
        return "no sweep run at this β"
    if p["relative_gap"] is None:
        return "separate loss is 0: no relative gap"
    runs = f"({p['separate_runs']} run{'s' if p['separate_runs'] > 1 else ''})"
    if p["gap_low"] is None:
        return f"{100 * p['relative_gap']:+.2f} % {runs}"
    return (
        f"{100 * p['relative_gap']:+.2f} % [{100 * p['gap_low']:+.2f}, "
        f"{100 * p['gap_high']:+.2f}] {runs}"
    )


def _or_dash(value):
    return "—" if value is None else value


def write_rd(out_dir: str | Path, points: list[dict], title: str = "") -> None:
    """rd.csv, rd.md (a table per regime) and rd.png (rate vs distortion and vs MSE)."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    gaps = any("separate_runs" in p for p in points)
    columns = COLUMNS + GAP_COLUMNS if gaps else COLUMNS
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in p.items()} for p in points)
    atomic_write_text(out_dir / "rd.csv", buf.getvalue())
    curves: dict[str, list[dict]] = {}
    for p in points:
        curves.setdefault(p["regime"], []).append(p)
    lines = ["# Rate–distortion (test set, per example, nats)\n"]
    for regime in sorted(curves):
        against = any("separate_runs" in p for p in curves[regime])
        rows = [
            [p["run"], p["beta"], p["rate"], p["distortion"], p["mse"], p["negative_elbo"]]
            + [p["loss"]]
            + ([_or_dash(p.get("separate_loss")), shown_gap(p)] if against else [])
            for p in sorted(curves[regime], key=lambda p: p["beta"])
        ]
        header = ["run", "β", "R", "D", "MSE/dim", "−ELBO", "D + βR"]
        header += ["sweep D + βR", "gap to the sweep (95 % CI)"] if against else []
        lines += [f"## {regime}\n", markdown_table(header, rows)]
    if gaps:
        lines.append(
            "Gap: (conditional − separate) / |separate| test loss D + βR, one per separately "
            "trained run at that β; mean and 95 % Student-t interval over those runs.\n"
        )
    lines.append("![rate–distortion](rd.png)\n")
    atomic_write_text(out_dir / "rd.md", "\n".join(lines))
    plot_rate_distortion(out_dir / "rd.png", {k: curves[k] for k in sorted(curves)}, title=title)
