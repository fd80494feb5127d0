"""`vaelab run rd-study`: the four regimes of DESIGN §1b on one data set, same architecture
and budget, compared by rate–distortion, FID/KID and aggregated posteriors.

  (i)   classic β-VAE sweep      σ_x fixed (σ² = ½: Σ(x−μ)² + β·KL), one run per β
  (ii)  decoupled β-VAE sweep    σ_x learned (or optimal), β on the rate only, one run per β
  (iii) classic β-conditional    one run, log β ~ U[log a, log b], σ_x fixed (MR-VAE / YOTO)
  (iv)  decoupled β-conditional  one run, σ_x a function of β (or optimal): the proposal

Every run is a sub-directory that resumes (the regimes and the sample-quality pipeline are
those of `study`; second stages in second-stage/<run>); the study writes rd.csv/rd.md/rd.png,
fid.json, aggregate_posteriors.png, samples_*.png and report.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import DataConfig
from ..evaluation.aggregate_posterior import (
    aggregate_density,
    alignment_across_beta,
    most_active_channels,
    plot_aggregate_posteriors,
    posterior_moments,
)
from ..evaluation.figures import save_image_grid
from ..evaluation.rate_distortion import (
    CLASSIC_CONDITIONAL,
    CLASSIC_SWEEP,
    DECOUPLED_CONDITIONAL,
    DECOUPLED_SWEEP,
    log_grid,
    rd_points,
    write_rd,
)
from ..evaluation.verdicts import interval, stat, verdict, verdict_table
from ..files import atomic_write_text, write_json
from ..report import markdown_table
from ..sweeps import Cell, show
from ..sweeps.table import rd_figure
from .base import experiment
from .settings import RDStudyConfig
from .study import (
    StudyRun,
    decoder_samples,
    first_seed,
    regime_cells,
    sample_quality_study,
    train_regimes,
)


def study_cells(cfg: RDStudyConfig) -> list[Cell]:
    """The runs of all four regimes × seeds."""
    data = DataConfig(
        name=cfg.dataset, path=cfg.data_path, train_limit=cfg.train_limit, test_limit=cfg.test_limit
    )
    sigma_modes = {
        CLASSIC_SWEEP: None,
        DECOUPLED_SWEEP: cfg.decoupled_sigma_mode,
        CLASSIC_CONDITIONAL: None,
        DECOUPLED_CONDITIONAL: cfg.conditional_sigma_mode,
    }
    return regime_cells(cfg, data, sigma_modes, cfg.sweep_betas)


CLASSIC, OURS = CLASSIC_SWEEP.label, DECOUPLED_CONDITIONAL.label  # the talk's two columns


def fid_tables(fid: dict, betas: list[float], sampler: str = "prior") -> tuple[str, str, dict]:
    """The talk's table (β | classic β-VAE | decoupled β-conditional), all regimes, best-over-β
    (of the means over seeds), for the samples of one `sampler`; a cell shows the mean over
    seeds ± the half-width of its 95 % interval."""
    values: dict[tuple[str, float], list[float]] = {}
    for r in fid["rows"]:
        if r["sampler"] == sampler:
            values.setdefault((r["regime"], r["beta"]), []).append(r["fid"])
    stat = {key: interval(v) for key, v in values.items()}
    regimes = sorted({regime for regime, _ in stat})
    best = {g: min(stat[(g, b)]["mean"] for b in betas if (g, b) in stat) for g in regimes}

    def cell(regime: str, beta: float) -> str:
        return show(stat[(regime, beta)]) if (regime, beta) in stat else "—"

    talk = [[f"{b:g}", cell(CLASSIC, b), cell(OURS, b)] for b in betas]
    talk.append(["best over β", best.get(CLASSIC, math.nan), best.get(OURS, math.nan)])
    table_talk = markdown_table(
        ["β (value or range)", "classic β-VAE", "decoupled β-conditional (ours)"], talk
    )
    full = [[f"{b:g}", *(cell(g, b) for g in regimes)] for b in betas]
    full.append(["best over β", *(best[g] for g in regimes)])
    return table_talk, markdown_table(["β", *regimes], full), best


POSTERIOR_GRID = torch.linspace(-4, 4, 161)


def posterior_densities(
    runs: list[StudyRun], betas: list[float], k: int
) -> tuple[dict[str, dict[float, torch.Tensor]], dict[str, list[str]]]:
    """Aggregated posteriors of k channels per regime on `POSTERIOR_GRID`, at each β, for the
    runs of one seed: regime → β → [k, G], and the channels' titles. A β-conditional model
    shows the same k channels (its most active at the smallest β) at every β; separately
    trained sweep models share no channel order, so each shows its own k most active."""
    densities: dict[str, dict[float, torch.Tensor]] = {}
    titles: dict[str, list[str]] = {}
    for run in runs:
        regime = run.regime.label
        channels = None
        for beta in run.betas(betas):
            mean, log_var = posterior_moments(run.model, run.run.test_data.limit(2000), beta)
            if channels is None:
                channels = most_active_channels(log_var, mean, k)
            density = aggregate_density(mean, log_var, POSTERIOR_GRID)[channels]
            densities.setdefault(regime, {})[beta] = density
        titles[regime] = [
            f"z{c}" if run.regime.conditional else f"#{i + 1} most active"
            for i, c in enumerate(channels)
        ]
    return densities, titles


def by_seed(runs: list[StudyRun]) -> dict[int, list[StudyRun]]:
    out: dict[int, list[StudyRun]] = {}
    for r in runs:
        out.setdefault(r.seed, []).append(r)
    return out


def monotonicity(points: list[dict], tolerance: float = 1e-6) -> list[dict]:
    """Per model (a conditional run, or a sweep of one seed): whether its test rate falls and
    its distortion rises with β, as theory says of the optimum, and where they do not (the
    β pairs and by how much)."""
    models: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        models.setdefault((p["regime"], p["model"]), []).append(p)
    rows = []
    for (regime, which), members in sorted(models.items()):
        members = sorted(members, key=lambda p: p["beta"])
        breaks = []
        for a, b in zip(members, members[1:]):
            if b["rate"] > a["rate"] + tolerance:
                breaks.append(f"R rises {a['beta']:g}→{b['beta']:g} by {b['rate'] - a['rate']:.3g}")
            if b["distortion"] < a["distortion"] - tolerance:
                breaks.append(
                    f"D falls {a['beta']:g}→{b['beta']:g} by {a['distortion'] - b['distortion']:.3g}"
                )
        rows.append({
            "regime": regime, "model": which, "monotone": not breaks, "violations": breaks,
        })  # fmt: skip
    return rows


def matches_separate(points: list[dict], betas: list[float], margin: float = 0.01) -> list[dict]:
    """Claim (i) per β of the sweep: the decoupled β-conditional model's test loss D + β·R
    is within `margin`·|loss| of the separately trained decoupled β-VAE's (same seed). The
    effect per seed is margin·|separate| − (conditional − separate): > 0 when it matches."""
    loss = {(p["regime"], p["seed"], p["beta"]): p["loss"] for p in points}
    seeds = sorted({p["seed"] for p in points})
    out = []
    for beta in betas:
        effects, gaps = [], []
        for seed in seeds:
            ours, separate = (
                loss.get((OURS, seed, beta)),
                loss.get((DECOUPLED_SWEEP.label, seed, beta)),
            )
            if ours is None or separate is None:
                continue
            gaps.append(ours - separate)
            effects.append(margin * abs(separate) - (ours - separate))
        out.append(
            {"beta": beta, "gap": interval(gaps)}
            | verdict(
                f"β-conditional loss within {margin:.0%} of the separate β-VAE at β = {beta:g}",
                effects,
                +1,
            )
        )
    return out


def best_fid_effect(fid: dict, sampler: str) -> list[float]:
    """Per seed: best FID over β of the classic sweep minus that of the decoupled
    β-conditional model (> 0: ours is better)."""
    best: dict[tuple[str, int], float] = {}
    for r in fid["rows"]:
        if r["sampler"] == sampler:
            key = (r["regime"], r["seed"])
            best[key] = min(best.get(key, math.inf), r["fid"])
    seeds = sorted({seed for _, seed in best})
    return [
        best[(CLASSIC, s)] - best[(OURS, s)]
        for s in seeds
        if (CLASSIC, s) in best and (OURS, s) in best
    ]


def alignment(runs: list[StudyRun], betas: list[float], k: int) -> tuple[dict, dict]:
    """Claim (iii): per seed, the mean W₁ between q(z_j) at adjacent β (`alignment_across_beta`)
    of the classic sweep (up to sign) and of the decoupled β-conditional model; the effect
    classic − ours (> 0: ours are more aligned). Also the first seed's densities and titles."""
    distances: dict[str, list[float]] = {CLASSIC: [], OURS: []}
    effects, shown = [], None
    for runs_of_seed in by_seed(runs).values():
        densities, titles = posterior_densities(runs_of_seed, betas, k)
        shown = shown or (densities, titles)
        if CLASSIC not in densities or OURS not in densities:
            continue
        classic = alignment_across_beta(densities[CLASSIC], POSTERIOR_GRID, up_to_sign=True)
        ours = alignment_across_beta(densities[OURS], POSTERIOR_GRID)
        distances[CLASSIC].append(classic)
        distances[OURS].append(ours)
        effects.append(classic - ours)
    summary = {g: interval(v) for g, v in distances.items()} | {
        "effect": verdict(
            "the β-conditional model's aggregated posteriors are more aligned across β than the classic sweep's (W₁ between adjacent β)",
            effects,
            +1,
        )
    }
    return summary, shown


def sample_figures(
    runs: list[StudyRun], betas: list[float], out: Path, seed: int
) -> list[tuple[str, str]]:
    """Per regime: 8 samples (decoder means) at each β, one row per β."""
    names = []
    for regime in sorted({r.regime.label for r in runs}):
        rows = [
            decoder_samples(run.model, None, 8, beta, seed)["prior"]
            for run in sorted(
                (r for r in runs if r.regime.label == regime), key=lambda r: r.model.beta
            )
            for beta in run.betas(betas)
        ]
        name = f"samples_{regime.split()[0].strip('()')}.png"
        save_image_grid(
            out / name,
            torch.cat(rows),
            ncol=8,
            title=f"{regime}: rows β = {', '.join(f'{b:g}' for b in betas)}",
        )
        names.append((regime, name))
    return names


@experiment(
    "rd-study",
    RDStudyConfig,
    "classic vs decoupled, β sweeps vs β-conditional: RD, FID, posteriors",
)
def run_rd_study(cfg: RDStudyConfig, run_dir: Path) -> dict:
    betas = sorted(cfg.sweep_betas)
    rd_grid = sorted(set(log_grid(*cfg.beta_range, cfg.rd_points)) | set(betas))
    runs = train_regimes(study_cells(cfg), run_dir, "rd-study", cfg)

    points = [
        p | {"seed": run.seed, "model": model_name(run)}
        for run in runs
        for p in rd_points(run.model, run.run.test_data, rd_grid, run.regime.label, run.name)
    ]
    write_rd(run_dir, points, title=f"{cfg.dataset}: test set")
    rd_summary_figure(run_dir / "rd_summary.png", points)
    monotone = monotonicity(points)
    matches = matches_separate(points, betas)

    fid = sample_quality_study(runs, betas, cfg, run_dir)
    protocol = fid["fid_protocol"]
    caveat = "weak features" if protocol["weak_features"] else None
    verdicts = {
        "matches_separate": overall(
            "the decoupled β-conditional model matches separately trained decoupled β-VAEs at every β",
            matches,
        ),
        "best_fid_beats_classic": verdict(
            "best FID over β: decoupled β-conditional < classic β-VAE (prior samples)",
            best_fid_effect(fid, "prior"), +1, caveat,
        ),
    }  # fmt: skip
    if cfg.second_stage_steps:
        verdicts["best_fid_beats_classic_two_stage"] = verdict(
            "best FID over β: decoupled β-conditional < classic β-VAE (two-stage samples)",
            best_fid_effect(fid, "two-stage"), +1, caveat,
        )  # fmt: skip
    aligned, (densities, titles) = alignment(runs, betas, cfg.posterior_channels)
    verdicts["posteriors_aligned"] = aligned["effect"]
    fid |= {
        "seeds": cfg.seeds,
        "summary": fid_summary(fid),
        "verdicts": {k: v["verdict"] for k, v in verdicts.items()},
        "verdict_details": verdicts,
    }
    write_json(run_dir / "fid.json", fid)
    results = {
        "seeds": cfg.seeds,
        "matches_separate": matches,
        "monotonicity": monotone,
        "alignment": aligned,
        "verdicts": {k: v["verdict"] for k, v in verdicts.items()},
        "verdict_details": verdicts,
        "config": asdict(cfg),
    }
    write_json(run_dir / "results.json", results)

    talk_table, full_table, best = fid_tables(fid, betas)
    two_stage = []
    if cfg.second_stage_steps:
        talk_2, full_2, best_2 = fid_tables(fid, betas, "two-stage")
        two_stage = [
            "\n### With the two-stage sampler (z from a second VAE fitted to q(z), "
            f"{cfg.second_stage_steps} steps; one β-conditional second stage per conditional run)\n",
            talk_2,
            "\nAll regimes:\n",
            full_2,
        ]
    shown = first_seed(runs)
    order = sorted(densities)
    plot_aggregate_posteriors(
        run_dir / "aggregate_posteriors.png",
        {g: densities[g] for g in order},
        POSTERIOR_GRID,
        titles,
    )
    samples = sample_figures(shown, betas, run_dir, shown[0].seed)

    seconds = {r.regime.label: 0.0 for r in runs}
    for r in runs:
        seconds[r.regime.label] += r.run.state.seconds
    headers, verdict_rows = verdict_table(list(verdicts.values()))
    broken = [m for m in monotone if not m["monotone"]]
    report = [
        f"# Rate–distortion study on `{cfg.dataset}`\n",
        f"Scale: {cfg.dataset} ({cfg.train_limit or 'all'} training / {cfg.test_limit or 'all'} "
        f"test images), {cfg.network} {cfg.hidden if cfg.network == 'mlp' else cfg.channels}, "
        f"{cfg.latent_dim} latents, {cfg.epochs} epochs, batch {cfg.batch_size}, Adam {cfg.lr:g}, "
        f"for every run; seeds {cfg.seeds}. Sweeps at β ∈ {{{', '.join(f'{b:g}' for b in betas)}}}; "
        f"β-conditional runs with log β ~ U[log {cfg.beta_range[0]:g}, log {cfg.beta_range[1]:g}] "
        f"per {cfg.beta_sampling}, {cfg.conditioning} conditioning. Classic = σ_x² = ½ fixed "
        f"(Σ(x−μ)² + β·KL); decoupled = σ_x `{cfg.decoupled_sigma_mode}` (sweep) / "
        f"`{cfg.conditional_sigma_mode}` (conditional), β on the rate only. (The talk: CelebA "
        "64×64, convolutional networks, GPU budgets.) Every number below is a mean over seeds "
        "with its 95 % Student-t interval (one seed: the value alone); figures of single runs "
        f"show seed {shown[0].seed}. Test terms use σ_x as frozen from training.\n",
        "## Verdicts\n",
        markdown_table(headers, verdict_rows),
        "\n## Training time (seconds, all runs of the regime, all seeds)\n",
        markdown_table(["regime", "seconds"], [[k, v] for k, v in sorted(seconds.items())]),
        "\n## Rate–distortion (test set, nats per example)\n",
        "![rate–distortion over seeds](rd_summary.png)\n",
        "Distortion is −log p(x|z) under each model's own σ_x. Per run: ![rate–distortion](rd.png) "
        "— full table [rd.md](rd.md), [rd.csv](rd.csv).\n",
        "### (i) The β-conditional model against the separate decoupled β-VAEs\n",
        markdown_table(
            ["β", "loss gap, conditional − separate (nats)", "verdict (within 1 %)"],
            [[m["beta"], show(m["gap"]), m["verdict"]] for m in matches],
        ),
        "\n### Monotonicity in β (rate should fall, distortion rise)\n",
        (
            f"{len(monotone) - len(broken)} of {len(monotone)} models are monotone in both."
            + (
                ""
                if not broken
                else " Not monotone:\n\n"
                + markdown_table(
                    ["regime", "model", "where"],
                    [[m["regime"], m["model"], "; ".join(m["violations"])] for m in broken],
                )
            )
        )
        + "\n",
        f"## FID (features: {protocol['features']}; sha256 {protocol['weights_sha256'][:12]}…; "
        f"{protocol['n_generated']} samples against {protocol['reference']}; "
        f"{protocol['image_shape']} in [0, 1]; SE by {protocol['fid_se']})\n",
        *(
            [
                f"**Weak features**: held-out accuracy {protocol['held_out_accuracy']:.3f} < "
                f"{protocol['weak_below_accuracy']}: the FID verdicts are inconclusive.\n"
            ]
            if protocol["weak_features"]
            else []
        ),
        "In the format of the talk (CelebA there: β-VAE 65.33/57.19/63.42 vs ours "
        "58.41/55.43/55.28 at β = 1/0.1/0.01):\n",
        talk_table,
        "\nAll regimes:\n",
        full_table,
        "\nKID, MMD and the bootstrap SE of every FID: [fid.json](fid.json).\n",
        *two_stage,
        "## Aggregated posteriors q(z_j) across β\n",
        "![aggregated posteriors](aggregate_posteriors.png)\n",
        "Mean W₁ between q(z_j) at adjacent β over the shown channels (classic sweep up to sign): "
        f"classic {show(aligned[CLASSIC])}, decoupled β-conditional {show(aligned[OURS])}.\n",
        "## Samples (decoder means of z ~ N(0, I))\n",
        *(f"{regime}:\n\n![{regime}]({name})\n" for regime, name in samples),
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
    return results | {"rd": points, "fid": fid}


def model_name(run: StudyRun) -> str:
    """A conditional run is one model; a sweep of one seed is one model over β."""
    return run.name if run.regime.conditional else f"{run.regime.name}/seed{run.seed}"


def overall(claim: str, per_beta: list[dict]) -> dict:
    """A claim over every β: contradicted if it is at one β, reproduced if at all, else
    inconclusive; the effect shown is the worst β's."""
    outcomes = {m["verdict"] for m in per_beta}
    outcome = (
        "contradicted" if "contradicted" in outcomes
        else "reproduced" if outcomes == {"reproduced"} else "inconclusive"
    )  # fmt: skip
    worst = min(per_beta, key=lambda m: m["mean"] if m["mean"] is not None else math.inf)
    return worst | {"claim": claim, "verdict": outcome}


def fid_summary(fid: dict) -> list[dict]:
    """FID per regime, β and sampler over seeds: {mean, se, ci95, n}."""
    values: dict[tuple[str, float, str], list[float]] = {}
    for r in fid["rows"]:
        values.setdefault((r["regime"], r["beta"], r["sampler"]), []).append(r["fid"])
    return [
        {"regime": regime, "beta": beta, "sampler": sampler} | stat(v)
        for (regime, beta, sampler), v in sorted(values.items())
    ]


def rd_summary_figure(path: Path, points: list[dict]) -> None:
    """Rate–distortion per regime over β, mean over seeds with 95 % interval bars."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for p in points:
        groups.setdefault((p["regime"], p["beta"]), []).append(p)
    rows = [
        {"point": {"regime": regime, "beta": beta},
         "stats": {k: interval([p[k] for p in members]) for k in ("rate", "distortion")}}
        for (regime, beta), members in sorted(groups.items())
    ]  # fmt: skip
    rd_figure(path, ["regime", "beta"], rows, "beta")
