"""The sweep table: every cell's test metrics, and per grid point over seeds the mean, the
standard error and the 95 % Student-t interval of each; CSV, Markdown and JSON, and the
rate–distortion figure with interval bars when β is an axis.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..evaluation.verdicts import LEVEL, interval  # noqa: E402
from ..files import atomic_write_text, read_json, write_json  # noqa: E402
from ..report import fmt, markdown_table  # noqa: E402

SPEC = "sweep.json"  # what the sweep is: target, axes, seeds, cells (rewritten by every run)


def show(stat: dict[str, Any]) -> str:
    """'72.6 ± 1.3' (mean ± half-width of the interval), or the mean alone for one seed."""
    if stat["mean"] is None:
        return "—"
    if stat["se"] is None:
        return fmt(stat["mean"])
    return f"{fmt(stat['mean'])} ± {fmt((stat['high'] - stat['low']) / 2, 2)}"


def _key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def summarise(records: list[dict]) -> tuple[list[str], list[str], list[dict]]:
    """(axes, metrics, rows): per grid point (in first-seen order) the seeds it has, how
    many failed, and the `interval` of every metric over its finished seeds."""
    axes = list(dict.fromkeys(k for r in records for k in r["point"]))
    metrics = list(dict.fromkeys(k for r in records for k in (r.get("metrics") or {})))
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(_key(r["point"]), []).append(r)
    rows = []
    for members in groups.values():
        done = [r for r in members if r["status"] == "done"]
        rows.append({
            "point": members[0]["point"],
            "seeds": [r["seed"] for r in done],
            "failed": sum(r["status"] == "failed" for r in members),
            "stats": {m: interval([r["metrics"].get(m) for r in done]) for m in metrics},
        })  # fmt: skip
    return axes, metrics, rows


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return out.getvalue()


def _or_dash(value: Any) -> Any:
    return "—" if value is None else value


def beta_axis(axes: list[str]) -> str | None:
    """The axis that is β (a key whose last part is 'beta'), if any."""
    return next((a for a in axes if a.split(".")[-1] == "beta"), None)


def rd_figure(path: Path, axes: list[str], rows: list[dict], beta: str) -> bool:
    """Distortion against rate per value of the other axes, over β, with 95 % interval bars
    on both (grid points without a β left out); False (nothing drawn) without rate and
    distortion."""
    if not all("rate" in r["stats"] and "distortion" in r["stats"] for r in rows):
        return False
    others = [a for a in axes if a != beta]
    lines: dict[str, list[dict]] = {}
    for r in (r for r in rows if beta in r["point"]):
        label = ", ".join(f"{a}={r['point'].get(a)}" for a in others) or "sweep"
        lines.setdefault(label, []).append(r)
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    for label, members in lines.items():
        members = [m for m in members if m["stats"]["rate"]["mean"] is not None]
        members.sort(key=lambda m: float(m["point"].get(beta, 0)))
        rate = [m["stats"]["rate"] for m in members]
        dist = [m["stats"]["distortion"] for m in members]

        def half(s):
            return 0.0 if s["se"] is None else (s["high"] - s["low"]) / 2

        ax.errorbar(
            [s["mean"] for s in rate], [s["mean"] for s in dist],
            xerr=[half(s) for s in rate], yerr=[half(s) for s in dist],
            marker="o", capsize=3, label=label,
        )  # fmt: skip
        for m, r, d in zip(members, rate, dist):
            ax.annotate(f"β={m['point'][beta]:g}", (r["mean"], d["mean"]), fontsize=6)
    ax.set(xlabel="rate (nats)", ylabel="distortion (nats)", title="test set, mean ± 95 % CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True


def write_sweep_report(run_dir: str | Path, records: list[dict] | None = None) -> dict:
    """sweep_cells.csv, sweep_summary.csv, sweep.md, sweep_table.json (and sweep_rd.png when
    β is an axis) for the cells of `run_dir`'s sweep.json (or the given `records`)."""
    run_dir = Path(run_dir)
    if records is None:
        from .execute import read_record

        spec = read_json(run_dir / SPEC)
        records = [
            (read_record(Path(d)) or {"name": n, "status": "missing", "point": p, "seed": s})
            for n, d, p, s in zip(spec["cells"], spec["dirs"], spec["points"], spec["seeds"])
        ]
    axes, metrics, rows = summarise(records)
    cell_header = ["cell", *axes, "seed", "status", *metrics, "error"]
    cell_rows = [
        [r["name"], *(r["point"].get(a) for a in axes), r["seed"], r["status"]]
        + [(r.get("metrics") or {}).get(m) for m in metrics]
        + [r.get("error", "")]
        for r in records
    ]
    stat_names = ("mean", "se", "low", "high")
    summary_header = [*axes, "seeds", "failed"] + [f"{m}_{s}" for m in metrics for s in stat_names]
    summary_rows = [
        [*(r["point"].get(a) for a in axes), len(r["seeds"]), r["failed"]]
        + [r["stats"][m][s] for m in metrics for s in stat_names]
        for r in rows
    ]
    atomic_write_text(run_dir / "sweep_cells.csv", _csv(cell_header, cell_rows))
    atomic_write_text(run_dir / "sweep_summary.csv", _csv(summary_header, summary_rows))
    beta = beta_axis(axes)
    has_figure = beta is not None and rd_figure(run_dir / "sweep_rd.png", axes, rows, beta)
    table = {
        "level": LEVEL,
        "interval": "Student t over seeds: mean ± t_{0.975, n-1} · s/√n",
        "axes": axes,
        "metrics": metrics,
        "cells": records,
        "summary": rows,
    }
    write_json(run_dir / "sweep_table.json", table)
    failed = [r for r in records if r["status"] != "done"]
    lines = [
        f"# Sweep `{run_dir.name}`\n",
        f"{len(records)} cells ({len(rows)} grid points × seeds), {len(failed)} not done. "
        "Test metrics per example; per grid point the mean over seeds ± the half-width of the "
        "95 % Student-t interval (one seed: the value alone).\n",
        "## Per grid point\n",
        markdown_table(
            [*axes, "seeds", *metrics],
            [
                [*(r["point"].get(a) for a in axes), len(r["seeds"])]
                + [show(r["stats"][m]) for m in metrics]
                for r in rows
            ],
        ),
        *(["\n![rate–distortion](sweep_rd.png)\n"] if has_figure else []),
        "\n## Every cell\n",
        markdown_table(
            ["cell", "status", *metrics, "error"],
            [
                [r["name"], r["status"]]
                + [_or_dash((r.get("metrics") or {}).get(m)) for m in metrics]
                + [r.get("error", "")]
                for r in records
            ],
        ),
        "\nFiles: [sweep_cells.csv](sweep_cells.csv), [sweep_summary.csv](sweep_summary.csv), "
        "[sweep_table.json](sweep_table.json).\n",
    ]
    atomic_write_text(run_dir / "sweep.md", "\n".join(lines))
    return table
