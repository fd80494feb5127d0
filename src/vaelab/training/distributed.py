"""Process-group set-up for runs under `torchrun` (DDP; gloo on CPU, NCCL on CUDA)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """Where this process runs: its device, rank and the number of processes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' → CUDA (this process's GPU) when present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device: unknown device {name!r}; use auto, cpu or cuda[:N]"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(device_name: str) -> Placement:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return Placement(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Placement(device, dist.get_rank(), dist.get_world_size())


def barrier(placement: Placement) -> None:
    if placement.distributed:
        dist.barrier()


def replicas_identical(placement: Placement, model: torch.nn.Module) -> bool:
    """True when every process holds bit-identical parameters (checked by all-gather)."""
    if not placement.distributed:
        return True
    flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    weights = torch.arange(1, len(flat) + 1, dtype=torch.float64, device=flat.device)
    digest = torch.stack([flat.sum(), (flat * flat).sum(), (flat * weights).sum()])
    gathered = [torch.empty_like(digest) for _ in range(placement.world_size)]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def broadcast_float(placement: Placement, value: float) -> float:
    """The main process's `value` on every process."""
    if not placement.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=placement.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def teardown(placement: Placement) -> None:
    if placement.distributed and dist.is_initialized():
        dist.destroy_process_group()


def epoch_order(n: int, seed: int, epoch: int, placement: Placement) -> torch.Tensor:
    """The example indices this process visits in `epoch`, as an int64 tensor: exactly what
    `torch.utils.data.DistributedSampler(range(n), shuffle=True, seed=seed)` yields after
    `set_epoch(epoch)` — a permutation seeded by seed + epoch, padded by wrapping to a multiple
    of the world size, every world_size-th index from the rank — without a Python list."""
    world = placement.world_size
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g)
    total = math.ceil(n / world) * world
    if total > n:  # wrap around as often as needed (n may be smaller than the padding)
        order = order.repeat(math.ceil(total / n))[:total]
    return order[placement.rank : total : world]
