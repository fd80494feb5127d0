"""Fitting harmoniums with the one trainer: the objectives of
`vaelab.models.harmonium_objectives` trained by `vaelab.training.fit`.

Each fit runs in a run directory of its own (a temporary one when none is given), so it has
progress, seeding, the NaN guard, exact resume (PCD's chains included) and a metrics log; the
optimiser, learning rate and its schedule, minibatch size, epochs and seed are the
`TrainConfig`'s (Tieleman's PCD: `optimizer="sgd"`, `momentum`, `lr_schedule="linear"`). Both
fits return the logged training records of metrics.jsonl, one per `cfg.log_every` steps: the
mean `loss` and `log_likelihood` (nats per example, when tracked) of the minibatches since
the previous record, and the `step`.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..data.base import TensorData
from ..files import read_jsonl
from ..models.harmonium import Harmonium
from ..models.harmonium_objectives import ContrastiveDivergence, ExactLikelihood
from ..training import METRICS, fit


def fit_exact(
    rbm: Harmonium, data: Tensor, cfg: TrainConfig, run_dir: str | Path | None = None
) -> list[dict]:
    """Maximum likelihood: the exact −log p(x) (needs ≤ 16 units in a layer)."""
    rbm.check_data(data)
    return _fit(rbm, ExactLikelihood(rbm), data, cfg, run_dir, {"objective": "exact"})


def fit_contrastive(
    rbm: Harmonium,
    data: Tensor,
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    k: int = 1,
    persistent: bool = False,
    chains: int | None = None,
    track_likelihood: bool | None = None,
) -> list[dict]:
    """CD-k, or with `persistent` PCD-k with `chains` persistent chains (default: the batch
    size) started at training examples drawn with `cfg.seed`. `track_likelihood` (default:
    whenever log Z is enumerable) logs the exact log-likelihood of every minibatch."""
    rbm.check_data(data)
    start = None
    if persistent:
        n = chains or min(cfg.batch_size, len(data))
        generator = torch.Generator().manual_seed(cfg.seed)
        start = data[torch.randint(len(data), (n,), generator=generator)].to(rbm.W)
    track = rbm.enumerable if track_likelihood is None else track_likelihood
    objective = ContrastiveDivergence(rbm, k, start, track)
    description = {
        "objective": "pcd" if persistent else "cd",
        "k": k,
        "chains": chains,
        "track_likelihood": track,
    }
    return _fit(rbm, objective, data, cfg, run_dir, description)


def _fit(
    rbm: Harmonium, objective: nn.Module, data: Tensor, cfg: TrainConfig, run_dir, description
):
    rows = TensorData(data.to(rbm.W))
    shape = {"model": type(rbm).__name__, "visible": rbm.visible, "hidden": rbm.hidden}
    if run_dir is None:
        directory = tempfile.TemporaryDirectory(prefix="vaelab-harmonium-")
    else:
        directory = nullcontext(run_dir)
    with directory as run_dir:
        fit(objective, rows, cfg, run_dir, description=description | shape)
        return [r for r in read_jsonl(Path(run_dir) / METRICS) if r["split"] == "train"]
