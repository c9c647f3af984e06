"""The part of an FRA network that says where it looks: trunk → dense projector, scored against mask embeddings.

Kept beside a fine-tuned classifier so that `predict` can draw region heatmaps for any FRA-pre-trained model.
At inference the mask embeddings are the stored prototypes (the EMA of training batches' mean embeddings), or,
for runs that predate them, each face's own decoder output: either way a face's heatmaps depend on that face alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frafer.models.backbones import ResNetTrunk
from frafer.models.fra_heads import MLP, QueryDecoder


class RegionModel(nn.Module):
    """(B, 3, H, W) → (B, N, h, w) heatmaps: softmax over the N regions of cosine scores / τ (eval mode)."""

    def __init__(self, trunk: ResNetTrunk, dense_projector: MLP, decoder: QueryDecoder | None,
                 prototypes: torch.Tensor | None, temperature: float) -> None:
        super().__init__()
        if prototypes is None and decoder is None:
            raise ValueError("a region model needs stored prototypes or a decoder to make per-face masks")
        self.trunk = trunk
        self.dense_projector = dense_projector
        self.decoder = decoder  # only used without prototypes
        self.per_face_masks = prototypes is None
        self.register_buffer("prototypes", torch.zeros(0) if prototypes is None else prototypes)
        self.temperature = temperature

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) trunk features → (B, N, h, w) cosine between mask embeddings and dense embeddings."""
        dense = F.normalize(self.dense_projector(features.permute(0, 2, 3, 1)).float(), dim=-1)  # (B, h, w, D)
        if self.per_face_masks:
            masks = F.normalize(self.decoder(features).float(), dim=-1)  # (B, N, D), this face's own
            return torch.einsum("bnd,bhwd->bnhw", masks, dense)
        masks = F.normalize(self.prototypes.float(), dim=-1)  # (N, D)
        return torch.einsum("nd,bhwd->bnhw", masks, dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(self.trunk(x)) / self.temperature, dim=1)  # (B, N, h, w)
