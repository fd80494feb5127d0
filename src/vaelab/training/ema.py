"""An exponential moving average of a model's weights (Polyak averaging in its exponential
form, as in Kingma & Ba 2015 §7.2): after every update e ← d·e + (1 − d)·w for each floating
tensor of the state dict (others, e.g. counters, are copied), starting from the initial weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

PREFIX = "ema."  # checkpoint tensors `ema.<state-dict key>`


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        floating = [k for k, v in self.average.items() if v.is_floating_point()]
        torch._foreach_lerp_(
            [self.average[k] for k in floating], [state[k] for k in floating], 1.0 - self.decay
        )
        for k, v in self.average.items():
            if not v.is_floating_point():
                v.copy_(state[k])

    def tensors(self) -> dict[str, Tensor]:
        """The average as checkpoint tensors."""
        return {PREFIX + k: v for k, v in self.average.items()}

    def load(self, tensors: dict[str, Tensor], source: str) -> None:
        """Restore the average from checkpoint tensors (`tensors`)."""
        missing = [k for k in self.average if PREFIX + k not in tensors]
        if missing:
            raise CheckpointError(
                f"{source} holds no EMA weights for {missing[0]!r} (and {len(missing) - 1} "
                "more); it was written without train.ema_decay"
            )
        for k, v in self.average.items():
            v.copy_(tensors[PREFIX + k])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """`model` holding the averaged weights inside the block, its own ones after."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield model
        finally:
            model.load_state_dict(raw)
