"""Deterministic epoch order shared by every process, and a seed for every sample's augmentation.

Epoch e visits a permutation drawn from (seed, e); global batch g is items [g·G, (g+1)·G) of it and process r
takes its slice r of that. Each key is `(index, sample_seed)`: the dataset seeds the sample's augmentation from it,
so the data a step sees depends only on (seed, epoch, position) — not on worker count, process count or restarts.
That is what makes `--resume` continue exactly.
"""

from __future__ import annotations

import torch

from frafer.errors import FraferError

_MASK = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB + 1) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK


def fit_batch(requested: int, num_items: int, world_size: int = 1, key: str = "train.batch_size") -> int:
    """The global batch a dataset of `num_items` can fill: `requested`, or for a smaller dataset the largest
    multiple of `world_size` that fits (a 120-image set trains in batches of 120 rather than being refused).

    Batch-norm needs two images per process, so fewer than 2 x world_size images stay an error naming `key`.
    """
    if num_items >= requested:
        return requested
    batch = num_items - num_items % world_size
    if batch < 2 * world_size:
        raise FraferError(f"the dataset has {num_items} training images, too few for batch-norm training over "
                          f"{world_size} process(es) (config key '{key}')")
    return batch


class EpochBatchSampler:
    """Batch sampler over (index, sample_seed) keys for one process; drops the last incomplete global batch."""

    def __init__(
        self, num_items: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
        weights: torch.Tensor | None = None,
    ):
        if global_batch % world_size:
            raise FraferError(
                f"config key 'train.batch_size': {global_batch} does not split evenly over {world_size} processes"
            )
        if num_items < global_batch:
            raise FraferError(
                f"the dataset has {num_items} images, fewer than one batch of {global_batch} (train.batch_size)"
            )
        self.num_items, self.global_batch = num_items, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.local_batch = global_batch // world_size
        self.epoch, self.start_batch = 0, 0
        # weights: per-item sampling weights; each epoch then draws num_items items with replacement (e.g. 1 / class
        # frequency for class-balanced sampling) instead of a permutation.
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        if self.weights is not None and (self.weights.shape != (num_items,) or (self.weights < 0).any()):
            raise ValueError(f"weights must be {num_items} non-negative numbers")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate, skipping its first `start_batch` batches (when resuming mid-epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.num_items // self.global_batch - self.start_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = torch.multinomial(self.weights, self.num_items, replacement=True, generator=g).tolist()
        for b in range(self.start_batch, self.num_items // self.global_batch):
            lo = b * self.global_batch + self.rank * self.local_batch
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in order[lo : lo + self.local_batch]]
