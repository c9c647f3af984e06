"""The one frozen-network pass: a list of images through a network in eval mode, batched, unreadable ones counted.

kNN, face verification, `evaluate` and the cached linear probe all run a network they do not train over a
dataset; they do it here, so batching, device transfer, precision, flip averaging and unreadable files behave the
same for all of them (and for the photo tool next).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from frafer.data.readers.images import ImageItems, collate_indexed
from frafer.errors import FraferError
from frafer.precision import autocast


@dataclass
class FrozenOutputs:
    values: torch.Tensor  # (N, D) float32 on the CPU, in item order; the rows of unreadable items are zero
    readable: torch.Tensor  # (N,) bool

    @property
    def unreadable(self) -> int:
        return int((~self.readable).sum())


def pooled_trunk(trunk: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, 3, H, W) → (B, C) globally pooled trunk features: what every downstream use of a trunk sees."""
    return lambda images: trunk(images).mean(dim=(2, 3))


@torch.no_grad()
def frozen_pass(
    network: Callable[[torch.Tensor], torch.Tensor], items: Sequence, load: Callable, transform: Callable,
    device: torch.device | str = "cpu", batch_size: int = 256, num_workers: int = 0, flip_average: bool = False,
    precision: str = "fp32", desc: str = "", modules: Sequence[nn.Module] = (),
) -> FrozenOutputs:
    """`network` over every item (`load` → PIL image → `transform` → tensor), outputs (N, D) in item order.

    `modules` are put in eval mode for the pass and back in their own mode after it. With `flip_average` each
    output is the mean of the image's and its mirror image's. `network` gets batches on `device` and must return
    one row per image.
    """
    device = torch.device(device)
    loader = DataLoader(ImageItems(items, load, transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_indexed)
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    values, readable = None, torch.zeros(len(items), dtype=torch.bool)
    try:
        for images, index, _ in tqdm(loader, desc=desc or "features", leave=False, disable=not desc):
            if not len(index):
                continue
            images = images.to(device, non_blocking=True)
            with autocast(precision, device):
                out = network(images)
                if flip_average:
                    out = (out.float() + network(images.flip(3)).float()) / 2
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(index):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise FraferError(f"the network must return a (B, D) tensor for a batch of B={len(index)}, got {shape}")
            if values is None:
                values = torch.zeros(len(items), out.shape[1])
            values[index] = out.detach().float().cpu()
            readable[index] = True
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    return FrozenOutputs(values if values is not None else torch.zeros(len(items), 0), readable)
