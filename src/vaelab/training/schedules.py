"""What changes during training, step by step: the optimiser by name, the learning rate, the
weight on the rate and its free-bits floor.

Every schedule is a function of the step, so a resumed run continues exactly, except
`plateau`, which reacts to the test loss and keeps its state in the checkpoint (`state` /
`load_state`, JSON). "Step" here is the 0-based index of the update being made: the first
update is step 0.

Rate shaping acts on the rate term only (loss = D + β·w(t)·R̃, with R̃ = R or its free-bits
floor); D, σ_x and everything logged as `rate` stay what the model computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..config import TrainConfig
from ..errors import ConfigError
from ..estimators import LossTerms

# --- optimisers ------------------------------------------------------------------------------

def _fused(params: list) -> dict[str, bool]:
    """`fused=True` (one kernel per tensor instead of about ten passes) when every parameter
    is a floating tensor on CPU or CUDA: on this machine's CPU an Adam update of the rd_sweep
    MLP is 3.5–5.5× faster, and 15× when the second moments have decayed to denormal values
    (`benchmarks/optimizer_step.py`)."""
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if ok and params else {}


OPTIMIZERS: dict[str, Callable[[list, TrainConfig], torch.optim.Optimizer]] = {
    "adam": lambda params, cfg: torch.optim.Adam(
        params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay,
        **_fused(params),
    ),
    "adamw": lambda params, cfg: torch.optim.AdamW(  # decoupled weight decay (Loshchilov 2019)
        params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay,
        **_fused(params),
    ),
    "adamax": lambda params, cfg: torch.optim.Adamax(
        params, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay
    ),
    "sgd": lambda params, cfg: torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    ),
    "rmsprop": lambda params, cfg: torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    ),
}


# --- learning rate -----------------------------------------------------------------------------


class LRSchedule:
    """Base class: the learning rate of every update.

    `lr(step)` is the rate of update `step`: `train.lr` times a linear warm-up factor
    min(1, (step + 1) / lr_warmup_steps) times the schedule's own `decay(step)`. A schedule
    with `needs_evaluation` also `observe`s each test record; its state (`state`, JSON) is
    checkpointed and restored by `load_state`."""

    needs_evaluation = False

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps

    def lr(self, step: int) -> float:
        warmup = self.cfg.lr_warmup_steps
        factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return factor * self.decay(step)

    def decay(self, step: int) -> float:
        """The learning rate after warm-up at update `step`."""
        return self.cfg.lr

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def observe(self, metrics: dict[str, float]) -> None:
        """Take note of a test record (schedules with `needs_evaluation`)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class Constant(LRSchedule):
    """train.lr throughout."""


class Linear(LRSchedule):
    """lr·(1 − step/T): to zero at the end (Tieleman 2008, for PCD)."""

    def decay(self, step: int) -> float:
        return self.cfg.lr * (1.0 - step / self.total_steps)


class Cosine(LRSchedule):
    """Cosine annealing after the warm-up (Loshchilov & Hutter, ICLR 2017, without restarts):
    η_min + (lr − η_min)·½(1 + cos(π p)), p = (step − W)/(T − W), η_min = train.lr_min. With
    W = 0 this is `torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T)` stepped per update."""

    def decay(self, step: int) -> float:
        warmup, low = self.cfg.lr_warmup_steps, self.cfg.lr_min
        span = max(1, self.total_steps - warmup)
        progress = min(1.0, max(0, step - warmup) / span)
        return low + (self.cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Step(LRSchedule):
    """lr·γ^⌊epoch / lr_step_epochs⌋ (`StepLR` stepped per epoch)."""

    def decay(self, step: int) -> float:
        return self.cfg.lr * self.cfg.lr_gamma ** (self.epoch(step) // self.cfg.lr_step_epochs)


class Exponential(LRSchedule):
    """lr·γ^epoch (`ExponentialLR` stepped per epoch)."""

    def decay(self, step: int) -> float:
        return self.cfg.lr * self.cfg.lr_gamma ** self.epoch(step)


class Plateau(LRSchedule):
    """Multiply the rate by γ when the test record's `plateau_metric` has not improved by a
    relative `plateau_threshold` for more than `plateau_patience` evaluations, down to
    `lr_min` (`ReduceLROnPlateau(mode="min", threshold_mode="rel")`, one `step` per
    evaluation)."""

    needs_evaluation = True

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, total_steps: int):
        super().__init__(cfg, steps_per_epoch, total_steps)
        self.current, self.best, self.bad = cfg.lr, math.inf, 0

    def decay(self, step: int) -> float:
        return self.current

    def observe(self, metrics: dict[str, float]) -> None:
        key = self.cfg.plateau_metric
        if key not in metrics:
            raise ConfigError(
                f"train.plateau_metric: the test record has no {key!r}; "
                f"choose one of: {', '.join(metrics)}"
            )
        value = metrics[key]
        if value < self.best * (1.0 - self.cfg.plateau_threshold):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.bad > self.cfg.plateau_patience:
            reduced = max(self.current * self.cfg.lr_gamma, self.cfg.lr_min)
            if self.current - reduced > 1e-8:  # torch's eps
                self.current = reduced
            self.bad = 0

    def state(self) -> dict[str, Any]:
        return {"current": self.current, "best": self.best, "bad": self.bad}

    def load_state(self, state: dict[str, Any]) -> None:
        self.current, self.best, self.bad = state["current"], state["best"], state["bad"]


LR_SCHEDULES: dict[str, type[LRSchedule]] = {
    "constant": Constant,
    "linear": Linear,
    "cosine": Cosine,
    "step": Step,
    "exponential": Exponential,
    "plateau": Plateau,
}


# --- the rate: β schedules and free bits ----------------------------------------------------


def rate_weight(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """w(step) ∈ [0, 1], the factor on β·R at update `step` (0-based).

    - constant: 1;
    - linear (KL warm-up, Bowman et al. 2016): min(1, step / beta_warmup_steps), 0 at the first
      update;
    - cyclical (Fu et al., NAACL 2019, eq. 3): M = beta_cycles cycles of ⌈T/M⌉ steps;
      τ = (step mod ⌈T/M⌉) / (T/M), w = τ/R while τ ≤ R, else 1, with R = beta_cycle_ratio."""
    if cfg.beta_schedule == "linear":
        return min(1.0, step / cfg.beta_warmup_steps)
    if cfg.beta_schedule == "cyclical":
        period = total_steps / cfg.beta_cycles
        tau = (step % math.ceil(period)) / period
        return min(1.0, tau / cfg.beta_cycle_ratio)
    return 1.0


def free_bits_rate(kl_per_dimension: Tensor, floor: float, groups: int | None) -> Tensor:
    """R̃ = Σ_g max(λ, mean over the minibatch of Σ_{j∈g} KL_j): "free bits" (Kingma et al.,
    NeurIPS 2016, appendix on IAF training), the latent dimensions [B, L] split into `groups`
    contiguous groups of equal size (None: each dimension its own group). A scalar, per
    example."""
    per_group = kl_per_dimension.mean(0)
    if groups is not None:
        per_group = per_group.reshape(groups, -1).sum(-1)
    return torch.clamp(per_group, min=floor).sum()


class RateShaping:
    """β schedule and free bits on the rate term of a VAE's loss; `None` from `build` when
    neither is configured (the loss is then the model's, untouched)."""

    def __init__(self, cfg: TrainConfig, total_steps: int):
        self.cfg = cfg
        self.total_steps = total_steps

    @classmethod
    def build(cls, cfg: TrainConfig, total_steps: int) -> RateShaping | None:
        if cfg.beta_schedule == "constant" and cfg.free_bits is None:
            return None
        return cls(cfg, total_steps)

    def objective(self, terms: LossTerms, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """(the minibatch objective to minimise, its batch sums to log). The model's loss
        mean(D̂ + β·R) becomes mean(D̂) + β·w·R̃: the model's β·R is replaced, so the
        estimator's surrogate terms in D̂ are kept as they are."""
        if terms.kl_per_dimension is None or terms.beta is None:
            raise ConfigError(
                "train.beta_schedule / train.free_bits act on a VAE's rate, and this model's "
                "loss has none; remove them"
            )
        if terms.beta.numel() != 1:
            raise ConfigError(
                "train.free_bits floors the minibatch's KL, so it needs one β per minibatch; "
                "set model.beta_sampling = 'minibatch'"
            )
        beta = terms.beta.reshape(())
        weight = rate_weight(self.cfg, step, self.total_steps)
        if self.cfg.free_bits is None:
            rate = terms.rate.mean()
        else:
            rate = free_bits_rate(
                terms.kl_per_dimension, self.cfg.free_bits, self.cfg.free_bits_groups
            )
        objective = terms.loss.mean() + beta * (weight * rate - terms.rate.mean())
        n = len(terms.loss)
        logged = {
            "objective": objective.detach() * n,
            "rate_weight": torch.full((), weight * n),
            "rate_penalised": rate.detach() * n,
        }
        return objective, logged
