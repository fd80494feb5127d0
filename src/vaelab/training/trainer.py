"""One trainer for everything vaelab trains: optimisers and learning-rate schedules by name,
β schedules and free bits on the rate (training/schedules.py), EMA weights (training/ema.py),
mixed precision, torch.compile, gradient accumulation, progress bar, JSON-lines metrics,
safetensors checkpoints, exact resume, a NaN/inf guard and DDP under torchrun.

The contract:
- a *model* is any module whose forward(batch) returns an object with `.loss` (per-example
  loss, [B]) and `.sums()` (detached batch sums of the terms to log); see
  `estimators.LossTerms`;
- *data* is a `data.base.TrainingData` (its docstring is the contract: `len`, `batch(index)` →
  what the model's forward takes, `batches(chunks)`, `placed(device)`): `TensorData`,
  `ImageData`, `BowData`, a streamed image set (`data/streaming.py`);
- *evaluate* (optional) is a callable model → {name: float}, run on the main process after
  every `eval_every` epochs and at the end, its result logged as the `test` record. The
  trainer knows nothing of what it measures (it is injected by `runs.train_run` and recipes).

Repeatability: the data order of epoch e is a permutation seeded by (seed, e) — the one
`DistributedSampler` draws (`distributed.epoch_order`) — and the noise of step s on rank r
comes from a generator seeded by (seed, s, r). A resumed run therefore continues bit for bit
where the killed one stopped, and so does everything it writes: the checkpoint carries the
partial sums of the current `log_every` window (the first train record after a resume averages
the same steps as in an uninterrupted run), resuming drops the records logged after the
checkpoint and redoes an epoch-end evaluation the log lacks (a kill between an epoch-end
checkpoint and that epoch's `test` record), and the run directory's stale temporary files
(from a kill mid-write) are removed at every start. `metrics.jsonl` of a resumed run equals
the uninterrupted run's but for the wall-clock `seconds`.

Precision: `train.precision = "bf16"` runs the networks under `torch.autocast` (CPU or CUDA),
"16-mixed" in float16 with a gradient scaler (CUDA only); the VAE casts network outputs back to
float32 (`models.vae.full_precision`), so likelihoods, KL terms and σ_x's soft lower bound are
computed in float32, and evaluation always runs in float32. With the scaler, a non-finite
gradient is the scaler's business (it skips that update and lowers its scale), not divergence.

Accumulation: an update averages `accumulate` consecutive micro-batches of `batch_size`
(the same examples a batch of accumulate·batch_size would hold, each weighted by its size);
a step is one update. Rate shaping floors each micro-batch's KL.

Divergence: a non-finite loss (every step) or gradient norm (at logging and clipping steps)
stops training before the update, and a checkpoint is written only when every floating
tensor in it (weights, optimiser state, log window) is finite. The `TrainingDiverged`
message names the step, what went non-finite first (a weight made non-finite by the previous
update; else a loss term, components such as 'distortion' or 'rate' before the total; else
the first parameter whose gradient is non-finite or overflows) and what is on disk.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..checkpoint import (
    load_checkpoint,
    load_model_weights,
    nonfinite_tensors,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)
from ..config import Config, TrainConfig
from ..errors import CheckpointError, ConfigError, TrainingDiverged
from ..files import append_jsonl, read_jsonl, remove_stale_temporaries, write_json, write_jsonl
from . import distributed
from .callbacks import build_callbacks, image_examples
from .ema import WeightAverage
from .schedules import LR_SCHEDULES, OPTIMIZERS, RateShaping

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "config.json"

# Settings that may change between a run and its resumption.
RESUMABLE_KEYS = {
    "epochs",
    "log_every",
    "checkpoint_every",
    "eval_every",
    "progress",
    "device",
    "compile",
    "loggers",
}


RECORD_KEYS = ("split", "step", "epoch", "seconds")  # every metrics.jsonl record's own keys


@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0  # training wall-clock of all sessions of this run
    finished: bool = False
    last_test: dict[str, float] = field(default_factory=dict)


class LogWindow:
    """The batch sums of every logged term since the last train record, kept as one tensor
    (one addition per step) and the number of examples they cover."""

    def __init__(self):
        self.names: list[str] = []
        self.total: torch.Tensor | None = None
        self.examples = 0

    def add(self, sums: dict[str, torch.Tensor], examples: int) -> None:
        values = torch.stack(list(sums.values()))
        if self.total is None:
            self.names, self.total = list(sums), values
        elif list(sums) == self.names:
            self.total = self.total + values
        else:  # the terms changed within a window: merge by name
            merged = self.sums()
            for k, v in sums.items():
                merged[k] = merged[k] + v if k in merged else v
            self.names, self.total = list(merged), torch.stack(list(merged.values()))
        self.examples += examples

    def sums(self) -> dict[str, torch.Tensor]:
        return {} if self.total is None else dict(zip(self.names, self.total.unbind()))

    def means(self) -> dict[str, float]:
        """Per-example means of the window's terms."""
        return {k: v / self.examples for k, v in zip(self.names, self.total.tolist())}


def gradient_norm(params: list[nn.Parameter]) -> torch.Tensor:
    """Euclidean norm of all gradients together."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def step_seed(seed: int, step: int, rank: int, world_size: int) -> int:
    return (seed * 1_000_003 + step * world_size + rank) % (2**63)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        train_data,
        cfg: TrainConfig,
        run_dir: str | Path,
        run_config: dict[str, Any],
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        placement: distributed.Placement | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.placement = placement or distributed.setup(cfg.device)
        self.device = self.placement.device
        self.model = model.to(self.device)
        self.train_data = train_data.placed(self.device)
        names = list(cfg.loggers) if self.placement.is_main else []
        self.callbacks = build_callbacks(names, image_examples(self.train_data) if names else None)
        self.evaluate = evaluate
        self.optimizer = OPTIMIZERS[cfg.optimizer](list(model.parameters()), cfg)
        self.update_size = cfg.batch_size * cfg.accumulate  # examples per update
        per_replica = math.ceil(len(train_data) / self.placement.world_size)
        self.steps_per_epoch = math.ceil(per_replica / self.update_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.lr_schedule = LR_SCHEDULES[cfg.lr_schedule](
            cfg, self.steps_per_epoch, self.total_steps
        )
        if self.lr_schedule.needs_evaluation and evaluate is None:
            raise ConfigError(
                f"train.lr_schedule: '{cfg.lr_schedule}' follows the test loss, and this "
                "training has no evaluation; choose a schedule of the step (e.g. cosine)"
            )
        self.rate_shaping = RateShaping.build(cfg, self.total_steps)
        self.ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.autocast, self.scaler = precision_context(cfg.precision, self.device)
        self.state = TrainState()
        self.params = list(model.parameters())
        self.window = LogWindow()
        # the generator behind torch.randn on this device (seeding it alone is cheap)
        self.noise = (
            torch.cuda.default_generators[self.device.index]
            if self.device.type == "cuda"
            else torch.default_generator
        )
        self.wrapped = model
        if self.placement.distributed:
            ids = [self.device] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(model, device_ids=ids)
        self.eager = self.wrapped  # what runs when compilation fails
        if cfg.compile:
            self.wrapped = torch.compile(self.wrapped)

    # --- checkpoints --------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def save(self) -> None:
        """Write the checkpoint (main process only): weights, optimiser state and the log
        window. Raises `TrainingDiverged` instead, on every process (their states are
        identical), when a floating tensor in it is not finite."""
        opt_tensors, opt_meta = optimizer_to_flat(self.optimizer)
        tensors = (
            {f"model.{k}": v for k, v in self.model.state_dict().items()}
            | opt_tensors
            | {f"window.{k}": v for k, v in self.window.sums().items()}
            | (self.ema.tensors() if self.ema else {})
        )
        bad = nonfinite_tensors(tensors)
        if bad:
            name, count = next(iter(bad.items()))
            causes = [f"{self._describe_tensor(name)} holds {count} non-finite values"]
            causes += [c for c in [self._gradient_cause()] if c]
            self._diverged(
                f"by step {self.state.step} (found when checkpointing, not written)",
                "; ".join(causes),
            )
        if not self.placement.is_main:
            return
        meta = {
            "step": self.state.step,
            "seconds": self.state.seconds,
            "finished": self.state.finished,
            "last_test": self.state.last_test,
            "window": {"terms": self.window.names, "examples": self.window.examples},
            "world_size": self.placement.world_size,
            "optimizer": opt_meta,
            "lr_schedule": self.lr_schedule.state(),
            "config": self.run_config,
        }
        if self.ema:
            meta["ema"] = {"decay": self.ema.decay}
        if self.scaler:
            meta["grad_scaler"] = self.scaler.state_dict()
        save_checkpoint(self.checkpoint_path, tensors, meta)

    def resume(self) -> bool:
        """Restore model, optimiser, step and log window from the run directory, if it holds
        a checkpoint, and drop the metrics logged after it (all of them when there is none)."""
        resumed = self.checkpoint_path.exists()
        if resumed:
            tensors, meta = load_checkpoint(self.checkpoint_path)
            check_same_run(meta.get("config", {}), self.run_config, self.run_dir)
            load_model_weights(self.model, tensors, str(self.checkpoint_path))
            optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
            self.lr_schedule.load_state(meta.get("lr_schedule", {}))
            if self.ema:
                self.ema.load(tensors, str(self.checkpoint_path))
            if self.scaler and "grad_scaler" in meta:
                self.scaler.load_state_dict(meta["grad_scaler"])
            self.state = TrainState(
                step=meta["step"],
                seconds=meta["seconds"],
                finished=meta["finished"] and meta["step"] >= self.total_steps,
                last_test=meta.get("last_test", {}),
            )
            window = meta.get("window", {"terms": [], "examples": 0})  # none before issue 14
            self.window = LogWindow()
            sums = {k: tensors[f"window.{k}"].to(self.device) for k in window["terms"]}
            if sums:
                self.window.add(sums, window["examples"])
        metrics = self.run_dir / METRICS
        if self.placement.is_main and metrics.exists():
            kept = [r for r in read_jsonl(metrics) if r.get("step", 0) <= self.state.step]
            write_jsonl(metrics, kept)
        return resumed

    def _resume_evaluation(self) -> None:
        """After a resume at the end of an epoch evaluated before the last one: the checkpoint
        was written before that evaluation, so redo it if the log lacks it (a kill in between),
        else let the state (last test record, a plateau schedule) take in the logged record."""
        epochs_done, offset = divmod(self.state.step, self.steps_per_epoch)
        if (
            self.evaluate is None
            or offset
            or not 0 < self.state.step < self.total_steps
            or epochs_done % self.cfg.eval_every
        ):
            return
        logged = [
            r
            for r in read_jsonl(self.run_dir / METRICS)
            if r.get("split") == "test" and r.get("step") == self.state.step
        ]
        if not logged:
            self._evaluate(epochs_done - 1)
            return
        record = {k: v for k, v in logged[-1].items() if k not in RECORD_KEYS}
        self.state.last_test = record
        self._observe(record)

    # --- training -----------------------------------------------------------------------

    def fit(self) -> TrainState:
        """Train to `epochs`, resuming what the run directory holds; see the module
        docstring."""
        try:
            return self._fit()
        finally:
            self.callbacks.close()

    def _fit(self) -> TrainState:
        if self.placement.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.run_dir)
        distributed.barrier(self.placement)
        resumed = self.resume()
        if self.placement.is_main:
            write_json(self.run_dir / CONFIG, self.run_config)
        distributed.barrier(self.placement)  # every process reads the log resume() rewrote
        self.callbacks.on_start(self.run_dir, self.run_config, self.model, self.state.step)
        if resumed:
            self._resume_evaluation()
        if self.state.step >= self.total_steps:
            if not self.state.finished:
                self._finish()
            return self.state

        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            desc="resume" if resumed else "train",
            disable=not (self.cfg.progress and self.placement.is_main),
            dynamic_ncols=True,
            mininterval=0.5,
        )
        started = time.perf_counter() - self.state.seconds
        size = self.update_size
        while self.state.step < self.total_steps:
            epoch, offset = divmod(self.state.step, self.steps_per_epoch)
            order = distributed.epoch_order(
                len(self.train_data), self.cfg.seed, epoch, self.placement
            ).to(self.train_data.device)
            chunks = [  # the micro-batches of each remaining update of the epoch
                order[b * size : (b + 1) * size].split(self.cfg.batch_size)
                for b in range(offset, self.steps_per_epoch)
            ]
            batches = self.train_data.batches([c for micro in chunks for c in micro])
            for micro in chunks:
                step = self.state.step + 1
                logging = step % self.cfg.log_every == 0 or step == self.total_steps
                sizes = [len(c) for c in micro]
                batch_sums, batch_size, grad_norm = self._step(batches, sizes, logging)
                self.window.add(batch_sums, batch_size)
                self.state.step = step
                self.state.seconds = time.perf_counter() - started
                bar.update(1)
                if logging:
                    record = self.window.means()
                    record |= {
                        "grad_norm": float(grad_norm),
                        "lr": self.optimizer.param_groups[0]["lr"],
                    }
                    self._log("train", epoch, record)
                    self.callbacks.on_train_record(self.state.step, record)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                    self.window = LogWindow()
                if step % self.cfg.checkpoint_every == 0 and step < self.total_steps:
                    self.save()
            if (epoch + 1) % self.cfg.eval_every == 0 and self.state.step < self.total_steps:
                self._evaluate(epoch)
        bar.close()
        self._finish()
        return self.state

    def _step(
        self, batches: Iterator, sizes: list[int], measure_grad: bool
    ) -> tuple[dict[str, torch.Tensor], int, Any]:
        """One optimiser step over the next len(sizes) micro-batches of `batches`. Stops,
        before updating, if the loss (or a measured gradient norm) is not finite. The gradient
        norm is measured only when clipping or logging: a pass over all gradients every step
        would cost ~10% on small models, and a non-finite gradient shows up as a non-finite
        loss one step later anyway."""
        p, step = self.placement, self.state.step
        self.noise.manual_seed(step_seed(self.cfg.seed, step, p.rank, p.world_size))
        self.optimizer.zero_grad(set_to_none=True)
        examples = sum(sizes)
        sums: dict[str, torch.Tensor] = {}
        finite = True
        for size in sizes:
            x = next(batches)  # after seeding: a batch drawn with randomness is repeatable
            with self.autocast:
                terms = self._forward(x)
            if self.rate_shaping is None:
                loss, shaped = terms.loss.mean(), {}
            else:
                loss, shaped = self.rate_shaping.objective(terms, step)
            scaled = loss * (size / examples) if len(sizes) > 1 else loss
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            finite = finite and bool(torch.isfinite(loss))
            for k, v in (terms.sums() | shaped).items():
                sums[k] = sums[k] + v if k in sums else v
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.cfg.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        elif measure_grad:
            grad_norm = gradient_norm(self.params)
        bad_grad = grad_norm is not None and not torch.isfinite(grad_norm)
        if not finite or (bad_grad and not self.scaler):  # the scaler skips such updates
            self._step_diverged(sums, examples, grad_norm)
        for group in self.optimizer.param_groups:  # a function of the step: resumes exactly
            group["lr"] = self.lr_schedule.lr(step)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema:
            self.ema.update(self.model)
        return sums, examples, grad_norm

    def _forward(self, x: Any):
        """The wrapped model's terms; a model torch.compile cannot compile falls back to
        eager with one line, once."""
        if self.wrapped is self.eager:
            return self.wrapped(x)
        try:
            return self.wrapped(x)
        except Exception as exc:  # noqa: BLE001 — any compiler failure; eager re-raises real errors
            detail = " ".join(str(exc).split())[:160]
            print(
                f"train.compile: torch.compile failed here ({detail}); training eagerly",
                file=sys.stderr,
            )
            self.wrapped = self.eager
            return self.wrapped(x)

    def _step_diverged(
        self, sums: dict[str, torch.Tensor], batch_size: int, grad_norm: torch.Tensor | None
    ) -> None:
        """Raise for a step whose loss or gradient norm is not finite, naming what went
        non-finite first: a weight (then the previous update made it so), a loss term, the
        gradient."""
        step = self.state.step
        weights = nonfinite_tensors(dict(self.model.named_parameters()))
        if weights:
            name, count = next(iter(weights.items()))
            what = "the update made" if step else "the initial (or loaded) weights have"
            self._diverged(
                f"at step {step}", f"{what} parameter {name!r} non-finite ({count} values)"
            )
        bad = [k for k, v in sums.items() if not torch.isfinite(v)]
        parts = [k for k in bad if k != "loss"] or bad  # a component before the total
        if parts:
            finite = [f"{k} {float(v) / batch_size:.4g}" for k, v in sums.items() if k not in bad]
            note = f" (finite, per example: {', '.join(finite)})" if parts == ["loss"] else ""
            cause = f"loss term {parts[0]!r} is {float(sums[parts[0]])}{note}"
        else:
            cause = self._gradient_cause() or f"the gradient norm is {float(grad_norm)}"
        self._diverged(f"at step {step + 1}", cause)

    def _gradient_cause(self) -> str | None:
        """The first parameter whose gradient is not finite, else the first whose gradient's
        norm overflows (its square: what Adam's second moment holds); None if neither."""
        grads = [(n, p.grad) for n, p in self.model.named_parameters() if p.grad is not None]
        for name, g in grads:
            bad = int((~torch.isfinite(g)).sum())
            if bad:
                return f"the gradient of {name!r} is not finite ({bad} of {g.numel()} values)"
        for name, g in grads:
            if not torch.isfinite(torch.linalg.vector_norm(g)):
                return (
                    f"the gradient of {name!r} is finite but its norm overflows "
                    f"{str(g.dtype).removeprefix('torch.')} "
                    f"(largest |value| {float(g.abs().max()):.3g})"
                )
        return None

    def _describe_tensor(self, key: str) -> str:
        """What checkpoint tensor `key` is, in words."""
        kind, _, rest = key.partition(".")
        if kind == "optimizer":
            pid, _, what = rest.partition(".")
            names = [n for n, _ in self.model.named_parameters()]
            return f"optimiser state {what!r} of parameter {names[int(pid)]!r}"
        return f"weight {rest!r}" if kind == "model" else f"the logged sum of {rest!r}"

    def _on_disk(self) -> str:
        """What the run directory holds, checked rather than assumed."""
        if not self.checkpoint_path.exists():
            return "no checkpoint was written"
        try:
            tensors, meta = load_checkpoint(self.checkpoint_path)
        except CheckpointError:
            return "the checkpoint on disk cannot be read"
        values = "non-finite values too" if nonfinite_tensors(tensors) else "only finite values"
        return f"the checkpoint on disk is of step {meta['step']} and holds {values}"

    def _diverged(self, when: str, cause: str) -> None:
        raise TrainingDiverged(
            f"training diverged {when}: {cause}; {self._on_disk()} "
            "(try a lower train.lr, train.grad_clip, or a higher model.log_sigma_min)"
        )

    def _evaluate(self, epoch: int) -> None:
        """The test record (main process): the evaluation of the weights, and with EMA that
        of the averaged weights as `ema_<term>`."""
        if self.evaluate is None:
            return
        record: dict[str, Any] = {}
        if self.placement.is_main:
            record = self.evaluate(self.model)
            if self.ema:
                with self.ema.applied(self.model):
                    record = record | {f"ema_{k}": v for k, v in self.evaluate(self.model).items()}
            self.state.last_test = record
            self._log("test", epoch, record)
            training = self.model.training
            self.model.eval()
            self.callbacks.on_evaluation(self.state.step, record, self.model)
            self.model.train(training)
        self._observe(record)
        distributed.barrier(self.placement)

    def _observe(self, record: dict[str, Any]) -> None:
        """Show a test record to a schedule that follows it; its state reaches every process."""
        if not self.lr_schedule.needs_evaluation:
            return
        if self.placement.is_main:
            self.lr_schedule.observe(record)
        state = self.lr_schedule.state()
        self.lr_schedule.load_state(
            {k: distributed.broadcast_float(self.placement, v) for k, v in state.items()}
        )

    def _finish(self) -> None:
        epoch = max(self.state.step - 1, 0) // self.steps_per_epoch
        self._evaluate(epoch)
        self.callbacks.on_end(self.state.step, self.state.last_test)
        identical = distributed.replicas_identical(self.placement, self.model)
        if self.placement.distributed:
            self._log(
                "replicas", epoch, {"identical": identical, "world_size": self.placement.world_size}
            )
            if not identical:
                raise TrainingDiverged("DDP replicas hold different parameters after training")
        self.state.finished = True
        self.save()
        distributed.barrier(self.placement)

    def _log(self, split: str, epoch: int, values: dict[str, Any]) -> None:
        if self.placement.is_main:
            record = dict(
                zip(RECORD_KEYS, (split, self.state.step, epoch, round(self.state.seconds, 3)))
            )
            append_jsonl(self.run_dir / METRICS, record | values)


def precision_context(precision: str, device: torch.device):
    """(the autocast context of the forward pass, the gradient scaler or None) for
    `train.precision`; float16 needs CUDA."""
    if precision == "32":
        return contextlib.nullcontext(), None
    if precision == "16-mixed":
        if device.type != "cuda":
            raise ConfigError(
                f"train.precision: '16-mixed' (float16 with a gradient scaler) needs CUDA, and "
                f"this run is on {device.type}; use 'bf16' or '32'"
            )
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16), None


def check_same_run(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run directory that holds a differently configured run. A key the
    saved config lacks (a field added to vaelab after that run started) reads as its default,
    which is what that run used."""
    defaults = Config().to_dict()

    def saved_value(section: str, key: str) -> Any:
        values = saved.get(section, {})
        return values[key] if key in values else defaults.get(section, {}).get(key)

    differ = sorted(
        f"{section}.{key}"
        for section in set(saved) | set(current)
        for key in set(saved.get(section, {})) | set(current.get(section, {}))
        if saved_value(section, key) != current.get(section, {}).get(key)
        and not (section == "train" and key in RESUMABLE_KEYS)
    )
    if differ:
        raise ConfigError(
            f"run directory {str(run_dir)!r} holds a run with a different config "
            f"({', '.join(differ[:5])}); use another run directory to start afresh"
        )
