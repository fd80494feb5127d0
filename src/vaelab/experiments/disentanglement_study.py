"""`vaelab run disentanglement`: what β buys on dSprites, classic β-VAE sweep vs the decoupled
β-conditional VAE (DESIGN §1b): disentanglement metrics, the KL decomposition of the rate,
two-stage sampling (Dai & Wipf 2019) and the loss's γ-slices (Dai, Wenliang & Wipf 2021).

  classic sweep       one run per β, σ_x² = ½ fixed (Σ(x − μ)² + β·KL)
  decoupled β-cond.   one run for every β in [a, b], σ_x optimal (or learned), β on the rate
Metrics are computed on the encoder mean with disentanglement_lib's sample sizes scaled by
`metric_scale` (dSprites rendered on demand); the KL decomposition on test images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ..config import DataConfig, at_least, one_of
from ..data.ground_truth import DSpritesGroundTruth
from ..distributions.log_uniform import PER_EXAMPLE
from ..evaluation.disentanglement import disentanglement_metrics, encoder_mean_representation
from ..evaluation.figures import save_figure
from ..evaluation.kl_decomposition import active_units, kl_decomposition
from ..evaluation.loss_slices import loss_slices, plot_loss_slices
from ..evaluation.rate_distortion import CLASSIC_SWEEP, DECOUPLED_CONDITIONAL
from ..files import atomic_write_text, write_json
from ..registry import SIGMA_MODES
from ..report import markdown_table
from ..sweeps import Cell, interval
from .base import experiment
from .study import (
    StudyConfig,
    StudyRun,
    first_seed,
    regime_cells,
    sample_quality_study,
    train_regimes,
)

METRICS = {  # our column → the key of disentanglement_metrics
    "beta_vae": "beta_vae.eval_accuracy",
    "factor_vae": "factor_vae.eval_accuracy",
    "mig": "mig.discrete_mig",
    "sap": "sap.SAP_score",
    "dci_d": "dci.disentanglement",
    "dci_c": "dci.completeness",
    "dci_i": "dci.informativeness_test",
}
KL_TERMS = ("rate", "mi", "tc", "dwkl")
REGIMES = (CLASSIC_SWEEP, DECOUPLED_CONDITIONAL)


@dataclass
class DisentanglementConfig(StudyConfig):
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    latent_dim: int = at_least(1, default=10)
    epochs: int = at_least(1, default=5)
    beta_range: list[float] = field(default_factory=lambda: [0.25, 16.0])
    beta_sampling: str = one_of(tuple(PER_EXAMPLE), default="example")
    fid_samples: int = at_least(2, default=1000)
    train_limit: int = at_least(1, default=20_000)
    test_limit: int = at_least(1, default=2_000)
    betas: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0, 16.0])
    # σ_x of the decoupled β-conditional run; with β per example, a σ per example
    decoupled_sigma_mode: str = one_of(SIGMA_MODES, default="optimal-image")
    metric_scale: float = at_least(0.0, strict=True, default=0.05)  # × disentanglement_lib sizes
    kl_examples: int = at_least(10, default=2000)
    slice_gammas: list[float] = field(default_factory=lambda: [1e-1, 1e-2, 1e-3, 1e-4])

    def __post_init__(self):
        super().__post_init__()
        DECOUPLED_CONDITIONAL.check_sigma_mode(self.decoupled_sigma_mode, "decoupled_sigma_mode")


def run_cells(cfg: DisentanglementConfig) -> list[Cell]:
    data = DataConfig(name="dsprites", train_limit=cfg.train_limit, test_limit=cfg.test_limit)
    sigma_modes = {CLASSIC_SWEEP: None, DECOUPLED_CONDITIONAL: cfg.decoupled_sigma_mode}
    return regime_cells(cfg, data, sigma_modes, cfg.betas)


def evaluate_at(run: StudyRun, beta: float, cfg: DisentanglementConfig) -> dict[str, float]:
    scores = disentanglement_metrics(
        DSpritesGroundTruth(),
        encoder_mean_representation(run.model, beta),
        run.seed,
        cfg.metric_scale,
    )
    test = run.run.test_data
    kl = kl_decomposition(run.model, test, n=cfg.kl_examples, random_state=run.seed, beta=beta)
    x = test.batch(slice(0, cfg.kl_examples)).to(next(run.model.parameters()).device)
    active = active_units(run.model, x, beta=beta)
    return (
        {"beta": beta, "seed": run.seed}
        | {ours: float(scores[key]) for ours, key in METRICS.items()}
        | {term: float(kl[term]) for term in KL_TERMS}
        | {"active_units": int(active)}
    )


def two_stage_fids(fid: dict) -> dict[str, list[dict]]:
    """The rows of `sample_quality_study` as this study's table: per regime and β, the FID of
    decoder samples with z ~ N(0, I) and with z from the fitted second stage."""
    by = {(r["run"], r["beta"], r["sampler"]): r["fid"] for r in fid["rows"]}
    out: dict[str, list[dict]] = {regime.label: [] for regime in REGIMES}
    for r in fid["rows"]:
        if r["sampler"] == "prior":
            out[r["regime"]].append({
                "beta": r["beta"],
                "seed": r["seed"],
                "fid_prior": r["fid"],
                "fid_two_stage": by[(r["run"], r["beta"], "two-stage")],
            })  # fmt: skip
    return out | {"features": fid["features"], "n_samples": fid["n_real"]}


def plot_against_beta(path: Path, regimes: dict[str, list[dict]], keys, title: str) -> None:
    """Each of `keys` against β per regime: the mean over seeds with 95 % interval bars."""
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, rows in regimes.items():
            betas = sorted({r["beta"] for r in rows})
            stats = [interval([r[key] for r in rows if r["beta"] == b]) for b in betas]
            bars = [0.0 if s["se"] is None else (s["high"] - s["low"]) / 2 for s in stats]
            ax.errorbar(
                betas, [s["mean"] for s in stats], yerr=bars, marker="o", capsize=2, label=name
            )
        ax.set(xscale="log", xlabel="β", title=key)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{title}; mean over seeds ± 95 % CI", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


@experiment(
    "disentanglement",
    DisentanglementConfig,
    "dSprites: metrics, KL decomposition, two-stage FID vs β",
)
def run_disentanglement(cfg: DisentanglementConfig, run_dir: Path) -> dict:
    runs = train_regimes(run_cells(cfg), run_dir, "disentanglement", cfg)

    regimes: dict[str, list[dict]] = {regime.label: [] for regime in REGIMES}
    for run in runs:
        for beta in run.betas(cfg.betas):
            regimes[run.regime.label].append(evaluate_at(run, beta, cfg))
    plot_against_beta(
        run_dir / "metrics_vs_beta.png",
        regimes,
        list(METRICS),
        "disentanglement metrics (encoder mean)",
    )
    plot_against_beta(
        run_dir / "kl_vs_beta.png",
        regimes,
        list(KL_TERMS),
        "rate = index-code MI + total correlation + dimension-wise KL (nats)",
    )

    fids = {}
    if cfg.second_stage_steps:
        fids = two_stage_fids(sample_quality_study(runs, cfg.betas, cfg, run_dir))
    conditional = next(r for r in first_seed(runs) if r.regime == DECOUPLED_CONDITIONAL)
    device = next(conditional.model.parameters()).device
    x = conditional.run.test_data.batch(slice(0, 256)).to(device)
    ts = torch.linspace(-0.2, 0.2, 41)
    slices, _ = loss_slices(conditional.model, x, cfg.slice_gammas, ts, seed=conditional.seed)
    plot_loss_slices(run_dir / "loss_slices.png", cfg.slice_gammas, ts, slices)

    results = {"regimes": regimes, "two_stage_fid": fids, "config": asdict(cfg)}
    write_json(run_dir / "results.json", results)
    write_report(run_dir, regimes, fids, cfg)
    return results


def write_report(run_dir: Path, regimes: dict, fids: dict, cfg: DisentanglementConfig) -> None:
    columns = ["beta", "seed", *METRICS, *KL_TERMS, "active_units"]
    lines = [
        "# Disentanglement on dSprites: classic β-VAE sweep vs decoupled β-conditional VAE\n",
        f"{cfg.train_limit} training images, {cfg.network} {cfg.hidden}, {cfg.latent_dim} latents, "
        f"{cfg.epochs} epochs per run (batch {cfg.batch_size}, Adam {cfg.lr:g}); the decoupled "
        f"model's σ_x `{cfg.decoupled_sigma_mode}`, β per {cfg.beta_sampling}. Metrics: "
        f"disentanglement_lib's sample sizes × {cfg.metric_scale:g}; KL terms on "
        f"{cfg.kl_examples} test images, nats.\n",
    ]
    for name, rows in regimes.items():
        rows = sorted(rows, key=lambda r: (r["beta"], r["seed"]))
        lines += [f"## {name}\n", markdown_table(columns, [[r[c] for c in columns] for r in rows])]
    lines += ["\n![metrics](metrics_vs_beta.png)\n", "![KL decomposition](kl_vs_beta.png)\n"]
    if fids:
        lines.append(
            f"## Two-stage sampling (FID, {fids['n_samples']} samples, features: {fids['features']})\n"
        )
        for name in (regime.label for regime in REGIMES):
            rows = sorted(fids[name], key=lambda r: (r["beta"], r["seed"]))
            lines.append(f"{name}:\n")
            lines.append(
                markdown_table(
                    ["β", "seed", "z ~ N(0, I)", "z ~ second stage"],
                    [[r["beta"], r["seed"], r["fid_prior"], r["fid_two_stage"]] for r in rows],
                )
            )
    lines += [
        "\n## The infinite gradient as γ = σ_x² → 0\n",
        "![loss slices](loss_slices.png)\n",
        "Slices of the loss of the decoupled model (at β = 1) along a random direction of decoder "
        "weights with σ_x fixed to √γ: the change of the loss scales as 1/γ (right panel: "
        "rescaled by γ the slices coincide).\n",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
