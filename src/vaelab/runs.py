"""A training run end to end: data → model → trainer → evaluation, figures and report.

A run is a directory (DESIGN §3): its resolved config, metrics, checkpoint, figures and
report.md. Running again on the same directory resumes.

Word-count runs (a `BowData` test set, e.g. a phase of `vaelab run semhash`) are reported
beside the usual terms with their NELBO in the three multinomial conventions (train and test,
a pass after training), the collapsed baseline and the gain over it, and retrieval by binary
codes when the posterior has them (`word_count_measures`). A recipe may store settings of its
data that `DataConfig` lacks under the checkpoint config's `WORD_COUNTS` section
({"count_smoothing": true}: `data.bow.smooth_counts`); loading a run applies them.

Weights: a run is loaded with the weights it trained (`weights="raw"`) or, when its
checkpoint holds them, with their exponential moving average (`weights="ema"`: tensors
`ema.<state_dict key>` beside `model.<key>`, metadata {"ema": {"decay": d}}, kept when
`train.ema_decay` is set); the report of an EMA-loaded run goes to files named with `_ema`
(eval_ema.json, report_ema.md, …: `report_path`), so it stands beside the raw one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import checkpoint_metadata, load_checkpoint, load_model_weights
from .config import Config, from_dict
from .data import ImageData, load_data
from .data.base import ImageSet
from .data.bow import (
    BowData,
    collapsed_baseline,
    convention_shifts,
    in_conventions,
    smooth_counts,
)
from .distributions.multinomial import CONVENTIONS
from .errors import CheckpointError, ConfigError, DataError, VaelabError
from .evaluation import evaluate
from .evaluation.figures import (
    plot_training_curves,
    save_image_grid,
    save_reconstructions,
    save_traversal_grid,
)
from .evaluation.inspection import traverse
from .evaluation.kl_decomposition import latent_usage
from .evaluation.retrieval import binary_codes, retrieval_metrics
from .files import atomic_write_text, read_jsonl, write_json
from .models import VAE, build_vae
from .registry import LIKELIHOODS
from .report import markdown_table
from .training import CHECKPOINT, METRICS, Trainer, distributed
from .training.ema import PREFIX as EMA_PREFIX
from .training.trainer import TrainState

LATENT_EXAMPLES = 5000  # test examples of a report's latent usage
WORD_COUNTS = "word_counts"  # checkpoint config section: data settings beyond DataConfig
WORD_COUNT_OPTIONS = {"count_smoothing": bool}  # what that section may hold
NELBO_BATCH = 100  # batch of the word-count NELBO pass (its Monte-Carlo draws depend on it)
RETRIEVAL_K = 100  # precision@k of word-count runs
WEIGHTS = ("raw", "ema")  # what `load_run` loads: the trained weights or their EMA
EMA = "ema"  # checkpoint metadata {"ema": {"decay": d}} beside tensors `EMA_PREFIX`<key>
TRAVERSAL = {"max_dims": 8, "steps": 9, "span": 3.0}  # the report's traversal figure


@dataclass
class Run:
    run_dir: Path
    config: Config
    model: VAE
    test_data: ImageData
    state: TrainState | None = None
    train_data: Any = None  # kept for word-count runs (baseline, retrieval database)
    word_counts: dict[str, Any] = field(default_factory=dict)  # the `WORD_COUNTS` section
    weights: str = "raw"  # `WEIGHTS`: what the model holds
    ema_decay: float | None = None  # the EMA's decay when weights == "ema"


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
        below = sorted(p.parent.name for p in run_dir.glob(f"*/{CHECKPOINT}"))
        hint = (
            f"; the runs in it: {', '.join(below)} (e.g. vaelab eval {run_dir / below[-1]})"
            if below
            else ""
        )
        raise CheckpointError(f"{str(run_dir)!r} holds no {CHECKPOINT}: not a trained run{hint}")
    return path


def require_finite(metrics: dict, what: str) -> None:
    """One line (VaelabError) when a number in `metrics` is NaN or infinite."""
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        shown = ", ".join(f"{k} = {metrics[k]}" for k in bad[:3])
        raise VaelabError(f"{what} is not finite ({shown}); the weights give no valid measure")


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    test_data: ImageData | None = None,
    weights: str = "raw",
) -> Run:
    """Rebuild a trained model from its run directory (weights and config from the checkpoint).

    `test_data`: the run's test set when the caller already holds it (else it is loaded).
    `weights`: "raw" (as trained) or "ema" (their moving average; one line naming
    train.ema_decay when the checkpoint holds none)."""
    if weights not in WEIGHTS:
        raise ConfigError(f"weights {weights!r} unknown; known: {', '.join(WEIGHTS)}")
    run_dir = Path(run_dir)
    path = checkpoint_file(run_dir)
    tensors, meta = load_checkpoint(path)
    source, ema_decay = str(path), None
    if weights == EMA:
        tensors, ema_decay = ema_tensors(path, tensors, meta)
        source += " (EMA weights)"
    cfg = stored_config(path, meta)
    options = word_count_options(path, meta)
    train_data = None
    if test_data is None:
        train_data, test_data = load_run_data(cfg, options)
        if not isinstance(test_data, BowData):
            train_data = None  # only word-count reports need it
    model = build_vae(cfg.model, test_data.shape)
    load_model_weights(model, tensors, source)
    model.to(distributed.resolve_device(device)).eval()
    state = TrainState(
        step=meta["step"],
        seconds=meta["seconds"],
        finished=meta["finished"],
        last_test=meta.get("last_test", {}),
    )
    return Run(run_dir, cfg, model, test_data, state, train_data, options, weights, ema_decay)


def ema_tensors(path: Path, tensors: dict, meta: dict) -> tuple[dict, float | None]:
    """The EMA weights of checkpoint `path` as 'model.*' tensors, and their decay; one line
    when it holds none."""
    ema = meta.get(EMA)
    if not isinstance(ema, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds no EMA weights (trained without train.ema_decay); "
            "set train.ema_decay (e.g. 0.999) to keep them, or load the raw weights (--weights raw)"
        )
    weights = {
        f"model.{k.removeprefix(EMA_PREFIX)}": v
        for k, v in tensors.items()
        if k.startswith(EMA_PREFIX)
    }
    return weights, ema.get("decay")


def report_path(run: Run, name: str) -> Path:
    """Where `write_run_report` writes file `name` of `run`: in its directory, with `_ema`
    before the suffix for a run loaded with its EMA weights."""
    if run.weights == "raw":
        return run.run_dir / name
    stem, dot, suffix = name.rpartition(".")
    return run.run_dir / f"{stem}_{run.weights}{dot}{suffix}"


def stored_config(path: Path, meta: dict) -> Config:
    """The typed config stored in checkpoint `path`'s metadata (its `WORD_COUNTS` section
    aside); a bad one names the file."""
    config = meta.get("config")
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != WORD_COUNTS}
    try:
        return from_dict(Config, config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} stores an invalid config: {exc}") from None


def word_count_options(path: Path, meta: dict) -> dict[str, Any]:
    """The `WORD_COUNTS` section of checkpoint `path`'s config ({} without one)."""
    config = meta.get("config")
    options = config.get(WORD_COUNTS, {}) if isinstance(config, dict) else {}
    bad = not isinstance(options, dict) or any(
        type(options[k]) is not WORD_COUNT_OPTIONS.get(k) for k in options
    )
    if bad:
        raise CheckpointError(
            f"checkpoint {str(path)!r} stores an invalid {WORD_COUNTS} section {options!r}; "
            f"known: {', '.join(f'{k} ({t.__name__})' for k, t in WORD_COUNT_OPTIONS.items())}"
        )
    return options


def load_run_data(cfg: Config, options: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(train, test) of a run: `load_data(cfg.data)`, count-smoothed when `options` (the
    `WORD_COUNTS` section) say so."""
    train, test = load_data(cfg.data)
    if (options or {}).get("count_smoothing"):
        if not isinstance(train, BowData):
            raise DataError(f"count_smoothing: {cfg.data.name} holds no word counts")
        train, test = smooth_counts(train, test)
    return train, test


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
            meta = checkpoint_metadata(path)
            cfg, options = stored_config(path, meta), word_count_options(path, meta)
            key = json.dumps([dataclasses.asdict(cfg.data), options], sort_keys=True)
            if key not in data_sets:
                data_sets[key] = load_run_data(cfg, options)[1]
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
    training curves (training_curves.png), reconstruction and sample grids and a latent
    traversal (image data: `report_traversal`), the word-count measures (word_counts.json:
    `word_count_measures`; their test NELBOs, baseline, gain and retrieval also in eval.json)
    and report.md; file names by `report_path`."""
    model, data = run.model, run.test_data
    word_counts = isinstance(data, BowData)
    if word_counts:
        metrics = metrics or evaluate(model, data, batch_size=NELBO_BATCH)
    metrics = metrics or evaluate(model, data)
    require_finite(metrics, f"the test loss of {str(run.run_dir)!r}")
    counts_section: list = []
    if word_counts:
        train = run.train_data
        if train is None:
            train = load_run_data(run.config, run.word_counts)[0]
        measures = word_count_measures(model, train, data, test_terms=metrics)
        write_json(report_path(run, "word_counts.json"), measures)
        metrics = dict(metrics) | flat_word_count_measures(measures)
        counts_section = word_count_report(measures, run.word_counts)
    write_json(report_path(run, "eval.json"), metrics)
    usage = latent_usage(model, data.limit(LATENT_EXAMPLES))
    write_json(report_path(run, "latents.json"), usage)
    figures = []
    if plot_training_curves(run.run_dir / "training_curves.png", read_jsonl(run.run_dir / METRICS)):
        figures.append("![training curves](training_curves.png)\n")
    device = next(model.parameters()).device
    if isinstance(data, ImageSet):
        x = data.batch(slice(0, n_images)).to(device)
        recons, samples = report_path(run, "reconstructions.png"), report_path(run, "samples.png")
        save_reconstructions(recons, x, model.reconstruct(x))
        with torch.random.fork_rng():
            torch.manual_seed(0)
            generated = model.generate(n_images)
        save_image_grid(samples, generated, title="decoder means of z ~ p(z)")
        figures += [f"![reconstructions]({recons.name})\n", f"![samples]({samples.name})\n"]
        figures += report_traversal(run, x[0], usage)
    m = run.config.model
    weights = (
        [
            f"Weights: the exponential moving average of the training weights (decay "
            f"{run.ema_decay}), not the weights as trained.\n"
        ]
        if run.weights == EMA
        else []
    )
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
        *weights,
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
        *counts_section,
        "\n## Figures\n",
        *figures,
    ]
    atomic_write_text(report_path(run, "report.md"), "\n".join(lines))
    return metrics


def report_traversal(run: Run, x: Tensor, usage: dict[str, Any]) -> list[str]:
    """traversal.png (`evaluation.inspection.traverse` with `TRAVERSAL`'s settings, around
    test example `x`, at the model's own β, the dimensions ordered by the KL of `usage`) and
    the report lines that show it and say how it was made; one line instead when the model
    has no traversal (discrete latents, a prior other than N(0, I), no active dimension)."""
    try:
        t = traverse(run.model, x, usage=usage, **TRAVERSAL)
    except VaelabError as exc:
        return [f"No latent traversal ({exc}).\n"]
    path = report_path(run, "traversal.png")
    labels = [f"z{j} (KL {kl:.2f})" for j, kl in zip(t.dims, t.kl)]
    span, steps = TRAVERSAL["span"], TRAVERSAL["steps"]
    xlabel = f"z_j from E[z_j|x] − {span:g} to E[z_j|x] + {span:g} ({steps} steps)"
    save_traversal_grid(path, t.means, labels, xlabel=xlabel)
    return [
        f"![latent traversal]({path.name})\n",
        f"Latent traversal: the {len(t.dims)} active dimension(s) (of at most "
        f"{TRAVERSAL['max_dims']}) by mean KL, largest first, each varied over {steps} values "
        f"from −{span:g} to +{span:g} prior standard deviations around the posterior mean of "
        "test example 0, the other dimensions held there; decoder means "
        "(`vaelab traverse` for other settings).\n",
    ]


# --- word-count runs --------------------------------------------------------------------------


def nelbo_by_convention(
    model, data, samples: int | None = None, terms: dict[str, float] | None = None
) -> dict[str, float]:
    """Mean NELBO per document of `data` in every multinomial convention, by a pass after
    training (`evaluate`, batches of `NELBO_BATCH`, its fixed seed) with `samples` samples
    of z (default: the model's own), plus the rate and the distortion in the model's own
    convention. `terms`: that pass's `evaluate` result when the caller has it."""
    if samples is not None:
        model.samples = samples
    terms = terms or evaluate(model, data, batch_size=NELBO_BATCH)
    convention = model.likelihood.describe()["nll_convention"]
    shifts = convention_shifts(data)
    relative = {c: v - shifts[convention] for c, v in shifts.items()}  # to the model's own
    return in_conventions(terms["negative_elbo"], relative) | {
        "rate": terms["rate"],
        f"distortion_{convention.replace('-', '_')}": terms["distortion"],
    }


def word_count_measures(
    model,
    train,
    test,
    samples: int | None = None,
    test_terms: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What a word-count run reports: per split the NELBO in every convention
    (`nelbo_by_convention`), the collapsed baseline (`data.bow.collapsed_baseline`) and the
    gain over it (the same in every convention: the number comparable across
    preprocessings), and, when the posterior has binary codes, retrieval of test queries
    against the training set by Hamming distance (`evaluation.retrieval`, precision@100,
    within radius 2, MAP, with chance levels)."""
    result: dict[str, Any] = {
        "train": nelbo_by_convention(model, train, samples),
        "test": nelbo_by_convention(model, test, samples, test_terms),
        "collapsed_baseline": {
            split: collapsed_baseline(train, data)
            for split, data in (("train", train), ("test", test))
        },
        "samples": model.samples,
    }
    result["gain"] = {  # collapsed baseline − model
        split: result["collapsed_baseline"][split]["nelbo_saturated"]
        - result[split]["nelbo_saturated"]
        for split in ("train", "test")
    }
    if model.posterior.has_enumerate_support:  # bits: codes 1[q(z_j|x) > ½]
        result["retrieval"] = retrieval_metrics(
            binary_codes(model, test),
            test.labels,
            binary_codes(model, train),
            train.labels,
            k=RETRIEVAL_K,
        )
    return result


def flat_word_count_measures(measures: dict[str, Any]) -> dict[str, float]:
    """The test numbers of `word_count_measures` as one flat {name: float} (eval.json)."""
    flat = {k: v for k, v in measures["test"].items() if k.startswith("nelbo_")}
    flat |= {f"collapsed_{k}": v for k, v in measures["collapsed_baseline"]["test"].items()}
    flat["gain_over_collapsed"] = measures["gain"]["test"]
    retrieval = measures.get("retrieval", {})
    flat |= {
        k: retrieval[k]
        for k in ("precision_at_100", "precision_within_radius_2", "map")
        if k in retrieval
    }
    return flat


def word_count_report(measures: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """report.md's section on `word_count_measures`."""
    base = measures["collapsed_baseline"]
    rows = [
        [c, measures["train"][k], measures["test"][k], base["train"][k], base["test"][k]]
        for c in CONVENTIONS
        for k in [f"nelbo_{c.replace('-', '_')}"]
    ]
    smoothing = (
        "counts smoothed as the reproduction does (`data.bow.smooth_counts`)"
        if options.get("count_smoothing")
        else "no count smoothing"
    )
    lines = [
        "\n## Word counts: NELBO per document (nats)\n",
        f"A pass after training with {measures['samples']} sample(s) of z per document; "
        f"{smoothing}. Conventions of `distributions.multinomial` (full: with the multinomial "
        "coefficient; no-coefficient; saturated: relative to the saturated model).\n",
        markdown_table(
            ["convention", "train", "test", "collapsed baseline, train", "… test"], rows
        ),
        f"\nGain over the collapsed baseline (training unigram, rate 0; the same in every "
        f"convention): train {measures['gain']['train']:.2f}, test "
        f"{measures['gain']['test']:.2f} nats per document.\n",
    ]
    if measures.get("retrieval"):
        lines += retrieval_section(measures["retrieval"])
    return lines


def retrieval_section(retrieval: dict) -> list[str]:
    """Report lines for the measures of `evaluation.retrieval.retrieval_metrics`, each beside
    its chance level."""
    return [
        "\n## Retrieval (test queries vs the training set, Hamming distance)\n",
        "Ties in distance count in expectation over a random order (`evaluation.retrieval`); "
        "chance: one constant code for every document.\n",
        markdown_table(
            ["measure", "value", "chance"],
            [
                [name, retrieval[name], retrieval[f"chance_{name}"]]
                for name in ("precision_at_100", "precision_within_radius_2", "map")
            ],
        ),
        f"\nQueries with no document within Hamming radius 2 (scored 0): "
        f"{retrieval['empty_within_radius_2']:.1%}.\n",
    ]
