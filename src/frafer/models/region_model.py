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
from frafer.models.mlp import MLP
from frafer.models.query_decoder import QueryDecoder


def region_heatmaps(masks: torch.Tensor, dense: torch.Tensor, temperature: float,
                    eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """FRA's region maps, the one place they are computed (training and inference alike).

    masks (B, N, D) per image or (N, D) shared, dense (B, h, w, D), both L2-normalised → the cosine scores
    (B, N, h, w) and the heatmaps softmax(scores / τ) over the N regions, plus `eps` (training adds
    model.heatmap_eps before region pooling; inference draws the maps as they are, eps = 0).
    """
    equation = "nd,bhwd->bnhw" if masks.ndim == 2 else "bnd,bhwd->bnhw"
    scores = torch.einsum(equation, masks, dense)
    return scores, torch.softmax(scores / temperature, dim=1) + eps


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

    def maps(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) trunk features → cosine scores and heatmaps, each (B, N, h, w)."""
        dense = F.normalize(self.dense_projector(features.permute(0, 2, 3, 1)).float(), dim=-1)  # (B, h, w, D)
        source = self.decoder(features) if self.per_face_masks else self.prototypes  # (B, N, D) or (N, D)
        return region_heatmaps(F.normalize(source.float(), dim=-1), dense, self.temperature)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) trunk features → (B, N, h, w) cosine between mask embeddings and dense embeddings."""
        return self.maps(features)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps(self.trunk(x))[1]  # (B, N, h, w)
