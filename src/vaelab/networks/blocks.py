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
    """Applies `blocks` in order, each optionally followed by a conditioning modulator;
    `head` maps the last block's output to the result."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.modulators: nn.ModuleList | None = None

    def add_conditioning(self, make: Callable[[int], nn.Module]) -> None:
        """Follow every `Block` by `make(block.features)`, a module (h, condition) → h."""
        self.modulators = nn.ModuleList(
            make(b.features) if isinstance(b, Block) else Unmodulated() for b in self.blocks
        )

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.modulators is None:
            for block in self.blocks:
                x = block(x)
        else:
            if condition is None:
                raise ValueError("this network is conditional: pass a condition")
            for block, modulate in zip(self.blocks, self.modulators):
                x = modulate(block(x), condition)
        return self.head(x)


class Unmodulated(nn.Module):
    def forward(self, h: Tensor, condition: Tensor) -> Tensor:
        return h


def mlp_blocks(sizes: list[int]) -> list[nn.Module]:
    """Linear + ReLU for each consecutive pair of `sizes`."""
    return [Block(nn.Linear(a, b), nn.ReLU(), features=b) for a, b in zip(sizes[:-1], sizes[1:])]
