"""Experiment tracking: what the trainer tells a tracker, and the trackers by name
(`train.loggers`): `tensorboard`, `wandb` (offline unless WANDB_MODE says otherwise) and
`mlflow` (a local file store unless MLFLOW_TRACKING_URI says otherwise).

`metrics.jsonl` stays the record of a run; a callback only mirrors it. The trainer calls, on
its main process only:

- `on_start(run_dir, run_config, model, step)` once per session, after resuming: `step` is
  the step the session starts at (0 for a fresh run). The records of steps ≤ `step` are the
  ones `metrics.jsonl` keeps, and a tracker drops (or does not repeat) what an earlier session
  logged after it, so that a resumed run's tracker holds what an uninterrupted one's does;
- `on_train_record(step, record)` for every train record (its terms, without the record's
  own keys split/step/epoch/seconds);
- `on_evaluation(step, record, model)` for every test record, the model in eval mode on the
  trainer's device: besides the terms, image loggers log the reconstructions of the fixed
  `examples` and samples from a fixed seed (`evaluation_images`);
- `on_end(step, final)` with the final test metrics; `close()` always, last (also after an
  error: a tracker then marks its run unfinished).

A logger is registered in `LOGGERS` and constructed as `cls(examples=...)`, where `examples`
is a fixed batch of ≤ 16 inputs ([B, C, H, W] or [B, H, W] images) or None for non-image
data (`image_examples(train_data)` picks them). Construction imports the tracker's package,
so a missing one is one line (`ConfigError`) before training starts; nothing is opened
before `on_start`.

Images are computed from the model inside `torch.random.fork_rng`, so logging never changes
what the trainer draws: a run with loggers trains bit for bit like one without.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..files import dumps, read_json, write_json
from ..registry import LOGGERS

SAMPLE_SEED = 0  # the fixed seed of the sample grid (the same codes at every evaluation)
GRID_COLUMNS = 8
MLFLOW_PARAM_CHARS = 500  # MLflow's limit on a parameter value (older servers; newer: 6000)
MLFLOW_BATCH = 100  # parameters per log_batch call (MLflow's limit)


class Callback:
    """Base class: what the trainer tells an experiment tracker. metrics.jsonl stays the
    record; a callback only mirrors it. Every method has a no-op default."""

    def on_start(self, run_dir: Path, run_config: dict, model: nn.Module, step: int) -> None:
        """A session starts (or resumes) at `step`; a tracker drops what it logged after it."""

    def on_train_record(self, step: int, record: dict[str, float]) -> None:
        """Each train record."""

    def on_evaluation(self, step: int, record: dict[str, float], model: nn.Module) -> None:
        """Each test record; `model` in eval mode on the trainer's device."""

    def on_end(self, step: int, final: dict[str, float]) -> None:
        """The final test metrics."""

    def close(self) -> None:
        """Release the tracker (always called, last)."""


class Callbacks(list):
    """The loggers of a run as one callback: each call goes to every logger in order;
    `close` reaches every logger even when one raises (the first error is re-raised)."""

    def on_start(self, run_dir: Path, run_config: dict, model: nn.Module, step: int) -> None:
        for c in self:
            c.on_start(Path(run_dir), run_config, model, step)

    def on_train_record(self, step: int, record: dict[str, float]) -> None:
        for c in self:
            c.on_train_record(step, record)

    def on_evaluation(self, step: int, record: dict[str, float], model: nn.Module) -> None:
        for c in self:
            c.on_evaluation(step, record, model)

    def on_end(self, step: int, final: dict[str, float]) -> None:
        for c in self:
            c.on_end(step, final)

    def close(self) -> None:
        error = None
        for c in self:
            try:
                c.close()
            except Exception as e:  # noqa: BLE001 - the others still close
                error = error or e
        if error is not None:
            raise error


def build_callbacks(names: list[str], examples: Tensor | None = None) -> Callbacks:
    """The loggers named in `train.loggers`, constructed with the fixed `examples`. An
    unknown or repeated name, or a logger whose package is not installed, is a one-line
    `ConfigError` (raised here, before training starts)."""
    for i, name in enumerate(names):
        if name not in LOGGERS:
            raise ConfigError(f"train.loggers: {LOGGERS.unknown(name)}")
        if name in names[:i]:
            raise ConfigError(f"train.loggers: {name!r} is named twice")
    return Callbacks(LOGGERS.get(name)(examples=examples) for name in names)


def image_examples(data, n: int = 16) -> Tensor | None:
    """The loggers' fixed examples: the first `n` examples of trainer data (`data.batch`)
    when they are images ([B, C, H, W] or [B, H, W]), else None (codes, word counts,
    tuples)."""
    batch = data.batch(slice(0, min(n, len(data))))
    return batch if isinstance(batch, Tensor) and batch.dim() in (3, 4) else None


def require(module: str, logger: str, package: str | None = None) -> ModuleType:
    """Import `module` for `logger`; when it (not one of its own imports) is missing, the
    one line telling which extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but broken: a traceback, not a config error
        raise ConfigError(
            f"train.loggers: {logger!r} needs the {package or module} package: "
            f"pip install 'vaelab[{logger}]'"
        ) from None


# --- what the loggers log --------------------------------------------------------------


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric terms of a record (booleans and text left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """{"model": {"hidden": [16]}} → {"model.hidden": "[16]"}: sections joined by '.', numbers,
    booleans and strings kept, anything else (lists, None) as its JSON text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten_config(value, f"{name}.")
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = dumps(value)
    return flat


def image_grid(images: Tensor, ncol: int = GRID_COLUMNS) -> Tensor:
    """[N, C, H, W] (or [N, H, W]) images → one [C, rows·(H+1)+1, ncol·(W+1)+1] image in
    [0, 1], row by row with 1-pixel white gaps."""
    images = images.detach().float().clamp(0, 1).cpu()
    if images.dim() == 3:
        images = images[:, None]
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    rows = math.ceil(n / ncol)
    canvas = torch.ones(c, rows * (h + 1) + 1, ncol * (w + 1) + 1)
    for i, image in enumerate(images):
        r, k = divmod(i, ncol)
        top, left = 1 + r * (h + 1), 1 + k * (w + 1)
        canvas[:, top : top + h, left : left + w] = image
    return canvas


def to_uint8(grid: Tensor):
    """A [C, H, W] grid in [0, 1] as the uint8 [H, W] (grey) or [H, W, C] numpy array image
    libraries take."""
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


@contextmanager
def fixed_noise(device: torch.device, seed: int = SAMPLE_SEED) -> Iterator[None]:
    """Draws inside come from `seed` on `device` (and the CPU); the generators' states are
    restored afterwards, so the trainer's draws do not change."""
    cuda = []
    if device.type == "cuda":
        cuda = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def evaluation_images(model: nn.Module, examples: Tensor | None) -> dict[str, Tensor]:
    """The grids logged at an evaluation, as [C, H, W] images in [0, 1]: 'reconstructions'
    (rows of the examples above rows of model.reconstruct(examples)) and 'samples'
    (model.generate(len(examples)) from `SAMPLE_SEED`), each when the model has the method
    (the trainer trains models without them too); none without examples (non-image data)."""
    if examples is None:
        return {}
    # optional methods of what the trainer trains, not a capability of a registered object
    reconstruct = getattr(model, "reconstruct", None)
    generate = getattr(model, "generate", None)
    device = next(model.parameters(), examples).device
    x = examples.to(device)
    grids = {}
    with torch.no_grad(), fixed_noise(device):
        if reconstruct is not None:
            recons = reconstruct(x).reshape(x.shape)
            rows = []
            for start in range(0, len(x), GRID_COLUMNS):
                rows += [x[start : start + GRID_COLUMNS], recons[start : start + GRID_COLUMNS]]
            grids["reconstructions"] = image_grid(torch.cat(rows), min(len(x), GRID_COLUMNS))
        if generate is not None:
            grids["samples"] = image_grid(generate(len(x)).reshape(x.shape))
    return grids


# --- TensorBoard -----------------------------------------------------------------------


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Callback):
    """Event files in RUN/tensorboard: each train term as scalar `train/<term>`, each test
    term as `test/<term>`, at each evaluation the images 'reconstructions' and 'samples', and
    at the end the flattened config as hyper-parameters with the final test metrics
    (`final/<term>`) in the sub-run RUN/tensorboard/hparams.

    A session starting at step s opens its writer with purge_step = s + 1: TensorBoard's
    readers drop the events of earlier sessions at steps > s (the records metrics.jsonl
    dropped), and keep those ≤ s. The hparams sub-run is written at the end only and removed
    at every start. Events are flushed after every record, so a killed session's events up to
    its last checkpoint are on disk."""

    def __init__(self, examples: Tensor | None = None):
        require("tensorboard", "tensorboard")
        self._writer_class = require("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.examples = examples
        self.writer = None

    def on_start(self, run_dir: Path, run_config: dict, model: nn.Module, step: int) -> None:
        self.log_dir = Path(run_dir) / "tensorboard"
        shutil.rmtree(self.log_dir / "hparams", ignore_errors=True)
        self.config = flatten_config(run_config)
        self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=step + 1)

    def _scalars(self, split: str, step: int, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(f"{split}/{key}", value, step)

    def on_train_record(self, step: int, record: dict[str, float]) -> None:
        self._scalars("train", step, record)
        self.writer.flush()

    def on_evaluation(self, step: int, record: dict[str, float], model: nn.Module) -> None:
        self._scalars("test", step, record)
        for tag, grid in evaluation_images(model, self.examples).items():
            self.writer.add_image(tag, grid, step)
        self.writer.flush()

    def on_end(self, step: int, final: dict[str, float]) -> None:
        metrics = {f"final/{k}": v for k, v in scalars(final).items()}
        self.writer.add_hparams(self.config, metrics, run_name="hparams", global_step=step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- Weights & Biases ------------------------------------------------------------------


@LOGGERS.register("wandb")
class WandbLogger(Callback):
    """A W&B run in RUN/wandb, offline unless WANDB_MODE is set (then W&B's own settings
    apply: `wandb sync RUN/wandb/offline-run-*` uploads an offline run). Config = the run
    config; scalars `train/<term>` and `test/<term>` at their steps; images
    'reconstructions' and 'samples' at each evaluation; the final test metrics in the
    summary (`final/<term>`). While offline (the default) W&B's error reporting is off
    (WANDB_ERROR_REPORTING, unless set).

    A resumed session (step > 0) continues the W&B run of the earlier sessions (its id kept
    in RUN/wandb/vaelab-run.json). W&B's history cannot be edited: the steps > s an earlier
    session logged stay in its offline file, and W&B ignores the resumed session's steps
    below the run's last one when syncing; a resume is bit-identical, so those values are
    the ones it would log again. A fresh start (step 0) begins a new W&B run."""

    STATE = "vaelab-run.json"

    def __init__(self, examples: Tensor | None = None):
        self.wandb = require("wandb", "wandb")
        self.examples = examples
        self.run = None

    def on_start(self, run_dir: Path, run_config: dict, model: nn.Module, step: int) -> None:
        folder = Path(run_dir) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        state = folder / self.STATE
        run_id = read_json(state)["id"] if step > 0 and state.exists() else None
        offline = "WANDB_MODE" not in os.environ
        if offline:
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        self.run = self.wandb.init(
            dir=str(run_dir),
            id=run_id,
            resume="allow" if run_id else None,
            mode="offline" if offline else None,
            project=os.environ.get("WANDB_PROJECT", "vaelab"),
            name=Path(run_dir).name,
            config=run_config,
            settings=self.wandb.Settings(console="off"),
        )
        write_json(state, {"id": self.run.id})

    def _log(self, split: str, step: int, record: dict[str, Any], extra=None) -> None:
        values = {f"{split}/{k}": v for k, v in scalars(record).items()}
        self.run.log(values | (extra or {}), step=step)

    def on_train_record(self, step: int, record: dict[str, float]) -> None:
        self._log("train", step, record)

    def on_evaluation(self, step: int, record: dict[str, float], model: nn.Module) -> None:
        images = {
            tag: self.wandb.Image(to_uint8(grid))
            for tag, grid in evaluation_images(model, self.examples).items()
        }
        self._log("test", step, record, images)

    def on_end(self, step: int, final: dict[str, float]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in scalars(final).items()})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


# --- MLflow ----------------------------------------------------------------------------


@LOGGERS.register("mlflow")
class MlflowLogger(Callback):
    """An MLflow run in the local file store RUN/mlruns (experiment 'vaelab', or
    MLFLOW_EXPERIMENT_NAME), or wherever MLFLOW_TRACKING_URI points. Params = the flattened
    config (values cut to MLflow's 500 characters, marked '…'); metrics `train/<term>`,
    `test/<term>` with their steps, `final/<term>` at the end; images as artifacts
    images/<tag>/step_<step>.png. Only MlflowClient is used (no global active run: runs in
    one process do not mix). Without a tracking URI, MLflow's file store is allowed
    (MLFLOW_ALLOW_FILE_STORE: MLflow 3 refuses it otherwise) and its telemetry is off
    (MLFLOW_DISABLE_TELEMETRY), each unless set.

    A resumed session (step > 0) continues the MLflow run of the earlier sessions (its id and
    tracking URI kept in RUN/mlflow.json): MLflow cannot delete points, so the session skips
    a (metric, step) the run already holds (a resume is bit-identical: the value is the one
    it would log) and parameters it already holds (MLflow refuses changing one, e.g. a new
    train.epochs). A fresh start (step 0) deletes that earlier run (MLflow's soft delete)
    and begins a new one."""

    STATE = "mlflow.json"

    def __init__(self, examples: Tensor | None = None):
        require("mlflow", "mlflow")
        self.examples = examples
        self.client = None
        self.run_id = None
        self.ended = False
        self.logged: dict[str, int] = {}  # metric → the last step the run already holds

    def on_start(self, run_dir: Path, run_config: dict, model: nn.Module, step: int) -> None:
        run_dir = Path(run_dir)
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        state = run_dir / self.STATE
        earlier = self._earlier_run(state, uri)
        if earlier is not None and step == 0:
            self.client.delete_run(earlier)
            earlier = None
        held: dict[str, str] = {}  # the parameters the run holds
        if earlier is None:
            self.run_id = self.client.create_run(
                self._experiment(),
                run_name=run_dir.name,
                tags={"vaelab.run_dir": str(run_dir.resolve())},
            ).info.run_id
        else:
            self.run_id = earlier
            self.client.update_run(earlier, status="RUNNING")
            data = self.client.get_run(earlier).data
            held = data.params
            self.logged = {
                key: max(m.step for m in self.client.get_metric_history(earlier, key))
                for key in data.metrics
            }
        write_json(state, {"run_id": self.run_id, "tracking_uri": uri})
        params = [
            Param(k, v if len(v) <= MLFLOW_PARAM_CHARS else v[: MLFLOW_PARAM_CHARS - 1] + "…")
            for k, v in ((k, str(v)) for k, v in flatten_config(run_config).items())
            if k not in held
        ]
        for i in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + MLFLOW_BATCH])

    def _earlier_run(self, state: Path, uri: str) -> str | None:
        """The id of the run an earlier session logged to, if it is in this tracking store
        and not deleted."""
        if not state.exists():
            return None
        saved = read_json(state)
        if saved.get("tracking_uri") != uri:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(saved["run_id"])
        except MlflowException:
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def _experiment(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vaelab")
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def _metrics(self, prefix: str, step: int, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{prefix}/{k}", v, now, step)
            for k, v in scalars(record).items()
            if step > self.logged.get(f"{prefix}/{k}", -1)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_train_record(self, step: int, record: dict[str, float]) -> None:
        self._metrics("train", step, record)

    def on_evaluation(self, step: int, record: dict[str, float], model: nn.Module) -> None:
        self._metrics("test", step, record)
        for tag, grid in evaluation_images(model, self.examples).items():
            self.client.log_image(
                self.run_id, to_uint8(grid), artifact_file=f"images/{tag}/step_{step:08d}.png"
            )

    def on_end(self, step: int, final: dict[str, float]) -> None:
        self._metrics("final", step, final)
        self.ended = True

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if self.ended else "FAILED")
            self.run_id = None
