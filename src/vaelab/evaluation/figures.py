"""Figures a researcher would rather see than read: image grids and rate–distortion curves."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..files import atomic_write_bytes  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def tile(images: torch.Tensor, ncol: int) -> np.ndarray:
    """[N, C, H, W] in [0, 1] → one [rows·H, ncol·W(, C)] array with 1-pixel gaps."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    rows = math.ceil(n / ncol)
    canvas = torch.ones(c, rows * (h + 1) + 1, ncol * (w + 1) + 1)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = (
            img
        )
    array = canvas.permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def save_image_grid(path: str | Path, images: torch.Tensor, ncol: int = 8, title: str = "") -> None:
    grid = tile(images, ncol)
    height, width = grid.shape[:2]
    fig, ax = plt.subplots(figsize=(max(2.0, width / 40), max(2.0, height / 40)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def save_reconstructions(
    path: str | Path, originals: torch.Tensor, recons: torch.Tensor, title: str = ""
) -> None:
    """Rows of originals above their reconstructions."""
    n = len(originals)
    ncol = min(n, 8)
    rows = []
    for start in range(0, n, ncol):
        rows += [originals[start : start + ncol], recons[start : start + ncol]]
    save_image_grid(
        path, torch.cat(rows), ncol=ncol, title=title or "originals (odd rows) / reconstructions"
    )


def plot_rate_distortion(
    path: str | Path,
    curves: dict[str, Sequence[dict[str, float]]],
    title: str = "",
) -> None:
    """Rate vs distortion (nats) and rate vs MSE, one line per label, points annotated by β.

    Each curve is a sequence of records with keys 'beta', 'rate', 'distortion', 'mse'.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, points in curves.items():
        points = sorted(points, key=lambda p: p["beta"])
        rate = [p["rate"] for p in points]
        for ax, key in zip(axes, ("distortion", "mse")):
            ax.plot(rate, [p[key] for p in points], marker="o", label=label)
            step = max(1, len(points) // 4)  # label about four points per curve
            for p in points[::step] + ([points[-1]] if (len(points) - 1) % step else []):
                ax.annotate(
                    f"β={p['beta']:g}",
                    (p["rate"], p[key]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    axes[0].set(xlabel="rate R (nats)", ylabel="distortion D (nats)", title="rate–distortion")
    axes[1].set(
        xlabel="rate R (nats)", ylabel="MSE per dimension", title="rate vs MSE", yscale="log"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_training_curves(
    path: str | Path, records: Sequence[dict], terms: Sequence[str] = ("loss", "distortion", "rate")
) -> bool:
    """Each term of `terms` against the training step: the train records (means over their
    logging window) and the test evaluations, one panel per term; False without records."""
    terms = [t for t in terms if any(t in r for r in records)]
    if not terms:
        return False
    fig, axes = plt.subplots(1, len(terms), figsize=(3.6 * len(terms), 3.0), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for split, style in (("train", "-"), ("test", "o-")):
            points = [
                (r["step"], r[term]) for r in records if r.get("split") == split and term in r
            ]
            if points:
                ax.plot(*zip(*points), style, markersize=3, label=split)
        ax.set(xlabel="step", title=f"{term} (nats per example)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


def plot_per_epoch(
    path: str | Path,
    series: dict[str, Sequence[tuple[int, float]]],
    ylabel: str,
    marks: Sequence[int] = (),
) -> None:
    """A learning curve: each named series of (epoch, value) against the epoch, dashed
    vertical lines after the epochs in `marks` (e.g. where a schedule's phase ends)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points), "-", linewidth=1.2, label=label)
    for epoch in marks:
        ax.axvline(epoch + 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


# --- looking at a model (evaluation/inspection.py) --------------------------------------------


def save_traversal_grid(
    path: str | Path,
    means: torch.Tensor,
    row_labels: Sequence[str],
    title: str = "",
    xlabel: str = "",
) -> None:
    """Rows of images [R, steps, C, H, W] (a traversal per row), each row labelled on the left
    with `row_labels[r]`."""
    rows, steps, _, h, _ = means.shape
    grid = tile(means.flatten(0, 1), steps)
    height, width = grid.shape[:2]
    fig, ax = plt.subplots(figsize=(max(3.0, width / 25), max(1.5, height / 25)))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([1 + r * (h + 1) + (h - 1) / 2 for r in range(rows)], list(row_labels))
    ax.tick_params(axis="y", length=0, labelsize=7)
    for side in ax.spines.values():
        side.set_visible(False)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    save_figure(fig, path)


def traversal_frames(means: torch.Tensor, ncol: int | None = None, min_cell: int = 48) -> list:
    """The frames of an animated traversal of images [R, steps, C, H, W]: frame s tiles the R
    images at step s (`ncol` per row, default min(R, 8)), steps forth then back (a loop with
    no jump), each image scaled up by an integer factor to at least `min_cell` pixels (nearest
    neighbour). PIL images."""
    from PIL import Image

    rows, steps, _, h, w = means.shape
    ncol = ncol or min(rows, 8)
    scale = max(1, math.ceil(min_cell / min(h, w)))
    order = [*range(steps), *range(steps - 2, 0, -1)]
    frames = []
    for s in order:
        array = np.rint(tile(means[:, s], ncol) * 255).astype(np.uint8)
        image = Image.fromarray(array)
        frames.append(image.resize((image.width * scale, image.height * scale), Image.NEAREST))
    return frames


def save_traversal_gif(
    path: str | Path, means: torch.Tensor, ncol: int | None = None, frame_ms: int = 120
) -> None:
    """`traversal_frames` of `means` as a looping animated GIF, written atomically."""
    frames = traversal_frames(means, ncol)
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0
    )
    atomic_write_bytes(path, buf.getvalue())
