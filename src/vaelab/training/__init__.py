"""Training: the trainer, checkpoints and the distributed set-up."""

from ..checkpoint import load_checkpoint, save_checkpoint
from .trainer import CHECKPOINT, CONFIG, METRICS, Trainer

__all__ = ["CHECKPOINT", "CONFIG", "METRICS", "Trainer", "load_checkpoint", "save_checkpoint"]
