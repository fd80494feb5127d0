"""The design the regime studies share (rd-study, disentanglement, the demo's sweeps): the
regimes of DESIGN §1b (`evaluation.rate_distortion.REGIMES`) built as runs of one
architecture and budget, and one sample-quality pipeline — decoder means of codes from the
prior and from a second stage fitted to the aggregated posterior (Dai & Wipf 2019), scored
by FID/KID/MMD against test images (`evaluation.sample_quality`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config, DataConfig, ModelConfig, TrainConfig
from ..data import ImageData, load_data
from ..errors import VaelabError
from ..evaluation.feature_extractors import get_feature_extractor
from ..evaluation.inspection import SECOND_STAGE_DIR
from ..evaluation.rate_distortion import REGIMES, Regime
from ..evaluation.sample_quality import fid_protocol, sample_quality
from ..models import VAE
from ..models.two_stage import SecondStageLoss, build_second_stage, code_data, two_stage_generate
from ..runs import Run, load_run
from ..sweeps import TRAIN, Cell, Target, make_cell, run_sweep
from ..training import fit
from .settings import RecipeConfig, StudyConfig

# --- the runs --------------------------------------------------------------------------------


@dataclass
class StudyRun:
    """A trained run of a study, the regime it was built as and its seed."""

    name: str  # sub-directory of the study
    regime: Regime
    run: Run
    seed: int

    @property
    def model(self) -> VAE:
        return self.run.model

    def betas(self, betas: list[float]) -> list[float]:
        """The β values at which to look at the run: all of them if it is β-conditional."""
        return list(betas) if self.regime.conditional else [self.model.beta]


def regime_cells(
    cfg: RecipeConfig, data: DataConfig, sigma_modes: dict[Regime, str | None], betas: list[float]
) -> list[Cell]:
    """The runs of the regimes of `sigma_modes` (regime → the σ mode of its estimated σ_x;
    None for a classic one) as sweep cells, each for every seed of `cfg.seeds`: a run per β
    of `betas` for a sweep (`<regime>/beta<β>/seed<s>`), one run for a β-conditional regime
    (`<regime>/seed<s>`, `cfg.conditioning_fields()`); all of `cfg`'s architecture and budget.
    A cell's point is {"regime": label} and, for a sweep run, its "beta"."""
    train = cfg.training()
    cells = []
    for regime, sigma_mode in sigma_modes.items():
        fields = cfg.architecture() | regime.overrides(sigma_mode)
        if regime.conditional:
            models = {regime.name: ({}, ModelConfig(**fields, **cfg.conditioning_fields()))}
        else:
            models = {
                f"{regime.name}/beta{b:g}": ({"beta": b}, ModelConfig(**fields, beta=b))
                for b in betas
            }
        for name, (point, model) in models.items():
            config, point = Config(data, model, train), {"regime": regime.label} | point
            cells += [
                make_cell(TRAIN, f"{name}/seed{seed}", config, point, seed) for seed in cfg.seeds
            ]
    return cells


def run_all(cells: list[Cell], folder: Path, target: Target, sweep, what: str) -> list[dict]:
    """`run_sweep` of `cells` in `folder`; refuses, naming up to three of them and `what`
    failed, when cells did not finish (the finished ones are kept for the next try)."""
    records = run_sweep(cells, folder, target, sweep)
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        raise VaelabError(
            f"{what}: {len(failed)} of {len(records)} failed ("
            + "; ".join(f"{r['name']}: {r.get('error', r['status'])}" for r in failed[:3])
            + f"); see {folder / 'sweep.md'}, fix and run again (finished cells are kept)"
        )
    return records


def train_regimes(
    cells: list[Cell], run_dir: Path, recipe: str, cfg: RecipeConfig
) -> list[StudyRun]:
    """Train (or resume) every cell of `regime_cells` by the grid runner (`cfg.sweep`: on Ray
    when installed), then load them; the sweep table (test metrics over seeds) is written to
    run_dir/sweep.md. Refuses, naming them, when runs failed."""
    records = run_all(cells, run_dir, TRAIN, cfg.sweep, f"{recipe}: runs")
    regimes = {r.label: r for r in REGIMES}
    test_sets: dict[str, ImageData] = {}
    runs = []
    for cell, record in zip(cells, records):
        key = repr(cell.config["data"])
        run = load_run(record["dir"], cfg.device, test_sets.get(key))
        test_sets[key] = run.test_data
        runs.append(StudyRun(cell.name, regimes[cell.point["regime"]], run, cell.seed))
    return runs


def first_seed(runs: list[StudyRun]) -> list[StudyRun]:
    """The runs of the first seed (what figures of single runs show)."""
    return [r for r in runs if r.seed == runs[0].seed]


# --- sample quality --------------------------------------------------------------------------


def fit_second_stage(
    first: VAE,
    data: ImageData,
    hidden: list[int],
    steps: int,
    run_dir: Path,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> VAE:
    """A second stage (`build_second_stage`, initialised with `seed`) fitted by the trainer in
    `run_dir` for about `steps` steps to codes of `first` (frozen) over `data`, drawn once
    with `seed`; a finished fit there is loaded, an unfinished one resumed."""
    codes = code_data(first, data, seed)
    torch.manual_seed(seed)
    second = build_second_stage(first, hidden)
    epochs = max(1, round(steps / math.ceil(len(codes) / batch_size)))
    train = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=str(next(first.parameters()).device),
        progress=progress,
        log_every=100,
        checkpoint_every=500,
        eval_every=epochs,
    )
    description = {"second_stage": {"hidden": list(hidden), "codes": len(codes)}}
    fit(SecondStageLoss(second), codes, train, run_dir, description=description)
    return second.eval()


def decoder_samples(
    first: VAE, second: VAE | None, n: int, beta: float, seed: int
) -> dict[str, Tensor]:
    """Sampler → n decoder means in [0, 1] at β, each set drawn with `seed`: codes from the
    prior ("prior") and, given a second stage, from it ("two-stage")."""
    samplers = {"prior": lambda: first.generate(n, beta=beta)}
    if second is not None:
        samplers["two-stage"] = lambda: two_stage_generate(first, second, n, beta)
    samples = {}
    for sampler, draw in samplers.items():
        torch.manual_seed(seed)
        samples[sampler] = draw().clamp(0, 1).cpu()
    return samples


def sample_quality_study(
    runs: list[StudyRun], betas: list[float], cfg: StudyConfig, run_dir: Path
) -> dict[str, Any]:
    """FID/KID/MMD against the first `fid_samples` test images of as many `decoder_samples`,
    for every run at every β of `betas` it covers; a second stage if `second_stage_steps`,
    fitted in run_dir/second-stage/<run> (one β-conditional second stage for a conditional
    run). Features (`get_feature_extractor`) and second stages come from the training set."""
    train, _ = load_data(runs[0].run.config.data)
    extractor = get_feature_extractor(
        train, cfg.inception_weights, device=cfg.device, progress=cfg.progress
    )
    real = runs[0].run.test_data.images[: cfg.fid_samples]
    rows = []
    for study_run in runs:
        second = None
        if cfg.second_stage_steps:
            second = fit_second_stage(
                study_run.model, train, cfg.second_stage_hidden, cfg.second_stage_steps,
                run_dir / SECOND_STAGE_DIR / study_run.name, seed=study_run.seed, progress=cfg.progress,
            )  # fmt: skip
        for beta in study_run.betas(betas):
            samples = decoder_samples(study_run.model, second, len(real), beta, study_run.seed)
            for sampler, fake in samples.items():
                rows.append(
                    {"regime": study_run.regime.label, "run": study_run.name, "beta": beta}
                    | {"seed": study_run.seed, "sampler": sampler}
                    | sample_quality(
                        extractor,
                        real,
                        fake,
                        rng=study_run.seed,
                        kid_subsets=cfg.kid_subsets,
                        bootstrap=cfg.fid_bootstrap,
                    )  # fmt: skip
                )
    protocol = fid_protocol(
        extractor, real, len(real), f"the first {len(real)} images of the test split",
        cfg.fid_bootstrap,
    )  # fmt: skip
    return {"features": extractor.name, "n_real": len(real), "fid_protocol": protocol, "rows": rows}
