"""Networks as a list of blocks, so that conditioning (FiLM, gating) can act after each one."""

from __future__ import annotations

from torch import Tensor, nn


class BlockNetwork(nn.Module):
    """Applies `blocks` in order; `head` maps the last block's output to the result."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def mlp_blocks(sizes: list[int]) -> list[nn.Module]:
    """Linear + ReLU for each consecutive pair of `sizes`."""
    return [nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(sizes[:-1], sizes[1:])]
