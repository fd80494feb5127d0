"""Networks as a list of blocks, so that conditioning (FiLM, gating) can act after each one."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn


class Block(nn.Sequential):
    """A layer and its activation; `features` = output units or channels (dimension 1)."""

    def __init__(self, *layers: nn.Module, features: int):
        super().__init__(*layers)
        self.features = features


class BlockNetwork(nn.Module):
    """Applies `blocks` in order, each `Block` optionally followed by a β-conditioning
    modulation; `head` maps the last block's output to the result."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.conditioner: nn.Module | None = None

    def add_conditioning(self, make: Callable[[list[int]], nn.Module]) -> None:
        """Modulate every `Block` by `make([features of each block])` (see `conditioning`)."""
        self.conditioner = make([b.features for b in self.blocks if isinstance(b, Block)])

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.conditioner is None:
            for block in self.blocks:
                x = block(x)
            return self.head(x)
        if condition is None:
            raise ValueError("this network is conditional: pass a condition")
        modulations = iter(self.conditioner(condition))
        for block in self.blocks:
            x = block(x)
            if isinstance(block, Block):
                x = self.conditioner.modulate(x, next(modulations))
        return self.head(x)


def mlp_blocks(sizes: list[int]) -> list[nn.Module]:
    """Linear + ReLU for each consecutive pair of `sizes`."""
    return [Block(nn.Linear(a, b), nn.ReLU(), features=b) for a, b in zip(sizes[:-1], sizes[1:])]
