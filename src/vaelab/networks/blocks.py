"""Networks as a list of blocks, so that conditioning (FiLM, gating) can act after each one."""

from __future__ import annotations

from collections.abc import Callable, Collection

from torch import Tensor, nn


class Block(nn.Sequential):
    """A layer and its activation; `features` = output units or channels (dimension 1)."""

    def __init__(self, *layers: nn.Module, features: int):
        super().__init__(*layers)
        self.features = features


def _tile(modulation, repeats: int):
    """A modulation (a tensor [R, F] or a tuple of them) with its rows repeated: [k·R, F]."""
    if isinstance(modulation, Tensor):
        return modulation.repeat(repeats, *([1] * (modulation.dim() - 1)))
    return type(modulation)(_tile(m, repeats) for m in modulation)


class BlockNetwork(nn.Module):
    """Applies `blocks` in order, chosen `Block`s optionally followed by a β-conditioning
    modulation; `head` maps the last block's output to the result (optionally modulated
    too)."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.conditioner: nn.Module | None = None
        self.modulated: tuple[bool, ...] = ()  # per entry of `blocks`: modulated after it
        self.head_features: int | None = None  # units of the head's output, when modulated

    @property
    def block_count(self) -> int:
        """The number of `Block`s (the sites `add_conditioning` numbers)."""
        return sum(isinstance(b, Block) for b in self.blocks)

    def add_conditioning(
        self,
        make: Callable[[list[int]], nn.Module],
        blocks: Collection[int] | None = None,
        head_features: int | None = None,
    ) -> None:
        """Modulate the output of the `Block`s numbered `blocks` (0 = the first `Block`;
        None: every one) and, with `head_features` (the head output's dimension 1), the
        head's output, by `make([widths of those sites, in order])` (see `conditioning`)."""
        positions = [i for i, b in enumerate(self.blocks) if isinstance(b, Block)]
        chosen = range(len(positions)) if blocks is None else sorted(set(blocks))
        if any(not 0 <= k < len(positions) for k in chosen):
            raise ValueError(f"blocks {sorted(chosen)}: this network has {len(positions)}")
        sites = {positions[k] for k in chosen}
        self.modulated = tuple(i in sites for i in range(len(self.blocks)))
        self.head_features = head_features
        features = [self.blocks[i].features for i in sorted(sites)]
        self.conditioner = make(features + ([head_features] if head_features else []))

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """x [N, *in] (and ℓ [R], R = 1 or R dividing N: row n of x takes ℓ[n mod R], the
        layout of codes [k, R, L] flattened) → output [N, *out]. The conditioner runs once,
        on the R rows of ℓ, whatever N is."""
        if self.conditioner is None:
            for block in self.blocks:
                x = block(x)
            return self.head(x)
        if condition is None:
            raise ValueError("this network is conditional: pass a condition")
        rows = len(condition)
        if rows > 1 and len(x) % rows:
            raise ValueError(f"{len(x)} inputs cannot take {rows} conditions in turn")
        modulations = self.conditioner(condition)
        if rows > 1 and len(x) > rows:
            modulations = [_tile(m, len(x) // rows) for m in modulations]
        modulations = iter(modulations)
        for block, modulated in zip(self.blocks, self.modulated):
            x = block(x)
            if modulated:
                x = self.conditioner.modulate(x, next(modulations))
        x = self.head(x)
        if self.head_features is not None:
            if x.shape[1] != self.head_features:
                raise ValueError(
                    f"the head outputs {x.shape[1]} units, its modulation has {self.head_features}"
                )
            x = self.conditioner.modulate(x, next(modulations))
        return x


def mlp_blocks(sizes: list[int]) -> list[nn.Module]:
    """Linear + ReLU for each consecutive pair of `sizes`."""
    return [Block(nn.Linear(a, b), nn.ReLU(), features=b) for a, b in zip(sizes[:-1], sizes[1:])]
