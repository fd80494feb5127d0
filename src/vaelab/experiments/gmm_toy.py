"""`vaelab run gmm-toy`: the toy Gaussian mixture of Shekhovtsov, Schlesinger & Flach (ICLR
2022, §4.1) — ELBO training pulls a model that contains the ground truth away from it.

Data: 2-D mixture of 4 Gaussians N(μ_k, σ²I) with equal weights. Model: z = 2 bits with a
uniform prior, decoder N(x; M·onehot(z), σ²I) (so the ground truth, M = the true centres, is
in the model), encoder q(z|x) = Π_j Bern(z_j; σ(ℓ_j(x))) from a 2-64-64 ReLU MLP. Everything
is exact (4 states). Steps: pretrain the encoder by ELBO with the ground-truth decoder
frozen; then train both by ELBO; and, for comparison, a Gaussian–Bernoulli RBM (the
consistent set) trained by exact likelihood on the same data. Each of the three is a
full-batch Adam fit by the one trainer in a sub-directory of the run directory (`pretrain`,
`joint`, `rbm`), so a killed recipe resumes where it stopped.

Defaults are those of the public reproduction (ReScience C 9(2), 2023): centres (1, 1),
(1, −1), (0, 0), (−1, 0), σ = 1, 2,000 samples, seed 0 — strongly overlapping components,
where the factorised encoder cannot match the true posterior and the effect is visible;
its reported ELBO is −3.37 → −3.31 (the paper, with other centres: −3.74 → −3.70).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..config import TrainConfig, at_least
from ..data.base import TensorData
from ..distributions import (
    GaussianLikelihood,
    UniformBernoulli,
    all_binary_codes,
    gaussian_log_density,
)
from ..distributions.bernoulli_latent import FactorisedBernoulli
from ..errors import ConfigError
from ..estimators.exact import enumerate_states, exact, exact_log_likelihood
from ..evaluation.consistency import consistency
from ..evaluation.figures import save_figure
from ..evaluation.harmonium_fit import fit_exact
from ..files import atomic_write_text, read_jsonl, write_json
from ..models import VAE
from ..models.harmonium import GaussianBernoulliRBM
from ..networks.blocks import BlockNetwork, mlp_blocks
from ..report import markdown_table
from ..training import METRICS, fit
from .base import experiment

REFERENCE = {"paper": (-3.74, -3.70), "public reproduction": (-3.37, -3.31)}


@dataclass
class GMMToyConfig:
    centres: list[list[float]] = field(
        default_factory=lambda: [[1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 0.0]]
    )
    sigma: float = at_least(0.0, strict=True, default=1.0)
    samples: int = at_least(4, default=2000)
    seed: int = 0
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    pretrain_steps: int = at_least(0, default=3000)
    joint_steps: int = at_least(0, default=3000)
    lr: float = at_least(0.0, strict=True, default=3e-3)
    rbm_steps: int = at_least(0, default=3000)
    rbm_lr: float = at_least(0.0, strict=True, default=3e-2)
    grid: int = at_least(10, default=200)  # resolution of the decision maps
    progress: bool = True

    def __post_init__(self):
        if len(self.centres) != 4 or any(len(c) != 2 for c in self.centres):
            raise ConfigError(
                f"centres: need 4 points in 2-D (one per 2-bit code), got {self.centres}"
            )


# --- the model ------------------------------------------------------------------------------


class CodeTable(nn.Module):
    """Decoder mean M·onehot(z): one free centre per 2-bit code (state index 2·z1 + z2)."""

    def __init__(self, centres: Tensor):
        super().__init__()
        self.centres = nn.Parameter(centres.clone().float())  # [4, 2]

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        index = (2 * z[..., 0] + z[..., 1]).long()
        return self.centres[index].view(*z.shape[:-1], 1, 1, 2)


def build_toy_vae(cfg: GMMToyConfig, centres: Tensor) -> VAE:
    encoder = BlockNetwork(
        [nn.Flatten(), *mlp_blocks([2, *cfg.hidden])], nn.Linear(cfg.hidden[-1], 2)
    )
    likelihood = GaussianLikelihood((1, 1, 2), sigma_mode="fixed", sigma=cfg.sigma)
    return VAE(
        encoder,
        CodeTable(centres),
        FactorisedBernoulli,
        likelihood,
        UniformBernoulli(2),
        estimator=exact,
    )


def component_log_densities(x: Tensor, centres: Tensor, sigma: float) -> Tensor:
    """log N(x; μ_k, σ²I) for x [N, 2] and centres [K, 2] → [N, K]."""
    log_var = torch.tensor(2.0 * math.log(sigma))
    return gaussian_log_density(x[:, None, :], centres[None], log_var).sum(-1)


def mixture_log_density(x: Tensor, centres: Tensor, sigma: float) -> Tensor:
    """log p(x) of the equal-weight mixture, x [N, 2] → [N]."""
    log_comp = component_log_densities(x, centres, sigma)
    return torch.logsumexp(log_comp, dim=1) - math.log(len(centres))


def parallelogram_residual(centres: Tensor) -> float:
    """‖μ00 − μ01 − μ10 + μ11‖: zero iff the centres are affine in the bits (consistent)."""
    return float((centres[0] - centres[1] - centres[2] + centres[3]).norm())


def full_batch(cfg: GMMToyConfig, steps: int, lr: float) -> TrainConfig:
    """`steps` full-batch Adam steps (one per epoch), each logged."""
    return TrainConfig(
        epochs=steps,
        batch_size=cfg.samples,
        lr=lr,
        seed=cfg.seed,
        device="cpu",
        log_every=1,
        checkpoint_every=1000,
        progress=cfg.progress,
    )


def train(model: VAE, x: Tensor, cfg: GMMToyConfig, steps: int, run_dir: Path) -> list[float]:
    """Full-batch Adam on the exact negative ELBO of the trainable parameters, as a fit in
    `run_dir` (resumed, or loaded when finished); returns the ELBO before each step."""
    data = {"centres": cfg.centres, "sigma": cfg.sigma, "samples": cfg.samples, "seed": cfg.seed}
    description = {"stage": run_dir.name, "data": data, "hidden": cfg.hidden}
    fit(model, TensorData(x), full_batch(cfg, steps, cfg.lr), run_dir, description=description)
    return [-r["negative_elbo"] for r in read_jsonl(run_dir / METRICS) if r["split"] == "train"]


@torch.no_grad()
def measure(model: VAE, x: Tensor) -> dict[str, float]:
    return {
        "elbo": float(-model(x).negative_elbo.mean()),
        "loglik": float(exact_log_likelihood(model, x).mean()),
        "parallelogram_residual": parallelogram_residual(model.decoder.centres),
        "centres": model.decoder.centres.tolist(),
    }


# --- the figure ----------------------------------------------------------------------------

COLOURS = np.array(
    [[0.85, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.3, 0.85], [0.9, 0.7, 0.1]]
)  # per code


def matching_codes(centres: Tensor, reference: Tensor) -> list[int]:
    """The permutation of codes that puts each centre nearest its reference centre (for
    colouring a model whose code order is its own, like the RBM's)."""
    best = min(
        itertools.permutations(range(4)),
        key=lambda p: float(((centres[list(p)] - reference) ** 2).sum()),
    )
    return list(best)


@torch.no_grad()
def posterior_maps(
    model: VAE, rbm: GaussianBernoulliRBM, gt_centres: Tensor, sigma: float, grid: Tensor
):
    """Over grid points x [G, 2]: state probabilities [G, 4] of the true posterior, the
    trained model's exact posterior, its encoder, and the RBM's posterior."""
    codes = all_binary_codes(2)
    truth = torch.softmax(component_log_densities(grid, gt_centres, sigma), dim=1)
    x = grid.view(-1, 1, 1, 2)
    _, log_q, log_px_z, _, _ = enumerate_states(model, x)
    model_post = torch.softmax(log_px_z, dim=0).T  # uniform prior
    encoder = log_q.exp().T
    rbm_post = rbm.posterior(grid).log_prob(codes[:, None, :]).exp().T
    order = matching_codes(rbm.mixture()[1], gt_centres)
    return truth, model_post, encoder, rbm_post[:, order]


def figure(
    path: Path, maps, data: Tensor, centres: dict[str, Tensor], extent: tuple, n: int
) -> None:
    import matplotlib.pyplot as plt

    truth, model_post, encoder, rbm_post = maps
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    panels = [
        ("(a) ground-truth posterior", truth, "colour"),
        ("(b) ground-truth decision map", truth, "argmax"),
        ("(c) ELBO-trained model: posterior decisions", model_post, "argmax"),
        ("(d) ELBO-trained encoder: decisions", encoder, "argmax"),
        ("(e) GB-RBM (exact likelihood): decisions", rbm_post, "argmax"),
    ]
    for ax, (title, probs, kind) in zip(axes.flat, panels):
        rgb = (
            probs @ torch.tensor(COLOURS, dtype=probs.dtype)
            if kind == "colour"
            else torch.tensor(COLOURS)[probs.argmax(1)]
        )
        ax.imshow(rgb.view(n, n, 3).numpy(), origin="lower", extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=9)
    ax = axes.flat[5]
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.7", alpha=0.5, label="data")
    for (label, c), marker in zip(centres.items(), ["o", "x", "+"]):
        c = c.detach()
        ax.scatter(c[:, 0], c[:, 1], marker=marker, s=70, label=label, c=COLOURS)
        if label != "RBM":  # the RBM's codes are its own; its centres are a parallelogram anyway
            order = [0, 1, 3, 2, 0]  # 00 → 01 → 11 → 10: the would-be parallelogram
            ax.plot(c[order, 0], c[order, 1], lw=0.8, c="k", alpha=0.5)
    ax.set(xlim=extent[:2], ylim=extent[2:], title="(f) centres μ_z (colour = code)")
    ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.set_aspect("equal")
    fig.tight_layout()
    save_figure(fig, path)


@experiment("gmm-toy", GMMToyConfig, "ELBO vs likelihood on a 4-component Gaussian mixture (exact)")
def run_gmm_toy(cfg: GMMToyConfig, run_dir: Path) -> dict:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    gt = torch.tensor(cfg.centres, dtype=torch.float32)
    labels = torch.randint(0, 4, (cfg.samples,), generator=gen)
    data = gt[labels] + cfg.sigma * torch.randn(cfg.samples, 2, generator=gen)
    x = data.view(-1, 1, 1, 2)

    model = build_toy_vae(cfg, gt)
    model.decoder.requires_grad_(False)  # the encoder alone, for the truth as decoder
    pretrain = train(model, x, cfg, cfg.pretrain_steps, run_dir / "pretrain")
    before = measure(model, x)
    before_consistency = consistency(model, x)
    model.decoder.requires_grad_(True)
    joint = train(model, x, cfg, cfg.joint_steps, run_dir / "joint")
    after = measure(model, x)
    after_consistency = consistency(model, x)

    rbm = GaussianBernoulliRBM(
        2, 2, sigma=cfg.sigma, generator=torch.Generator().manual_seed(cfg.seed)
    )
    fit_exact(rbm, data, full_batch(cfg, cfg.rbm_steps, cfg.rbm_lr), run_dir / "rbm")
    with torch.no_grad():
        rbm_loglik = float(rbm.log_likelihood(data).mean())
        _, rbm_means, _ = rbm.mixture()

    gt_negative_entropy = float(mixture_log_density(data, gt, cfg.sigma).mean())
    results = {
        "gt_negative_entropy": gt_negative_entropy,
        "elbo_before": before["elbo"],
        "elbo_after": after["elbo"],
        "loglik_before": before["loglik"],
        "loglik_after": after["loglik"],
        "rbm_loglik": rbm_loglik,
        "parallelogram_residual_before": before["parallelogram_residual"],
        "parallelogram_residual_after": after["parallelogram_residual"],
        "parallelogram_residual_rbm": parallelogram_residual(rbm_means),
        "centres_before": before["centres"],
        "centres_after": after["centres"],
        "centres_rbm": rbm_means.tolist(),
        "consistency_before": before_consistency,
        "consistency_after": after_consistency,
        "elbo_history": {
            "pretrain": pretrain[:: max(1, len(pretrain) // 200)],
            "joint": joint[:: max(1, len(joint) // 200)],
        },
        "units": "nats per sample",
        "config": vars(cfg),
    }
    write_json(run_dir / "results.json", results)

    lim = float(data.abs().max()) + 0.5
    axis = torch.linspace(-lim, lim, cfg.grid)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).view(-1, 2)
    maps = posterior_maps(model, rbm, gt, cfg.sigma, grid)
    figure(
        run_dir / "figure2.png",
        maps,
        data,
        {
            "ground truth": gt,
            "ELBO-trained": model.decoder.centres,
            "RBM": rbm_means[matching_codes(rbm_means, gt)],
        },
        (-lim, lim, -lim, lim),
        cfg.grid,
    )
    write_report(run_dir, results, cfg)
    return results


def write_report(run_dir: Path, r: dict, cfg: GMMToyConfig) -> None:
    rows = [
        [
            "best reachable log-likelihood (−entropy, ground truth)",
            r["gt_negative_entropy"],
            "",
            "",
        ],
        ["ELBO", r["elbo_before"], r["elbo_after"], ""],
        ["exact log-likelihood", r["loglik_before"], r["loglik_after"], r["rbm_loglik"]],
        [
            "ELBO gap (log-likelihood − ELBO)",
            r["loglik_before"] - r["elbo_before"],
            r["loglik_after"] - r["elbo_after"],
            0.0,
        ],
        [
            "parallelogram residual ‖μ00 − μ01 − μ10 + μ11‖",
            r["parallelogram_residual_before"],
            r["parallelogram_residual_after"],
            r["parallelogram_residual_rbm"],
        ],
        [
            "decoder harmonium residual",
            r["consistency_before"]["decoder_residual"],
            r["consistency_after"]["decoder_residual"],
            0.0,
        ],
        [
            "encoder harmonium residual (tied W)",
            r["consistency_before"]["tied_encoder_residual"],
            r["consistency_after"]["tied_encoder_residual"],
            0.0,
        ],
    ]
    elbo_up = r["elbo_after"] > r["elbo_before"]
    ll_down = r["loglik_after"] < r["loglik_before"]
    towards = r["parallelogram_residual_after"] < r["parallelogram_residual_before"]
    raised = "raised" if elbo_up else "did not raise"
    lowered = "lowered" if ll_down else "did not lower"
    verdict = (
        f"Joint ELBO training {raised} the ELBO ({r['elbo_before']:.4f} → {r['elbo_after']:.4f}) "
        f"and {lowered} the exact log-likelihood ({r['loglik_before']:.4f} → "
        f"{r['loglik_after']:.4f}); the centres moved {'towards' if towards else 'away from'} a "
        f"parallelogram (residual {r['parallelogram_residual_before']:.3f} → "
        f"{r['parallelogram_residual_after']:.3f})."
    )
    setup = (
        f"4 components at {cfg.centres}, σ = {cfg.sigma:g}, {cfg.samples} samples (seed "
        f"{cfg.seed}); 2-bit code, uniform prior; decoder N(x; M·onehot(z), σ²I) initialised at "
        f"the truth; encoder 2-{'-'.join(map(str, cfg.hidden))} ReLU MLP. Encoder pretrained "
        f"{cfg.pretrain_steps} steps with the true decoder frozen, then both trained "
        f"{cfg.joint_steps} steps (Adam {cfg.lr:g}, full batch, exact ELBO over the 4 codes). "
        f"GB-RBM: exact likelihood, {cfg.rbm_steps} steps. All numbers in nats per sample, exact.\n"
    )
    lines = [
        "# Toy Gaussian mixture: the ELBO pulls the model towards the consistent set\n",
        setup,
        markdown_table(["", "before (encoder only)", "after (joint ELBO)", "GB-RBM"], rows),
        f"\n{verdict}\n",
        "Published: the paper reports ELBO −3.74 → −3.70 (its own centres), the public "
        "reproduction −3.37 → −3.31 with these defaults; both with the log-likelihood dropping.\n",
        "![Figure 2 layout](figure2.png)\n",
        "(a) posterior colours mix the code colours by p(z|x); (b)–(e) colour the most probable "
        "code (the RBM's codes matched to the nearest true centres); (f) data and centres of the "
        "truth (o), the ELBO-trained decoder (x) and the RBM (+), joined 00–01–11–10.\n",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
