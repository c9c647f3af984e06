"""Process-group setup for `torchrun` (NCCL on GPU, gloo on CPU) and device choice."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from frafer.errors import FraferError


@dataclass(frozen=True)
class Context:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FraferError(f"config key 'train.device': '{name}' is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FraferError("config key 'train.device': CUDA was asked for but no GPU is visible")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup(device_name: str = "auto") -> Context:
    """Join the process group that torchrun describes in the environment; a plain single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return Context(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Context(device, dist.get_rank(), dist.get_world_size(), local_rank)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_over_processes(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The average of each (scalar) value over all processes, for logging the global-batch loss."""
    if not dist.is_initialized():
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, (stacked / dist.get_world_size()).unbind(), strict=True))


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order (a one-element list outside distributed runs)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
