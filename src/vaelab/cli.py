"""Command line: `vaelab train | eval | rd | consistency | sample | traverse | interpolate |
sweep | sweep-report | run | demo`.

Errors the user can fix print one line and exit with code 2 (a skipped part prints one
warning line); an interrupted run exits with 130 and resumes when the same command is run
again. Torch and the recipes are imported only once the arguments, the config's keys, types
and ranges, and the run directory have been checked, so those errors, `--help` and
`--version` come back at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from vaelab import __version__

from .errors import ConfigError, VaelabError, closest
from .registry import EXPERIMENTS

RECIPES = tuple(EXPERIMENTS.declared_names())  # `vaelab run NAME`, known without importing them


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.beta=4 (repeatable)",
    )


def warn(message: str) -> None:
    """One warning line on stderr (the run goes on)."""
    print(f"vaelab: warning: {message}", file=sys.stderr)


def _config(path: str | None, overrides: list[str]) -> dict:
    """The mapping of config file `path` and `--set` overrides, its keys, types and ranges
    checked against `Config` without torch or the registries (names and combinations are
    `config.from_dict`'s, once the run directory is checked too)."""
    from .config import Config, check_fields, config_mapping

    mapping = config_mapping(path, overrides)
    check_fields(Config, mapping)
    return mapping


def writable_dir(path: str | Path, what: str = "run directory") -> Path:
    """`path` as a directory that exists or can be made, and is writable; else one line.
    Nothing is created (a probe file in the nearest existing folder is removed at once)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a file, not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: {str(existing)!r} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{what} {str(path)!r} is not writable (cannot create a file in "
            f"{str(existing)!r}: {exc.strerror})"
        ) from None
    return path


def cmd_train(args: argparse.Namespace) -> int:
    from .config import Config, from_dict

    mapping = _config(args.config, args.overrides)
    run_dir = writable_dir(args.run_dir or Path("runs") / Path(args.config).stem)
    cfg = from_dict(Config, mapping)
    from .runs import train_run

    run = train_run(cfg, run_dir)
    if int(os.environ.get("RANK", "0")) == 0:  # one report under torchrun
        _print_metrics(run.state.last_test)
        print(f"run directory: {run_dir}")
    return 0


def _existing_run(args: argparse.Namespace, weights: str = "raw"):
    """The trained run named by `args.run_dir`, on `args.device`, with its `weights`."""
    run_dir = _existing_dir(args.run_dir)
    from .runs import load_run

    return load_run(run_dir, device=_device(args.device), weights=weights)


def _device(name: str) -> str:
    """`--device` checked once, before any run is loaded, in a line that names the flag."""
    from .training.distributed import resolve_device

    try:
        resolve_device(name)
    except ConfigError as exc:
        raise ConfigError(f"--device: {str(exc).removeprefix('train.device: ')}") from None
    return name


def _existing_dir(path: str, what: str = "run directory") -> Path:
    """`path` when it is an existing directory; else one line saying what it is."""
    path = Path(path)
    if not path.exists():
        raise VaelabError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise VaelabError(f"{what} {str(path)!r} is a file, not a directory")
    return path


def cmd_eval(args: argparse.Namespace) -> int:
    run = _existing_run(args, args.weights)
    from .runs import report_path, require_finite, write_run_report

    run_dir = run.run_dir
    _print_metrics(write_run_report(run))
    print(
        f"wrote {report_path(run, 'eval.json')}, {report_path(run, 'report.md').name} and figures"
    )
    if args.loglik:
        from .evaluation.loglik import evaluate_log_likelihood
        from .files import write_json

        result = evaluate_log_likelihood(
            run.model, run.test_data, method=args.loglik, k=args.k, examples=args.examples
        )
        require_finite(result, f"{args.loglik} log-likelihood of {run_dir}")
        write_json(report_path(run, f"loglik_{args.loglik}.json"), result)
        print(
            f"{args.loglik} log-likelihood (k = {args.k}, {result['examples']} test examples): "
            f"{result['log_likelihood']:.4g} ± {result['std_error']:.2g} nats"
        )
    return 0


def cmd_rd(args: argparse.Namespace) -> int:
    """RD points of every run below RUN_DIR; a run that cannot be read or measured is
    skipped with a warning line, the others are reported. With `--against SWEEP_DIR`, beside
    each β of a β-conditional run the relative gap of its test loss to the sweep's runs
    trained at that β (`rate_distortion.add_gaps`)."""
    root = _existing_dir(args.run_dir)
    against = _existing_dir(args.against, "--against sweep directory") if args.against else None
    from .evaluation.rate_distortion import log_grid, shown_gap, write_rd
    from .runs import load_runs
    from .training import CHECKPOINT

    skipped = lambda run_dir, exc: warn(f"skipped {str(run_dir)!r}: {exc}")
    device = _device(args.device)
    runs = load_runs(root, device=device, on_error=skipped)
    if not runs:
        raise VaelabError(f"no readable trained run (no {CHECKPOINT}) in or below {str(root)!r}")
    separate = _sweep_runs(root, runs, against, device, skipped) if against else []
    betas = args.betas
    if not betas and separate:  # the sweep's own β
        betas = sorted({run.model.beta for run in separate})
    if not betas:  # the widest β range of the conditional runs, else the sweeps' own β
        ranges = [r.config.model.beta_range for r in runs if r.model.conditional]
        low, high = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (0.01, 10)
        betas = log_grid(low, high, 7)
    sweep_points = {id(run): _measured(run, against, [], skipped) for run in separate}
    points = []
    for run in runs:
        measured = _measured(run, root, betas, skipped)
        if against and run.model.conditional:
            _add_sweep_gaps(run, measured, separate, sweep_points)
        points += measured
    if not points:
        raise VaelabError(f"no run below {str(root)!r} could be measured")
    write_rd(root, points)
    for p in points:
        gap = f"  gap {shown_gap(p)}" if "separate_runs" in p else ""
        print(
            f"{p['regime']:30s} {p['run']:28s} β={p['beta']:<8g} R={p['rate']:.4g} "
            f"D={p['distortion']:.4g} MSE={p['mse']:.4g}{gap}"
        )
    print(f"wrote {root / 'rd.csv'}, rd.md, rd.png")
    return 0


def _sweep_runs(root: Path, runs: list, against: Path, device: str, skipped) -> list:
    """The separately trained (unconditional) runs below `against`, once `runs` (of `root`)
    hold a β-conditional one; else one line."""
    from .runs import load_runs

    if not any(run.model.conditional for run in runs):
        raise VaelabError(
            f"--against: no β-conditional run in or below {str(root)!r}; the gap to a sweep is "
            "a conditional run's (leave --against out for unconditional runs)"
        )
    loaded = load_runs(against, device=device, on_error=skipped)
    separate = [r for r in loaded if not r.model.conditional]
    if not separate:
        raise VaelabError(
            f"--against: no readable separately trained (unconditional) run in or below "
            f"{str(against)!r}"
        )
    return separate


def _measured(run, top: Path, betas, skipped) -> list[dict]:
    """The RD points of `run` (named by its path below `top`); [] with a warning line when it
    cannot be measured."""
    from .evaluation.rate_distortion import rd_points, regime_of

    name = str(run.run_dir.relative_to(top)) if run.run_dir != top else run.run_dir.name
    try:
        return rd_points(run.model, run.test_data, betas, regime_of(run.config.model), name)
    except VaelabError as exc:
        skipped(run.run_dir, exc)
        return []


def _add_sweep_gaps(run, points: list[dict], separate: list, sweep_points: dict) -> None:
    """`add_gaps` of a conditional run's points against the sweep runs on its test set,
    warning about runs on other test data and about a σ_x regime that differs."""
    from .evaluation.rate_distortion import add_gaps, same_test_set
    from .registry import SIGMA_MODES

    usable = [r for r in separate if same_test_set(r.test_data, run.test_data)]
    if len(usable) < len(separate):
        warn(
            f"--against: {len(separate) - len(usable)} sweep run(s) hold other test data than "
            f"{str(run.run_dir)!r}; left out of its gaps"
        )
    estimated = SIGMA_MODES.get(run.config.model.sigma_mode).estimated
    if any(SIGMA_MODES.get(r.config.model.sigma_mode).estimated != estimated for r in usable):
        warn(
            f"--against: sweep runs with σ_x {'fixed' if estimated else 'estimated'} are "
            f"compared with {str(run.run_dir)!r} (σ_x {'estimated' if estimated else 'fixed'}): "
            "their losses are not like for like"
        )
    add_gaps(points, [p for r in usable for p in sweep_points[id(r)]])


def cmd_consistency(args: argparse.Namespace) -> int:
    from .evaluation.consistency import consistency
    from .files import write_json

    run = _existing_run(args)
    run_dir = run.run_dir
    result = consistency(run.model, run.test_data.batch(slice(0, args.examples)))
    write_json(run_dir / "consistency.json", result)
    for key, value in result.items():
        print(f"{key:24s} {value:.6g}" if isinstance(value, float) else f"{key:24s} {value}")
    print(f"wrote {run_dir / 'consistency.json'}")
    return 0


# --- looking at a model: sample, traverse, interpolate -----------------------------------------


def _png_out(path: str | None) -> Path | None:
    """`--out FILE` checked before the run is loaded: a .png name in a writable folder."""
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {path!r}: the figure is a PNG; name a .png file")
    if out.is_dir():
        raise ConfigError(f"--out {path!r} is a directory; name a .png file")
    writable_dir(out.parent, "--out folder")
    return out


def _image_run(args: argparse.Namespace, betas: list[float]):
    """The run of `args` (its `--weights`) when its data are images, each β of `betas`
    allowed for its model: one line for an unconditional model, a warning for a β outside a
    conditional one's training range (it extrapolates there)."""
    run = _existing_run(args, args.weights)
    from .data.base import ImageSet
    from .evaluation.inspection import beta_outside_range

    if not isinstance(run.test_data, ImageSet):
        raise VaelabError(
            f"vaelab {args.command}: {run.config.data.name} holds no images, and the figures are "
            "image grids; for other data call vaelab.sample / traverse / interpolate in Python"
        )
    model = run.model
    if betas and not model.conditional:
        raise ConfigError(
            f"--beta{'s' if len(betas) > 1 else ''}: {str(run.run_dir)!r} is not β-conditional "
            f"(trained at β = {model.beta:g}, model.conditioning unset); leave it out"
        )
    for beta in beta_outside_range(model, betas):
        low, high = model.beta_prior.low, model.beta_prior.high
        warn(
            f"β = {beta:g} is outside the model's training range [{low:g}, {high:g}]: "
            "it extrapolates there"
        )
    return run


def _test_example(run, index: int, flag: str):
    """Test example `index` of `run` as a batch of one; one line naming `flag` when it does
    not exist."""
    n = len(run.test_data)
    if index >= n:
        raise ConfigError(
            f"{flag}: test example {index} does not exist (the test set has {n}: 0..{n - 1})"
        )
    return run.test_data.batch(slice(index, index + 1))


def cmd_sample(args: argparse.Namespace) -> int:
    out = _png_out(args.out)
    if args.second_stage is not None and args.sampler != "two-stage":
        raise ConfigError("--second-stage is the model of --sampler two-stage; add that or drop it")
    second = args.second_stage and _existing_dir(args.second_stage, "second-stage directory")
    run = _image_run(args, [args.beta] if args.beta else [])
    from .evaluation.figures import save_image_grid
    from .evaluation.inspection import find_second_stage, sample

    if args.sampler == "two-stage" and not second:
        second = find_second_stage(run.run_dir)
        if second is None:
            raise VaelabError(
                f"--sampler two-stage: no second stage of {str(run.run_dir)!r} found (a study "
                "keeps them in <study>/second-stage/<run>); name one with --second-stage DIR"
            )
    result = sample(run.model, args.n, args.beta, args.temperature, args.sampler, second, args.seed)
    path = out or run.run_dir / f"sample_{args.sampler}.png"
    codes = "z = T·ε, ε ~ p(z)" if args.sampler == "prior" else "z from the second stage"
    at = f", β = {args.beta:g}" if args.beta else ""
    title = f"decoder means, {codes}, T = {args.temperature:g}{at}, seed {args.seed}"
    save_image_grid(path, result.means, ncol=min(args.n, 8), title=title)
    print(f"wrote {path}" + (f" (second stage {second})" if second else ""))
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    out = writable_dir(args.out, "--out folder") if args.out else None
    run = _image_run(args, args.betas or ([args.beta] if args.beta else []))
    from .evaluation.figures import save_traversal_gif, save_traversal_grid
    from .evaluation.inspection import traverse, traverse_betas

    x = None if args.origin else _test_example(run, args.example, "--example")
    data, spread = run.test_data, (args.steps, args.span)
    if args.betas:
        t = traverse_betas(
            run.model, x, args.betas, args.dims, *spread, data=data, max_dims=args.max_dims
        )
        means, name = t.means.flatten(0, 1), "traverse_betas"
        labels = [f"β={b:g} z{j}" for b in t.betas for j in t.dims]
        kl = [sum(k[d] for k in t.kl) / len(t.kl) for d in range(len(t.dims))]
        ncol = len(t.dims)  # a GIF row per β
    else:
        t = traverse(run.model, x, args.dims, *spread, args.beta, data=data, max_dims=args.max_dims)
        means, name, labels, kl = t.means, "traverse", [f"z{j}" for j in t.dims], t.kl
        ncol = None
    folder = out or run.run_dir
    around = "z = 0" if x is None else f"the posterior mean of test example {args.example}"
    save_traversal_grid(
        folder / f"{name}.png",
        means,
        labels,
        title=f"each z_j over ±{args.span:g} prior s.d. around {around}",
        xlabel=f"{args.steps} steps of z_j",
    )
    save_traversal_gif(folder / f"{name}.gif", means, ncol=ncol)
    by_kl = ", ".join(f"z{j} {k:.3g}" for j, k in zip(t.dims, kl))
    print(f"dimensions (mean KL, nats{', over the βs' if args.betas else ''}): {by_kl}")
    print(f"wrote {folder / name}.png and {name}.gif")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    out = _png_out(args.out)
    run = _image_run(args, [args.beta] if args.beta else [])
    import torch

    from .evaluation.figures import save_traversal_grid
    from .evaluation.inspection import interpolate

    i, j = args.pair
    x_a, x_b = _test_example(run, i, "--pair"), _test_example(run, j, "--pair")
    result = interpolate(run.model, x_a, x_b, args.steps, args.mode, args.beta)
    if result.mode != args.mode:
        warn(
            f"the posterior means of {i} and {j} are (anti)parallel or zero: interpolated linearly"
        )
    path = out or run.run_dir / "interpolate.png"
    images = torch.cat([x_a.to(result.means.device), result.means, x_b.to(result.means.device)])
    title = f"test examples {i} and {j} (ends); {result.mode} between their posterior means"
    xlabel = f"{args.steps} codes, ends included"
    save_traversal_grid(path, images[None], [f"{i} → {j}"], title=title, xlabel=xlabel)
    print(f"wrote {path}")
    return 0


def _int_at_least(low: int):
    """An argparse type: an integer ≥ `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {text}")
        return value

    return parse


def _positive_number(what: str):
    """An argparse type: a positive finite number."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a positive finite number, got {text}")
        return value

    return parse


def _list_of(parse, what: str, length: int | None = None):
    """An argparse type: comma-separated values, each by `parse` (`length` of them)."""

    def parse_list(text: str) -> list:
        values = [parse(part.strip()) for part in text.split(",")]
        if length is not None and len(values) != length:
            raise argparse.ArgumentTypeError(f"expected {length} {what}, got {text!r}")
        return values

    return parse_list


def _add_inspection_args(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--weights",
        choices=["raw", "ema"],
        default="raw",
        help="the weights as trained, or their moving average (runs with train.ema_decay)",
    )
    p.add_argument("--out", help=f"{out} (default: in the run directory)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"β must be a positive finite number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number ≥ 0, got {text}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    name = args.experiment
    if name not in RECIPES:
        raise ConfigError(
            f"unknown experiment {name!r}{closest(name, RECIPES)}; known: {', '.join(RECIPES)}"
        )

    from .config import check_fields, config_mapping, from_dict
    from .experiments.settings import RECIPE_SETTINGS

    mapping = config_mapping(args.config, args.overrides)  # file and --set, before the recipes
    settings = RECIPE_SETTINGS.get(name)
    if settings is not None:  # keys, types, ranges and names, before torch and the recipe
        check_fields(settings, mapping)
    run_dir = writable_dir(args.run_dir or Path("runs") / name)
    exp = EXPERIMENTS.get(name)
    check_fields(exp.config_cls, mapping)
    cfg = from_dict(exp.config_cls, mapping)
    exp.run(cfg, run_dir)
    print(f"report: {run_dir / 'report.md'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    base = _config(args.config, args.overrides)
    run_dir = writable_dir(args.run_dir or Path("runs") / f"{Path(args.config).stem}-sweep")
    from .sweeps import TRAIN, SweepOptions, grid_cells, parse_grid, parse_seeds, run_sweep

    grid = dict(parse_grid(text) for text in args.grid)
    if len(grid) < len(args.grid):
        raise VaelabError("--grid: a key is given twice; give each key once with all its values")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    options = SweepOptions(
        address=args.address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        max_concurrent=args.max_concurrent,
        in_process=args.in_process,
    )
    cells = grid_cells(TRAIN, base, grid, seeds)
    records = run_sweep(cells, run_dir, TRAIN, options)
    failed = sum(r["status"] != "done" for r in records)
    print(f"{len(records) - failed} of {len(records)} cells done; table: {run_dir / 'sweep.md'}")
    return 1 if failed else 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    run_dir = _existing_dir(args.run_dir, "sweep directory")
    from .files import read_json
    from .sweeps import write_sweep_report
    from .sweeps.table import SPEC

    if not (run_dir / SPEC).is_file():
        raise VaelabError(f"{str(run_dir)!r} holds no sweep ({SPEC}); run `vaelab sweep` first")
    try:
        spec = read_json(run_dir / SPEC)
    except (OSError, ValueError):
        spec = None
    if not isinstance(spec, dict) or not all(
        isinstance(spec.get(k), list) for k in ("cells", "dirs", "points", "seeds")
    ):
        raise VaelabError(
            f"{str(run_dir / SPEC)!r} is not a sweep spec written by `vaelab sweep` (corrupt?); "
            "run the sweep again to rewrite it"
        )
    write_sweep_report(run_dir)
    print(f"table: {run_dir / 'sweep.md'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    args.experiment, args.config = "demo", None
    return cmd_run(args)


def _print_metrics(metrics: dict[str, float]) -> None:
    print("test set: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description="Variational autoencoders done carefully.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "train", help="train a VAE from a TOML/YAML config (resumes a run directory)"
    )
    p.add_argument("config", help="config file (.toml, .yaml, .json)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    _add_overrides(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run: test rate, distortion, −ELBO, figures")
    p.add_argument("run_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--loglik", choices=["iwae", "ais"], help="also estimate log p(x)")
    p.add_argument(
        "--k", type=_positive_int, default=1000, help="IWAE samples / AIS steps (default 1000)"
    )
    p.add_argument(
        "--examples", type=_positive_int, help="test examples for --loglik (default all)"
    )
    p.add_argument(
        "--weights",
        choices=["raw", "ema"],
        default="raw",
        help="the weights as trained (default) or their moving average (train.ema_decay); "
        "ema writes eval_ema.json, report_ema.md, …",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="decoder means of codes from the prior or a second stage")
    _add_inspection_args(p, "PNG file (default: sample_<sampler>.png)")
    p.add_argument("--n", type=_positive_int, default=64, help="samples (default 64)")
    p.add_argument("--beta", type=_positive_float, help="β of a β-conditional model")
    p.add_argument(
        "--temperature",
        type=_positive_number("--temperature"),
        default=1.0,
        help="z = T·ε, ε ~ N(0, I) (default 1)",
    )
    p.add_argument("--sampler", choices=["prior", "two-stage"], default="prior")
    p.add_argument(
        "--second-stage",
        metavar="RUN2",
        help="the second stage's fit directory (default: <study>/second-stage/<run>)",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "traverse", help="latent traversals (PNG grid and GIF), active dimensions by KL"
    )
    _add_inspection_args(p, "folder for traverse.png and traverse.gif")
    p.add_argument(
        "--dims",
        type=_list_of(_int_at_least(0), "dimensions"),
        help="dimensions, e.g. 0,3,1 (default: the active ones by mean KL, largest first)",
    )
    p.add_argument("--max-dims", type=_positive_int, help="at most this many (default all)")
    p.add_argument("--steps", type=_int_at_least(2), default=9, help="values per dimension")
    p.add_argument(
        "--span", type=_positive_number("--span"), default=3.0, help="± prior s.d. (default 3)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--example", type=_int_at_least(0), default=0, help="around this test example (default 0)"
    )
    where.add_argument("--origin", action="store_true", help="around z = 0 instead")
    betas = p.add_mutually_exclusive_group()
    betas.add_argument("--beta", type=_positive_float, help="β of a β-conditional model")
    betas.add_argument(
        "--betas",
        type=_list_of(_positive_float, "βs"),
        help="a traversal per β, e.g. 0.1,1,10 (traverse_betas.png/.gif)",
    )
    p.set_defaults(func=cmd_traverse)

    p = sub.add_parser("interpolate", help="decodes between two test examples' posterior means")
    _add_inspection_args(p, "PNG file (default: interpolate.png)")
    p.add_argument(
        "--pair",
        type=_list_of(_int_at_least(0), "test example indices", 2),
        default=[0, 1],
        metavar="I,J",
        help="test examples (default 0,1)",
    )
    p.add_argument("--steps", type=_int_at_least(2), default=9, help="codes, ends included")
    p.add_argument("--mode", choices=["linear", "spherical"], default="linear")
    p.add_argument("--beta", type=_positive_float, help="β of a β-conditional model")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("rd", help="rate–distortion of every run below RUN_DIR over a β grid")
    p.add_argument("run_dir")
    p.add_argument(
        "--betas",
        nargs="+",
        type=_positive_float,
        help="β grid (default: the --against sweep's β, else 7 log-spaced)",
    )
    p.add_argument(
        "--against",
        metavar="SWEEP_DIR",
        help="beside each β of a β-conditional run, the gap of its test loss to the runs "
        "below SWEEP_DIR trained at that β (mean and 95 %% interval over their seeds)",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_rd)

    p = sub.add_parser(
        "consistency", help="distance of a trained VAE to the consistent (harmonium) set"
    )
    p.add_argument("run_dir")
    p.add_argument("--examples", type=_positive_int, default=2000, help="test examples to use")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("run", help="run a named experiment (recipe)")
    p.add_argument("experiment", help=f"one of: {', '.join(RECIPES)}")
    p.add_argument("config", nargs="?", help="optional config file for the experiment's settings")
    p.add_argument("--run-dir", help="run directory (default: runs/<experiment>)")
    _add_overrides(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "sweep", help="train a grid of configs × seeds (on Ray when installed), with a table"
    )
    p.add_argument("config", help="the base config file (.toml, .yaml, .json)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="an axis of the grid, e.g. --grid model.beta=0.1,1,10 (repeatable)",
    )
    p.add_argument("--seeds", help="seeds of every grid point, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--run-dir", help="sweep directory (default: runs/<config name>-sweep)")
    p.add_argument("--address", help="a Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument(
        "--cpus-per-run",
        type=_positive_int,
        help="CPUs (torch threads) of a cell (default: this machine's cores over the cells)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=_non_negative_float,
        help="GPUs of a cell (0.25: four per GPU; default: 1 with CUDA here, else 0)",
    )
    p.add_argument("--max-concurrent", type=_positive_int, help="cells at once (default: all fit)")
    p.add_argument(
        "--in-process", action="store_true", help="one cell after another here, without Ray"
    )
    _add_overrides(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sweep-report", help="(re)write the table of a sweep directory")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_sweep_report)

    p = sub.add_parser("demo", help="the main job on embedded data: β sweeps on 8×8 digits")
    p.add_argument("--run-dir", help="run directory (default: runs/demo)")
    _add_overrides(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VaelabError as exc:
        print(f"vaelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaelab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
