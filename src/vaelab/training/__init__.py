"""Training: the one trainer, `fit` built on it, and the distributed set-up."""

from .fit import fit
from .trainer import CHECKPOINT, CONFIG, METRICS, Trainer, TrainState

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "TrainState", "Trainer", "fit"]
