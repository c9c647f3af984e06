"""MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder, its momentum copy, and a queue of past keys.

The query encoder is `online` (trunk → 2-layer MLP), the key encoder `momentum`, as in FRA, so trunk export,
initialisation and the monitors treat every method alike. The InfoNCE loss lives in `frafer.losses.info_nce`.

Shuffle-BN: batch-norm statistics of one batch let the key of an image be told from its query's batch (the MoCo
paper's "intra-batch communication"). So the queries are normalised in batches of `bn_batch` images in their
own order, and the keys in batches of `bn_batch` images of the global batch in a shuffled order, across every
process as in the MoCo code and within each process when it holds several such batches; the keys are then put back
in order. One process with 2·n images and two processes with n each give the same batches, hence the same loss.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from frafer.collectives import all_gather_no_grad, rank, world_size
from frafer.errors import FraferError
from frafer.models.backbones import build_trunk


class Encoder(nn.Module):
    """Trunk → global average pool → Linear, ReLU, Linear (MoCo v2's projection head, with biases)."""

    def __init__(self, cfg, moco) -> None:
        super().__init__()
        self.trunk = build_trunk(cfg.arch, cfg.blocks, cfg.width, cfg.remove_maxpool)
        c = self.trunk.out_channels
        hidden = moco.hidden_dim or c  # 2048 → 2048 → 128 on a ResNet-50
        self.projector = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, moco.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.trunk(x).mean(dim=(2, 3)))  # (B, dim)


def _in_bn_batches(net: nn.Module, x: torch.Tensor, bn_batch: int) -> torch.Tensor:
    """net over consecutive slices of `bn_batch` images, so batch-norm statistics span one slice each."""
    if len(x) <= bn_batch:
        return net(x)
    if len(x) % bn_batch:
        raise FraferError(f"config key 'moco.bn_batch': {bn_batch} must divide the per-process batch ({len(x)})")
    return torch.cat([net(part) for part in x.split(bn_batch)])


class MoCo(nn.Module):
    def __init__(self, cfg, moco, seed: int = 0) -> None:
        super().__init__()
        self.online = Encoder(cfg, moco)
        self.momentum = copy.deepcopy(self.online)
        self.momentum.requires_grad_(False)
        self.bn_batch = moco.bn_batch
        self.seed = seed
        self.register_buffer("queue", F.normalize(torch.randn(moco.queue_size, moco.dim), dim=1))  # (K, dim)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("shuffles", torch.zeros((), dtype=torch.long))  # seeds the key shuffle: exact resume

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """First in, first out: the oldest keys are overwritten, the pointer wraps around the queue."""
        k = len(self.queue)
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % k
        self.queue[index[-k:]] = keys[-k:].to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % k)

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised keys of this process's images, computed with shuffle-BN over the global batch."""
        everyone = all_gather_no_grad(x)  # (W·B, 3, H, W)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.shuffles))
        order = torch.randperm(len(everyone), generator=g).to(x.device)  # the same on every process
        self.shuffles += 1
        mine = everyone[order].chunk(world_size())[rank()]
        shuffled = all_gather_no_grad(F.normalize(_in_bn_batches(self.momentum, mine, self.bn_batch), dim=1))
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled  # back in the global batch's order
        return keys.chunk(world_size())[rank()]

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Queries of view 1, keys of view 2 and the queue as it was before this batch's keys joined it."""
        if self.training and world_size() == 1 and len(view1) <= self.bn_batch:
            warnings.warn(f"MoCo v2 on one process with a batch of {len(view1)} <= moco.bn_batch={self.bn_batch}: "
                          "queries and keys share one batch-norm batch, which shuffle-BN cannot separate; use a "
                          "batch of at least 2 x moco.bn_batch", stacklevel=2)
        q = F.normalize(_in_bn_batches(self.online, view1, self.bn_batch), dim=1)  # (B, dim)
        k = self.keys(view2)  # (B, dim), no gradient
        negatives = self.queue.clone()  # (K, dim)
        self.enqueue(all_gather_no_grad(k))
        return {"query": q, "key": k, "negatives": negatives}
