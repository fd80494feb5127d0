"""`vaelab run groundtruth`: the ground-truth-decoder experiment of Shekhovtsov, Schlesinger &
Flach (ICLR 2022, §4.2) at the scale of this machine.

A GAN generator G trained on Fashion-MNIST plus Gaussian pixel noise σ is the ground-truth
decoder p*(x|z) = N(x; G(z), σ²I), z ~ N(0, I), so the maximum-likelihood solution is known:
the data are its samples. Steps:
  0. train a DCGAN-style generator (cached in the run directory);
  1. train the encoder alone by conditional likelihood, max E log q(z|x) over (z, x) ~ p*;
  2. from there, train by the ELBO on fresh samples of p*: the encoder alone (the decoder
     stays the truth: the reference ELBO and the best IWAE proposal for the truth), and
     encoder and decoder jointly (i) with σ fixed at the truth and (ii) with σ learned.
The fits of steps 1–2 go through `training.fit`, each in a run directory of its own below the
recipe's, so an interrupted recipe resumes inside a half-finished fit. The GAN (two
optimisers, alternating discriminator and generator steps) is no one-loss fit: it keeps its
own loop and is kept whole once trained.
Each stage reports the ELBO and the IWAE log-likelihood of held-out ground-truth samples and
the FID of its samples (decoder means) against the ground truth's — the paper's Table 1.
The paper's effect: the ELBO rises while the decoder moves away from the truth.

Evidence (issue 13). The likelihood rests on AIS (Wu et al. 2017; `ais_steps`,
`ais_chains`, `ais_leapfrog`, `ais_step_size`) on the first `ais_examples` (≥ 100) held-out
samples — the same examples for every decoder (their sha256 is recorded and checked) — so
each trained decoder is compared with the truth by the per-example paired difference
log p_decoder(x_i) − log p_truth(x_i), with its standard error sd/√n; IWAE beside it, on the
same examples and on all held-out ones. BDMC (Grosse et al. 2015) on `bdmc_examples` samples
simulated from each decoder, with the same AIS, bounds how far that AIS falls short. The
claims — ELBO training raises the ELBO, lowers the true-data log-likelihood, raises the FID —
are decided by `evaluation.verdicts.verdict`: per seed from the normal interval of the
paired difference over the examples (`normal_interval`), over seeds from the Student-t
`interval` of the per-seed means; the likelihood claim is inconclusive unless AIS ran on
≥ 100 examples and its BDMC bound is below the margin by which the effect's interval clears
0, the FID claim when the features are weak. Every FID records its protocol
(`sample_quality.fid_protocol`) and bootstrap SE.

Seeds: all of the above is one seed's run (`run_groundtruth_seed`, in run_dir/seed<s>/, with
its own results.json, report.md and samples.png), and every seed of `seeds` is a cell of the
grid runner (`TARGET`, `sweeps.run_sweep`: on Ray when installed, else — or with
`sweep.in_process` — one after another here; run_dir/sweep.md tabulates the cells). The
recipe's results.json and report.md give Table 1 as the mean over seeds ± the half-width of
the 95 % Student-t interval (one seed: the values alone), the paired differences and the
verdicts over seeds (one seed: its own), each seed's verdicts and how many seeds reproduce
the effect. Configs: `GroundTruthSettings` holds what a seed's run is made of;
`GroundTruthSeedConfig` adds the one int `seed` (the cell's, what the runner sets) with
`device` and `progress` (set by the runner too: CPU, or CUDA with `sweep.gpus_per_run` > 0;
no progress bars); `GroundTruthConfig`, the recipe's, adds `seeds` and `sweep` instead.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from ..config import DataConfig
from ..data import TensorData, load_data
from ..distributions import DiagonalGaussian, GaussianLikelihood, StandardNormal
from ..errors import VaelabError
from ..estimators import LossTerms, ObjectiveTerms
from ..evaluation.feature_extractors import get_feature_extractor
from ..evaluation.figures import save_image_grid
from ..evaluation.loglik import ais_log_likelihood, bdmc, iwae_log_likelihood
from ..evaluation.sample_quality import fid_protocol, sample_quality
from ..evaluation.verdicts import REPRODUCED, interval, normal_interval, verdict, verdict_table
from ..files import atomic_write_text, read_json, write_json
from ..models import VAE
from ..registry import NETWORKS
from ..report import fmt, markdown_table
from ..sweeps import Target, run_seeds, show
from ..training import fit
from ..training.distributed import resolve_device
from .base import experiment
from .settings import GroundTruthConfig, GroundTruthSeedConfig, GroundTruthSettings, recipe_training

PAPER = [  # Table 1, CelebA 64×64
    ("optimize encoder (conditional likelihood)", -364513.78, 0.13),
    ("optimize encoder and decoder (ELBO, fixed σ)", -5898.94, 77.10),
    ("optimize encoder and decoder (ELBO, learned σ)", 9035.69, 117.87),
]


# --- the GAN ------------------------------------------------------------------------------


class Generator(nn.Module):
    """DCGAN-style: z → 128·7·7 → 64·14·14 → 1·28·28 (sigmoid means). Also the decoder of the
    VAEs below, so it takes (z, condition) like every vaelab network."""

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 128 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, channels, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.net(z)


def discriminator(channels: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 64, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1),
    )


def trained_once(module: nn.Module, path: Path, train: Callable[[], None]) -> None:
    """Run `train()` on `module` and keep its weights at `path`; when `path` exists (the GAN
    of an interrupted run), load them instead."""
    if path.exists():
        load_model_weights(module, load_checkpoint(path)[0], str(path))
        return
    train()
    save_checkpoint(path, {f"model.{k}": v for k, v in module.state_dict().items()}, {})


def train_gan(cfg: GroundTruthSeedConfig, train, generator: Generator) -> None:
    """Non-saturating GAN (Goodfellow et al. 2014), Adam(2e-4, β1 = 0.5)."""
    device = next(generator.parameters()).device
    disc = discriminator(train.shape[0]).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    data = train.to(device)
    steps = cfg.gan_epochs * (len(train) // cfg.batch_size)
    for _ in tqdm(range(steps), desc="GAN", disable=not cfg.progress, mininterval=1):
        real = data.batch(torch.randint(0, len(train), (cfg.batch_size,), device=device))
        fake = generator(torch.randn(cfg.batch_size, cfg.latent_dim, device=device))
        d_loss = F.softplus(-disc(real)).mean() + F.softplus(disc(fake.detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.softplus(-disc(fake)).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()


# --- the VAE around the ground truth --------------------------------------------------------


class GroundTruth:
    """Samples (z, x) of p*(x|z) p(z) from a frozen generator."""

    def __init__(self, generator: Generator, sigma: float, latent_dim: int):
        self.generator = copy.deepcopy(generator).requires_grad_(False).eval()
        self.sigma, self.latent_dim = sigma, latent_dim

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        device = next(self.generator.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        mean = self.generator(z)
        return z, mean + self.sigma * torch.randn(mean.shape, device=device, generator=generator)


def build_model(cfg: GroundTruthSettings, generator: Generator, shape, sigma_mode: str) -> VAE:
    encoder, _ = NETWORKS.get("conv")(
        data_shape=shape,
        encoder_outputs=2 * cfg.latent_dim,
        latent_dim=cfg.latent_dim,
        decoder_outputs_per_dim=1,
        hidden=list(cfg.encoder_hidden),
        channels=list(cfg.encoder_channels),
    )
    likelihood = GaussianLikelihood(shape, sigma_mode=sigma_mode, sigma=cfg.sigma)
    decoder = copy.deepcopy(generator)
    return VAE(encoder, decoder, DiagonalGaussian, likelihood, StandardNormal(cfg.latent_dim))


def conditional_likelihood(model: VAE, z: Tensor, x: Tensor) -> ObjectiveTerms:
    """−log q(z|x) of true pairs: the encoder's conditional-likelihood objective."""
    return ObjectiveTerms(-model.encode(x).log_prob(z))


def negative_elbo(model: VAE, z: Tensor, x: Tensor) -> LossTerms:
    """The model's −ELBO of x (β = 1); the true code z is not used."""
    return model(x)


class FreshDraws(nn.Module):
    """A fit's objective on fresh samples of the truth: forward(batch) draws len(batch) pairs
    (z, x) ~ p*(x|z) p(z) and returns objective(model, z, x). The draws come from the RNG
    the trainer seeds per step, so a resumed fit draws what an uninterrupted one would. Only
    `model` is trained and checkpointed (the truth is no submodule)."""

    def __init__(
        self, model: VAE, truth: GroundTruth, objective: Callable[[VAE, Tensor, Tensor], Any]
    ):
        super().__init__()
        self.model, self.truth, self.objective = model, truth, objective

    def forward(self, batch: Tensor):
        z, x = self.truth.sample(len(batch))
        return self.objective(self.model, z, x)


# what the truth and the encoder are made of (the trainer checks its own settings): a fit
# directory that holds other values is refused rather than resumed
FIT_SETTINGS = ("dataset", "train_limit", "latent_dim", "sigma", "gan_epochs", "gan_lr",
                "encoder_channels", "encoder_hidden")  # fmt: skip


def fit_on_draws(
    model: VAE,
    truth: GroundTruth,
    objective: Callable[[VAE, Tensor, Tensor], Any],
    steps: int,
    cfg: GroundTruthSeedConfig,
    fit_dir: Path,
) -> None:
    """`steps` Adam steps of `objective` on batches of `batch_size` fresh draws, as a fit in
    `fit_dir` (resumed where it stopped; a finished one is loaded). One trainer epoch is one
    step: the batch's indices only count the draws."""
    if steps == 0:
        return
    train = recipe_training(cfg, epochs=steps, log_every=100, checkpoint_every=500)
    description = {"stage": fit_dir.name} | {k: getattr(cfg, k) for k in FIT_SETTINGS}
    draws = TensorData(torch.arange(cfg.batch_size))
    fit(FreshDraws(model, truth, objective), draws, train, fit_dir, description=description)


# --- measurements ---------------------------------------------------------------------------


def examples_digest(x: Tensor) -> str:
    """sha256 of the examples' float32 values (shape included): which held-out examples a
    measurement used, so that paired differences are refused across different examples."""
    array = x.detach().float().cpu().contiguous().numpy()
    digest = hashlib.sha256(f"{list(array.shape)}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def per_example_stat(values: Tensor | list[float], over: str) -> dict[str, Any]:
    """Mean of per-example values with its standard error sd/√n (sd with n − 1) and the
    normal 95 % interval (`normal_interval`); n, the sd and what the examples are (`over`)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = x.numel()
    if n < 2:
        raise VaelabError(f"groundtruth: a standard error needs ≥ 2 examples, got {n}")
    sd = float(x.std(unbiased=True))
    return normal_interval(float(x.mean()), sd / math.sqrt(n)) | {"n": n, "sd": sd, "over": over}


@torch.no_grad()
def measure(
    model: VAE,
    held_out: Tensor,
    reference: Tensor | None,
    extractor,
    cfg: GroundTruthSeedConfig,
) -> dict:
    """ELBO and IWAE log-likelihood of every held-out truth sample (means, and per example
    for the paired differences); FID (with its bootstrap SE over `fid_bootstrap`
    resamplings) and KID of samples vs the truth's, unless `reference` is None. Seeded —
    the same draws for every decoder — so a resumed run measures what an uninterrupted one
    would."""
    model.eval()
    torch.manual_seed(cfg.seed + 2)
    elbo = torch.cat(
        [-model(held_out[i : i + 250]).negative_elbo for i in range(0, len(held_out), 250)]
    )
    iwae = torch.cat(
        [
            iwae_log_likelihood(model, held_out[i : i + 50], k=cfg.iwae_k)
            for i in range(0, len(held_out), 50)
        ]
    )
    out = {
        "elbo": float(elbo.mean()),
        "iwae_loglik": float(iwae.mean()),
        "sigma": float(model.likelihood.describe()["sigma"]),
        "held_out_sha256": examples_digest(held_out),
        "elbo_per_example": elbo.double().cpu().tolist(),
        "iwae_per_example": iwae.double().cpu().tolist(),
    }
    if reference is None:
        return out
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        fake = torch.cat([model.generate(500) for _ in range(math.ceil(len(reference) / 500))])[
            : len(reference)
        ]
    quality = sample_quality(
        extractor,
        reference.cpu(),
        fake.clamp(0, 1).cpu(),
        rng=cfg.seed,
        kid_subsets=cfg.kid_subsets,
        bootstrap=cfg.fid_bootstrap,
    )
    return out | {
        "fid": quality["fid"],
        "fid_se": quality["fid_se"],
        "kid": quality["kid_mean"],
    }


def ais_settings(cfg: GroundTruthSettings) -> dict[str, Any]:
    """The AIS estimator every decoder's likelihood and BDMC gap are measured with."""
    return {
        "steps": cfg.ais_steps,
        "chains": cfg.ais_chains,
        "leapfrog": cfg.ais_leapfrog,
        "initial_step_size": cfg.ais_step_size,
        "schedule": "sigmoid",
        "transitions": "HMC, step size adapted per chain towards acceptance 0.65",
    }


def _ais(cfg: GroundTruthSeedConfig) -> dict[str, Any]:
    return {
        "steps": cfg.ais_steps,
        "chains": cfg.ais_chains,
        "leapfrog": cfg.ais_leapfrog,
        "step_size": cfg.ais_step_size,
        "progress": cfg.progress,
    }


@torch.no_grad()
def measure_ais(model: VAE, held_out: Tensor, cfg: GroundTruthSeedConfig) -> dict:
    """AIS log-likelihood (Wu et al. 2017: HMC on p(z) p(x|z)^β, `ais_settings`) of the first
    `ais_examples` held-out samples — per example and as mean ± SE over the examples — and
    IWAE on the same samples; the examples' digest, so that every decoder's values are
    paired on the same examples. Seeded: the same chains' noise for every decoder."""
    x = held_out[: cfg.ais_examples]
    ais = ais_log_likelihood(model, x, seed=cfg.seed, **_ais(cfg))
    iwae = iwae_log_likelihood(model, x, k=cfg.iwae_k)
    return {
        "ais_loglik": per_example_stat(ais.log_z, "held-out examples"),
        "iwae_loglik_ais_examples": float(iwae.mean()),
        "ais_examples": len(x),
        "examples_sha256": examples_digest(x),
        "ais_acceptance": float(ais.diagnostics["acceptance"].mean()),
        "ais_settings": ais_settings(cfg),
        "ais_per_example": ais.log_z.cpu().tolist(),
        "iwae_per_example_ais_examples": iwae.cpu().tolist(),
    }


@torch.no_grad()
def measure_bdmc(model: VAE, cfg: GroundTruthSeedConfig) -> dict:
    """BDMC (Grosse et al. 2015; Wu et al. 2017 §3, `evaluation.loglik.bdmc`) on
    `bdmc_examples` pairs (z, x) simulated from this decoder, with the AIS of `measure_ais`
    (same schedule, chains and HMC settings): forward AIS from the prior (stochastic lower
    bound) and reverse AIS from the exact posterior sample z (stochastic upper bound). Their
    gap per example, mean ± SE, bounds how far that AIS falls short of log p(x) on data of
    this decoder."""
    result = bdmc(model, cfg.bdmc_examples, seed=cfg.seed + 11, **_ais(cfg))
    return {
        "bdmc_gap": per_example_stat(result.gap, "examples simulated from the decoder"),
        "bdmc_lower": float(result.lower.mean()),
        "bdmc_upper": float(result.upper.mean()),
        "bdmc_settings": ais_settings(cfg) | {"examples": cfg.bdmc_examples},
        "bdmc_gap_per_example": result.gap.cpu().tolist(),
    }


# --- evidence: paired differences, the AIS error bound and the verdicts ---------------------

# what per-seed results keep of a cached measurement (the per-example values stay in the
# measure-/ais-/bdmc-*.json files of the seed's directory)
ROW_KEYS = ("elbo", "iwae_loglik", "fid", "fid_se", "kid", "n_fid_samples", "sigma",
            "ais_loglik", "iwae_loglik_ais_examples", "ais_examples", "examples_sha256",
            "ais_acceptance", "bdmc_gap", "bdmc_lower", "bdmc_upper")  # fmt: skip
# the decoders ELBO training produced: (key, label, row of Table 1); row 1 is the truth
DECODERS = (("fixed", "σ fixed", 2), ("learned", "σ learned", 3))
TRUTH_ROW = 1
MIN_AIS_EXAMPLES = 100  # below this, the normal interval of a paired AIS mean is not trusted
Z95 = normal_interval(0.0, 1.0)["high"]  # z_{0.975}


def paired_difference(
    after: Sequence[float], before: Sequence[float], over: str = "held-out examples"
) -> dict[str, Any]:
    """The per-example paired difference after_i − before_i (the same examples, in the same
    order): its mean, sd, standard error sd/√n and normal 95 % interval (`per_example_stat`)."""
    a = torch.as_tensor(after, dtype=torch.float64)
    b = torch.as_tensor(before, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1:
        raise VaelabError(
            f"groundtruth: paired differences need values on the same examples, got "
            f"{list(a.shape)} and {list(b.shape)}"
        )
    return per_example_stat(a - b, over)


def ais_bound(truth: dict, decoder: dict) -> float | None:
    """The larger of the two decoders' BDMC gaps (each the upper end of its 95 % interval):
    with each AIS estimate in [log p − gap, log p] (on simulated data), the AIS difference
    decoder − truth is off by at most this much either way. None without BDMC."""
    gaps = [m.get("bdmc_gap") for m in (truth, decoder)]
    if any(g is None for g in gaps):
        return None
    return max(g["mean"] + Z95 * g["se"] for g in gaps)


def margin(effect: dict) -> float:
    """How far the effect's 95 % interval stays from 0 (0 when it contains 0)."""
    low, high = effect.get("low"), effect.get("high")
    if low is None or high is None or low <= 0 <= high:
        return 0.0
    return min(abs(low), abs(high))


def ais_caveat(effect: dict, bound: float | None, examples: int) -> str | None:
    """Why a paired AIS difference cannot decide: fewer than `MIN_AIS_EXAMPLES` examples, no
    BDMC bound, or a BDMC bound not clearly below the effect — not below the margin by which
    the effect's interval clears 0, so the AIS error could move it across 0."""
    if examples < MIN_AIS_EXAMPLES:
        return f"AIS on {examples} < {MIN_AIS_EXAMPLES} examples"
    if bound is None:
        return "no BDMC bound on the AIS error"
    if not bound < margin(effect):
        return (
            f"BDMC gap {bound:.3g} nats not below the effect's margin from 0 "
            f"({margin(effect):.3g}): AIS too loose to decide"
        )
    return None


def differences(rows: list[dict], per_example: dict[str, dict]) -> dict[str, dict]:
    """Per trained decoder, its paired differences against the truth (Table 1 row 1: decoder
    = truth, its ELBO-trained encoder) on the same held-out examples: ELBO and IWAE over all
    held-out samples, AIS and IWAE over the AIS examples, FID (SE from the two bootstrap
    SEs, as if independent) and the AIS error bound (`ais_bound`). `per_example`: stage →
    the cached measurement with its per-example values ("truth", "fixed", "learned")."""
    truth = per_example["truth"]
    out = {}
    for key, _, row in DECODERS:
        m = per_example[key]
        if m["held_out_sha256"] != truth["held_out_sha256"]:
            raise VaelabError("groundtruth: the decoders were measured on different examples")
        d = {
            "elbo": paired_difference(m["elbo_per_example"], truth["elbo_per_example"]),
            "iwae": paired_difference(m["iwae_per_example"], truth["iwae_per_example"]),
        }
        fid_se = [r.get("fid_se") for r in (rows[row], rows[TRUTH_ROW])]
        fid = rows[row]["fid"] - rows[TRUTH_ROW]["fid"]
        d["fid"] = (
            normal_interval(fid, math.hypot(*fid_se)) | {"n": None, "over": "bootstrap"}
            if None not in fid_se
            else {"n": 1, "mean": fid, "se": None, "low": None, "high": None}
        )
        if "ais_per_example" in m and "ais_per_example" in truth:
            if m["examples_sha256"] != truth["examples_sha256"]:
                raise VaelabError("groundtruth: AIS ran on different examples per decoder")
            d["ais"] = paired_difference(m["ais_per_example"], truth["ais_per_example"])
            d["iwae_ais_examples"] = paired_difference(
                m["iwae_per_example_ais_examples"], truth["iwae_per_example_ais_examples"]
            )
            d["ais_bound"] = ais_bound(truth, m)
            d["ais_examples"] = m["ais_examples"]
        out[key] = d
    return out


def claims(label: str) -> tuple[str, str, str]:
    """The three claims decided for the decoder trained with `label` (σ fixed / learned)."""
    return (
        f"ELBO training ({label}) raises the ELBO of held-out truth samples",
        f"ELBO training ({label}) lowers the true-data log-likelihood (AIS)",
        f"ELBO training ({label}) worsens samples: FID against the truth's rises",
    )


NO_EFFECT = {"n": 0, "mean": None, "se": None, "low": None, "high": None}


def decide(diffs: dict[str, dict], weak: bool) -> list[dict]:
    """The verdicts (`evaluation.verdicts.verdict`) of every claim from `diffs`: one seed's
    `differences` (normal intervals over its examples) or their `summary_differences` over
    seeds (Student-t intervals of the per-seed means). The AIS claim carries `ais_caveat`,
    the FID claim "weak features" when the features are."""
    out = []
    for key, label, _ in DECODERS:
        elbo_claim, loglik_claim, fid_claim = claims(label)
        d = diffs[key]
        if "ais" in d:
            ais, caveat = d["ais"], ais_caveat(d["ais"], d["ais_bound"], d["ais_examples"])
        else:
            ais, caveat = NO_EFFECT, "AIS not run"
        out += [
            verdict(elbo_claim, d["elbo"], +1),
            verdict(loglik_claim, ais, -1, caveat),
            verdict(fid_claim, d["fid"], +1, "weak features" if weak else None),
        ]
    return out


def reproduced(verdicts: list[dict]) -> bool:
    """The paper's effect: the ELBO rises and the AIS likelihood falls, for both decoders."""
    wanted = {c for _, label, _ in DECODERS for c in claims(label)[:2]}
    return all(v["verdict"] == REPRODUCED for v in verdicts if v["claim"] in wanted)


def summarise_over_seeds(per_seed: list[dict]) -> dict[str, Any]:
    """Per-seed {mean, se, …} (over examples), summarised over seeds: one seed's as it is;
    for several, the Student-t `interval` of their means (its se over seeds), with the
    seeds' own SEs beside (`se_per_seed`)."""
    if len(per_seed) == 1:
        return per_seed[0]
    return interval([s["mean"] for s in per_seed]) | {
        "over": "seeds",
        "se_per_seed": [s.get("se") for s in per_seed],
    }


def summary_differences(per_seed: list[dict]) -> dict[str, dict]:
    """The seeds' `differences` summarised: per decoder and measure `summarise_over_seeds`
    (one seed: its own); the AIS error bound the largest over the seeds (None when a seed
    has none), the AIS examples the fewest."""
    out = {}
    for key, _, _ in DECODERS:
        seeds = [d[key] for d in per_seed]
        summary = {
            k: summarise_over_seeds([s[k] for s in seeds])
            for k in ("elbo", "iwae", "fid", "ais", "iwae_ais_examples")
            if all(k in s for s in seeds)
        }
        if "ais" in summary:
            bounds = [s["ais_bound"] for s in seeds]
            summary["ais_bound"] = None if None in bounds else max(bounds)
            summary["ais_examples"] = min(s["ais_examples"] for s in seeds)
        out[key] = summary
    return out


# the rows of Table 1 (the keys of a seed's flat metrics: `<stage>_<measurement>`)
STAGES = ("encoder", "truth", "fixed", "learned")
MEASUREMENTS = ("elbo", "iwae_loglik", "ais_loglik", "bdmc_gap", "fid", "sigma")
COLUMNS = ("elbo", "iwae_loglik", "iwae_loglik_ais_examples", "fid", "fid_se", "sigma")
STATS = ("ais_loglik", "bdmc_gap")  # {mean, se, …} per seed


def run_groundtruth_seed(cfg: GroundTruthSeedConfig, run_dir: Path) -> dict[str, float]:
    """One seed's run in `run_dir` (resumed from whatever it holds): the GAN, the fits, the
    measurements (cached per stage), the paired differences and verdicts, results.json,
    report.md and samples.png; its flat metrics (`truth_elbo`, `fixed_fid`, …: `STAGES` ×
    `MEASUREMENTS`, those measured — the mean of those with an SE)."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train, _ = load_data(
        DataConfig(name=cfg.dataset, path=cfg.data_path, train_limit=cfg.train_limit)
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    generator = Generator(cfg.latent_dim, train.shape[0]).to(device)
    trained_once(
        generator, run_dir / "generator.safetensors", lambda: train_gan(cfg, train, generator)
    )
    truth = GroundTruth(generator, cfg.sigma, cfg.latent_dim)
    g = torch.Generator(device=device).manual_seed(cfg.seed + 7)
    _, held_out = truth.sample(cfg.eval_samples, generator=g)
    with torch.no_grad():
        reference = torch.cat(
            [
                truth.generator(torch.randn(500, cfg.latent_dim, device=device, generator=g))
                for _ in range(math.ceil(cfg.fid_samples / 500))
            ]
        )[: cfg.fid_samples]
    extractor = get_feature_extractor(
        train, cfg.inception_weights, device=device, progress=cfg.progress
    )
    protocol = fid_protocol(
        extractor,
        reference.cpu(),
        cfg.fid_samples,
        f"ground-truth samples G(z) + 0 noise (the truth's decoder means), z ~ N(0, I), drawn "
        f"with torch.Generator seed {cfg.seed + 7} after the {cfg.eval_samples} held-out "
        f"samples; generated: each decoder's means G'(z), z ~ N(0, I), torch seed "
        f"{cfg.seed + 1}",
        bootstrap=cfg.fid_bootstrap,
    )

    torch.manual_seed(cfg.seed)
    base = build_model(cfg, generator, train.shape, "fixed").to(device)
    fit_on_draws(base, truth, conditional_likelihood, cfg.pretrain_steps, cfg, run_dir / "encoder")

    def cached(path: Path, compute: Callable[[], dict], current: Callable[[dict], bool]) -> dict:
        if path.exists() and current(old := read_json(path)):
            return old
        write_json(path, compute())
        return read_json(path)

    held_out_digest = examples_digest(held_out)
    ais_digest = examples_digest(held_out[: cfg.ais_examples])

    fid_settings = {"n_fid_samples": cfg.fid_samples, "fid_bootstrap": cfg.fid_bootstrap,
                    "kid_subsets": cfg.kid_subsets}  # fmt: skip

    def measured(model: VAE, stage: str, likelihood: bool = True) -> dict:
        """The stage's measurements, cached in the seed's directory like its weights (one
        made on other examples or settings, or before per-example values were kept, is
        measured again). Without `likelihood` (the truth's decoder again, another encoder):
        no FID, AIS or BDMC — the caller takes the truth's."""
        settings = fid_settings if likelihood else {}
        out = cached(
            run_dir / f"measure-{stage}.json",
            lambda: (
                measure(model, held_out, reference if likelihood else None, extractor, cfg)
                | settings
            ),
            lambda m: (
                m.get("held_out_sha256") == held_out_digest
                and all(m.get(k) == v for k, v in settings.items())
            ),
        )
        if likelihood and cfg.ais_examples:
            out |= cached(
                run_dir / f"ais-{stage}.json",
                lambda: measure_ais(model, held_out, cfg),
                lambda m: (
                    m.get("ais_settings") == ais_settings(cfg)
                    and m.get("examples_sha256") == ais_digest
                ),
            )
        if likelihood and cfg.bdmc_examples:
            out |= cached(
                run_dir / f"bdmc-{stage}.json",
                lambda: measure_bdmc(model, cfg),
                lambda m: (
                    m.get("bdmc_settings") == ais_settings(cfg) | {"examples": cfg.bdmc_examples}
                ),
            )
        return out

    # The truth's own ELBO needs an encoder fitted to it by the ELBO: with the conditional-
    # likelihood encoder it sits hundreds of nats low (and the IWAE bound is looser too).
    reference_model = build_model(cfg, generator, train.shape, "fixed").to(device)
    reference_model.encoder.load_state_dict(base.encoder.state_dict())
    reference_model.decoder.requires_grad_(False)
    fit_on_draws(
        reference_model, truth, negative_elbo, cfg.joint_steps, cfg, run_dir / "elbo-encoder-only"
    )
    per_example = {"truth": measured(reference_model, "elbo-encoder-only")}
    # FID, AIS and BDMC do not use the encoder: the first two rows share the truth's
    shared = ("fid", "fid_se", "kid", "n_fid_samples", "ais_loglik", "ais_examples",
              "examples_sha256", "ais_acceptance", "bdmc_gap", "bdmc_lower", "bdmc_upper")  # fmt: skip
    of_truth = {k: per_example["truth"][k] for k in shared if k in per_example["truth"]}
    rows = [
        {"experiment": "encoder only (conditional likelihood), decoder = truth"}
        | row_of(measured(base, "encoder", likelihood=False))
        | of_truth,
        {"experiment": "encoder only (ELBO), decoder = truth"} | row_of(per_example["truth"]),
    ]
    grids = {"truth": reference[:32]}
    for (key, name, _), mode in zip(DECODERS, ("fixed", "learned-shared")):
        model = build_model(cfg, generator, train.shape, mode).to(device)
        model.encoder.load_state_dict(base.encoder.state_dict())
        fit_on_draws(model, truth, negative_elbo, cfg.joint_steps, cfg, run_dir / f"elbo-{mode}")
        per_example[key] = measured(model, f"elbo-{mode}")
        rows.append(
            {"experiment": f"encoder and decoder (ELBO, {name})"} | row_of(per_example[key])
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            grids[name] = model.generate(32).clamp(0, 1)
    save_image_grid(run_dir / "samples.png", torch.cat([grids[k].cpu() for k in grids]), ncol=16,
                    title="rows: truth (2) · ELBO σ fixed (2) · ELBO σ learned (2)")  # fmt: skip
    diffs = differences(rows, per_example)
    verdicts = decide(diffs, extractor.weak)
    results = {
        "rows": rows,
        "differences": diffs,
        "verdicts": {v["claim"]: v["verdict"] for v in verdicts},
        "verdict_details": verdicts,
        "reproduced": reproduced(verdicts),
        "ais": likelihood_protocol(cfg),
        "fid_features": extractor.name,
        "fid_protocol": protocol,
        "config": asdict(cfg),
    }
    write_json(run_dir / "results.json", results)
    text = effect_text(rows, diffs, verdicts)
    write_report(run_dir, rows, diffs, verdicts, protocol, cfg, str(cfg.seed), text, "samples.png")
    return {
        f"{stage}_{key}": row[key]["mean"] if key in STATS else row[key]
        for stage, row in zip(STAGES, rows)
        for key in MEASUREMENTS
        if key in row
    }


def likelihood_protocol(cfg: GroundTruthSettings) -> dict[str, Any]:
    """How the likelihoods were measured: AIS (`ais_settings`) on how many held-out
    examples, BDMC on how many simulated ones, IWAE with which k."""
    return ais_settings(cfg) | {
        "examples": cfg.ais_examples,
        "same_examples_for_every_decoder": True,
        "bdmc_examples": cfg.bdmc_examples,
        "iwae_k": cfg.iwae_k,
        "eval_samples": cfg.eval_samples,
    }


def row_of(measurement: dict) -> dict:
    """A row of Table 1: the measurement's `ROW_KEYS` (no per-example values)."""
    return {k: measurement[k] for k in ROW_KEYS if k in measurement}


TARGET = Target(
    "groundtruth",
    GroundTruthSeedConfig,
    run_groundtruth_seed,
    "seed",
    "device",
    {"progress": False},
)


@experiment(
    "groundtruth", GroundTruthConfig, "ELBO vs a known ground-truth decoder (GAN + noise): Table 1"
)
def run_groundtruth(cfg: GroundTruthConfig, run_dir: Path) -> dict:
    """Every seed's run as a cell of the grid runner (run_dir/seed<s>/, the sweep table in
    run_dir/sweep.md), then over the seeds that finished: Table 1 (mean ± 95 % half-width),
    the paired differences, the verdicts (over seeds from the per-seed means; one seed: its
    own, over its examples), each seed's verdicts and the failed seeds' errors, in
    results.json and report.md. Refuses when no seed finished."""
    run_dir = Path(run_dir)
    records = run_seeds("groundtruth", TARGET, cfg.seed_config, cfg.seeds, run_dir, cfg.sweep)
    seeds, finished = [], []
    for record in records:
        where = Path(record["dir"]).resolve().relative_to(run_dir.resolve()).as_posix()
        entry = {"seed": record["seed"], "status": record["status"], "dir": where}
        if record["status"] == "done":
            r = read_json(Path(record["dir"]) / "results.json")
            entry |= {
                "reproduced": r["reproduced"],
                "verdict": effect_text(r["rows"], r["differences"], r["verdict_details"]),
                "verdicts": r["verdicts"],
                "rows": r["rows"],
                "differences": r["differences"],
            }
            finished.append(entry | {k: r[k] for k in ("fid_features", "fid_protocol")})
        else:
            entry["error"] = record.get("error", record["status"])
        seeds.append(entry)
    rows = summary_rows([e["rows"] for e in finished])
    diffs = summary_differences([e["differences"] for e in finished])
    weak = any(e["fid_protocol"]["weak_features"] for e in finished)
    verdicts = decide(diffs, weak)  # one seed: its own verdicts
    over = (
        "the examples of the one finished seed (normal intervals of its paired differences)"
        if len(finished) == 1
        else f"the {len(finished)} finished seeds (Student-t interval of the per-seed means)"
    )
    results = {
        "seeds": cfg.seeds,
        "done": len(finished),
        "ais_examples": cfg.ais_examples,
        "ais": likelihood_protocol(cfg),
        "reproduced": sum(e["reproduced"] for e in finished),
        "verdicts": {v["claim"]: v["verdict"] for v in verdicts},
        "verdict_details": verdicts,
        "verdicts_over": over,
        "interval": "scalar columns per stage over the finished seeds: n, mean, standard error "
        "and the 95 % Student-t interval mean ± t_{0.975, n-1} · s/√n (one seed: the value "
        "alone); ais_loglik, bdmc_gap and the differences: one seed's mean ± SE sd/√n over its "
        "examples with the normal 95 % interval, several seeds' the Student-t interval of "
        "their means",
        "rows": rows,
        "differences": diffs,
        "per_seed": seeds,
        "fid_features": finished[0]["fid_features"],
        "fid_protocol": finished[0]["fid_protocol"],
        "config": asdict(cfg),
    }
    write_json(run_dir / "results.json", results)
    shown = [{k: show(v) if isinstance(v, dict) else v for k, v in r.items()} for r in rows]
    samples = f"{finished[0]['dir']}/samples.png"
    note = (
        f" Seeds {', '.join(map(str, cfg.seeds))}: per stage the mean over the "
        f"{len(finished)} finished seeds ± the half-width of the 95 % Student-t interval; "
        f"paired differences and verdicts over {over}; every cell in [sweep.md](sweep.md); "
        f"samples of seed {finished[0]['seed']}."
        if len(cfg.seeds) > 1
        else ""
    )
    protocol = finished[0]["fid_protocol"]
    seed_list = ", ".join(map(str, cfg.seeds))
    text = seeds_text(seeds)
    write_report(run_dir, shown, diffs, verdicts, protocol, cfg, seed_list, text, samples, note)
    return results


def summary_rows(per_seed_rows: list[list[dict]]) -> list[dict]:
    """Table 1 over seeds: per stage, the `sweeps.interval` of every scalar column any seed
    has, and `summarise_over_seeds` of AIS log-likelihood and BDMC gap."""
    rows = []
    for stage in zip(*per_seed_rows):
        row = {"experiment": stage[0]["experiment"]}
        for key in COLUMNS:
            if any(r.get(key) is not None for r in stage):
                row[key] = interval([r.get(key) for r in stage])
        for key in STATS:
            if all(key in r for r in stage):
                row[key] = summarise_over_seeds([r[key] for r in stage])
        if "ais_examples" in stage[0]:
            row["ais_examples"] = stage[0]["ais_examples"]
        rows.append(row)
    return rows


def seeds_text(seeds: list[dict]) -> str:
    """The verdict of the recipe: one seed's verdict as it is; for several, how many seeds
    reproduce the effect and each seed's verdict (or error)."""
    if len(seeds) == 1:
        return seeds[0]["verdict"]
    finished = [s for s in seeds if s["status"] == "done"]
    failed = len(seeds) - len(finished)
    lines = [
        f"Per seed (each seed's run, paired differences and verdicts in its directory): the "
        f"paper's effect (the ELBO rises and the AIS likelihood falls for both decoders, each "
        f"decided over the seed's examples) is reproduced by "
        f"{sum(s['reproduced'] for s in finished)} of {len(finished)} finished "
        f"seeds{f' ({failed} failed)' if failed else ''}.\n"
    ]
    for s in seeds:
        if s["status"] == "done":
            lines.append(
                f"- seed {s['seed']} ([{s['dir']}/]({s['dir']}/report.md)): {s['verdict']}"
            )
        else:
            lines.append(f"- seed {s['seed']}: {s['status']} — {s['error']}")
    return "\n".join(lines)


def effect_text(rows: list[dict], diffs: dict, verdicts: list[dict]) -> str:
    """One seed's Table 1 in a sentence: the ELBO, the AIS likelihood (paired difference ±
    SE) and the FID of the truth and of the two ELBO-trained decoders, and whether the
    paper's effect is reproduced (`reproduced`, from the verdicts)."""
    truth, fixed, learned = rows[TRUTH_ROW], rows[2], rows[3]

    def paired(key: str) -> str:
        if key not in diffs["fixed"]:
            return "not measured"
        f, s = diffs["fixed"][key], diffs["learned"][key]
        return f"{f['mean']:+.1f} ± {f['se']:.1f} / {s['mean']:+.1f} ± {s['se']:.1f} (paired, ± SE)"

    if "ais_loglik" in truth:
        ais = (
            f"the held-out AIS log-likelihood ({truth['ais_examples']} examples) goes "
            f"{truth['ais_loglik']['mean']:.1f} → {fixed['ais_loglik']['mean']:.1f} / "
            f"{learned['ais_loglik']['mean']:.1f}, a change of {paired('ais')}"
        )
    else:
        ais = "AIS was not run"
    outcome = "reproduced" if reproduced(verdicts) else "not (fully) reproduced"
    return (
        f"With the decoder at the truth (encoder fitted by the ELBO) the ELBO is "
        f"{truth['elbo']:.1f}; training the decoder too takes it to {fixed['elbo']:.1f} (σ "
        f"fixed) and {learned['elbo']:.1f} (σ learned), a change of {paired('elbo')}; {ais}; "
        f"FID {truth['fid']:.2f} → {fixed['fid']:.2f} / {learned['fid']:.2f}: the paper's "
        f"effect (ELBO up, AIS likelihood down, both decoders) is {outcome} here."
    )


def _shown(value: Any) -> Any:
    """A stat as 'mean ± half-width' (`sweeps.show`); what the recipe already showed as is."""
    return show(value) if isinstance(value, dict) else value


def _cell(stat: Any, digits: int = 4) -> str:
    """A stat {mean, low, high} as 'mean [low, high]', a number as itself."""
    if not isinstance(stat, dict):
        return "—" if stat is None else fmt(stat, digits)
    if stat.get("mean") is None:
        return "—"
    if stat.get("low") is None:
        return fmt(stat["mean"], digits)
    return f"{fmt(stat['mean'], digits)} [{fmt(stat['low'], digits)}, {fmt(stat['high'], digits)}]"


def write_report(
    run_dir: Path,
    rows: list[dict],
    diffs: dict,
    verdicts: list[dict],
    protocol: dict,
    cfg: GroundTruthSettings,
    seeds: str,
    verdict_text: str,
    samples: str,
    note: str = "",
) -> None:
    """Table 1 of `rows` (values, or the recipe's `show`n intervals over seeds; `note` says
    which), the paired differences against the truth, the verdicts, the scale beside the
    paper's, the FID protocol and the paper's table, in run_dir/report.md."""
    has_ais = all("ais_loglik" in r for r in rows)
    has_bdmc = all("bdmc_gap" in r for r in rows)
    columns = ["experiment", "ELBO", f"IWAE log-lik ({cfg.eval_samples})", "FID", "σ"]
    table = [[r["experiment"], r["elbo"], r["iwae_loglik"], r["fid"], r["sigma"]] for r in rows]
    if has_ais:
        n = rows[TRUTH_ROW]["ais_examples"]
        columns[3:3] = [f"AIS log-lik ({n})", f"IWAE log-lik ({n}, AIS examples)"]
        for line, r in zip(table, rows):
            line[3:3] = [_shown(r["ais_loglik"]), r.get("iwae_loglik_ais_examples", "—")]
    if has_bdmc:
        columns.insert(5 if has_ais else 3, f"BDMC gap ({cfg.bdmc_examples} simulated)")
        for line, r in zip(table, rows):
            line.insert(5 if has_ais else 3, _shown(r["bdmc_gap"]))
    diff_columns = ["decoder", f"Δ ELBO ({cfg.eval_samples})", f"Δ IWAE ({cfg.eval_samples})",
                    "Δ FID"]  # fmt: skip
    diff_rows = [[label, _cell(diffs[k]["elbo"]), _cell(diffs[k]["iwae"]), _cell(diffs[k]["fid"])]
                 for k, label, _ in DECODERS]  # fmt: skip
    if "ais" in diffs["fixed"]:
        n = cfg.ais_examples
        diff_columns[1:1] = [
            f"Δ AIS ({n})",
            "AIS error bound (BDMC)",
            f"Δ IWAE ({n}, AIS examples)",
        ]
        for line, (k, _, _) in zip(diff_rows, DECODERS):
            line[1:1] = [_cell(diffs[k]["ais"]), _cell(diffs[k].get("ais_bound")),
                         _cell(diffs[k]["iwae_ais_examples"])]  # fmt: skip
    headers, verdict_rows = verdict_table(verdicts)
    paper = [[e, elbo, fid] for e, elbo, fid in PAPER]
    caveat = (
        "IWAE is a lower bound whose slack grows with the mismatch between q(z|x) and the "
        "posterior: it is looser for the truth, whose posterior the ELBO-trained decoders have "
        "made easier (the paper's point), so it understates the truth's likelihood most and "
        "its paired differences are biased upwards. AIS does not use the encoder (the first "
        "two rows share it); it is the likelihood the verdict uses, on the same held-out "
        "examples for every decoder"
        + (
            f" ({cfg.ais_steps} annealing steps, sigmoid schedule, {cfg.ais_chains} chains, "
            f"HMC with {cfg.ais_leapfrog} leapfrog steps, initial step size {cfg.ais_step_size:g}"
            " adapted per chain)."
            if has_ais
            else " (not run here)."
        )
        + " Its error is bounded by BDMC (Grosse et al. 2015; Wu et al. 2017) on "
        f"{cfg.bdmc_examples} examples simulated from each decoder with the same AIS: "
        "reverse AIS from the exact posterior sample gives an upper bound, and the gap "
        "upper − lower bounds how low AIS is on such data (for the truth, the held-out data's "
        "own distribution; for a trained decoder a proxy, as in Wu et al. 2017). The likelihood verdict is inconclusive unless "
        "the larger of the two decoders' gaps (upper end of its 95 % interval) is below the "
        "margin by which the paired difference's 95 % interval clears 0, and unless AIS ran "
        f"on at least {MIN_AIS_EXAMPLES} examples. FID differences: SE from the two bootstrap "
        "SEs as if independent (they share the reference images)."
    )
    scale = [
        ["this run", f"{cfg.dataset} 28×28 (GAN on {cfg.train_limit or 'all'} training images)",
         f"DCGAN-style generator, {cfg.latent_dim} latents, σ = {cfg.sigma:g}; conv encoder "
         f"{cfg.encoder_channels} + {cfg.encoder_hidden}",
         f"GAN {cfg.gan_epochs} epochs; encoder {cfg.pretrain_steps}; ELBO {cfg.joint_steps} "
         f"(batch {cfg.batch_size})",
         seeds,
         f"{cfg.ais_examples} examples, {cfg.ais_steps} steps, {cfg.ais_chains} chains, "
         f"{cfg.ais_leapfrog} leapfrog; BDMC {cfg.bdmc_examples}",
         f"{cfg.fid_samples} per model"],
        ["paper (§4.2)", "CelebA 64×64", "DCGAN generator (Inkawhich 2017) + image noise σ "
         "(its value lost in our text); encoder like the discriminator",
         "not stated in the text we have", "1 run, no intervals", "none (FID only)",
         "200k per model"],
    ]  # fmt: skip
    lines = [
        f"# Ground-truth decoder: ELBO vs likelihood ({cfg.dataset}, 28×28)\n",
        f"Truth: DCGAN-style generator ({cfg.gan_epochs} epochs) + pixel noise σ = {cfg.sigma:g}, "
        f"{cfg.latent_dim} latents. Encoder pretrained {cfg.pretrain_steps} steps by conditional "
        f"likelihood; from it, ELBO training of the encoder alone (decoder = truth) and of "
        f"encoder and decoder, {cfg.joint_steps} steps each, batch {cfg.batch_size}, Adam "
        f"{cfg.lr:g}, on fresh samples of the truth. Held-out: {cfg.eval_samples} truth samples; "
        f"IWAE with k = {cfg.iwae_k}; FID of {cfg.fid_samples} decoder means against as many of "
        f"the truth's, features: {protocol['features']}. Nats per image; (n) = held-out samples "
        "used; AIS and BDMC: mean ± half-width of the 95 % interval." + note + "\n",
        markdown_table(columns, table),
        "\n## Paired differences against the truth (decoder = truth, its ELBO encoder)\n",
        "Per decoder, its value minus the truth's on the same held-out examples: mean [95 % "
        "interval]; the AIS error bound is the larger BDMC gap of the two decoders.\n",
        markdown_table(diff_columns, diff_rows),
        "\n## Verdicts\n",
        markdown_table(headers, verdict_rows),
        f"\n{verdict_text}\n",
        f"{caveat}\n",
        "## Scale, beside the paper's\n",
        markdown_table(
            ["", "data", "model", "steps", "seeds", "likelihood (AIS)", "FID images"], scale
        ),  # fmt: skip
        f"FID protocol: features {protocol['features']} (weights sha256 "
        f"{protocol['weights_sha256'][:16]}…, held-out accuracy "
        f"{protocol['held_out_accuracy']}, weak: {protocol['weak_features']}), images "
        f"{protocol['image_shape']} in [0, 1], {protocol['n_generated']} generated vs "
        f"{protocol['n_reference']} reference: {protocol['reference']}; SE: "
        f"{protocol['fid_se']}.\n",
        "Paper (Table 1, CelebA 64×64, its own FID features):\n",
        markdown_table(["experiment", "ELBO", "FID"], paper),
        f"\n![samples]({samples})\n",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))
