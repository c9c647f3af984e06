"""FRA: an online and a momentum network, each a trunk with a global and a local (facial-region) branch.

This file builds embeddings, assignment scores and heatmaps; the losses live in `frafer.losses.fra_loss` and the
momentum update in `frafer.methods.base`. BYOL is the same model without the local branch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frafer.collectives import all_reduce_sum, global_count
from frafer.models.backbones import build_trunk
from frafer.models.mlp import MLP
from frafer.models.query_decoder import QueryDecoder
from frafer.models.region_model import region_heatmaps


@dataclass
class RegionMaps:
    """What the local branch sees for one batch of views."""

    scores: torch.Tensor  # (B, N, h, w) cosine between mask embeddings and dense features
    heatmaps: torch.Tensor  # (B, N, h, w) softmax over regions of scores / tau, + eps


def region_pool(heatmaps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Heatmap-weighted mean of the raw trunk features per region: (B, N, h, w), (B, C, h, w) → (B, N, C)."""
    weighted = torch.einsum("bnhw,bchw->bnc", heatmaps, features)
    return weighted / heatmaps.sum(dim=(2, 3)).unsqueeze(-1)


class Network(nn.Module):
    """One of the two networks: trunk → global embedding, and (if local) region scores, heatmaps, region embeddings."""

    def __init__(self, cfg, local: bool) -> None:
        super().__init__()
        self.trunk = build_trunk(cfg.arch, cfg.blocks, cfg.width, cfg.remove_maxpool)
        c = self.trunk.out_channels
        self.global_projector = MLP(c, cfg.proj_hidden_dim, cfg.proj_dim)  # H_g
        self.local = local
        self.shared_masks = cfg.shared_masks
        self.temperature = cfg.heatmap_temperature
        self.eps = cfg.heatmap_eps
        if local:
            self.dense_projector = MLP(c, cfg.proj_hidden_dim, cfg.proj_dim)  # H_pix, per pixel
            self.local_projector = MLP(c, cfg.proj_hidden_dim, cfg.proj_dim)  # H_l, per region
            self.decoder = QueryDecoder(
                c, cfg.query_dim, cfg.proj_dim, cfg.num_queries, cfg.decoder_layers, cfg.decoder_heads,
                cfg.decoder_ffn_dim, cfg.decoder_dropout,
            )
            # Inference has no batch to average over: keep an EMA of the training batches' mean mask embeddings
            # (the official code's `proto`) and use it in eval mode, so a face's heatmaps depend on that face alone.
            self.prototype_momentum = cfg.prototype_momentum
            self.register_buffer("mask_prototypes", torch.zeros(cfg.num_queries, cfg.proj_dim))  # (N, D)
            self.register_buffer("prototype_updates", torch.zeros((), dtype=torch.long))

    def mask_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """Q: (B, N, D); with shared masks every image gets the global-batch mean of the per-image Q_b.

        In eval mode with shared masks, the stored prototypes stand in for the batch mean (once any were stored).
        """
        if self.shared_masks and not self.training and self.prototype_updates > 0:
            return self.mask_prototypes.unsqueeze(0).expand(features.shape[0], -1, -1)
        q = self.decoder(features)  # (B, N, D)
        if not self.shared_masks:
            return q
        total = all_reduce_sum(q.float().sum(0))  # (N, D), summed over every process's images
        q_mean = total / global_count(q.shape[0], q.device)
        if self.training:
            self._update_prototypes(q_mean.detach())
        return q_mean.to(q.dtype).unsqueeze(0).expand_as(q)

    @torch.no_grad()
    def _update_prototypes(self, q_mean: torch.Tensor) -> None:
        """EMA of the batch-mean mask embeddings; the first batch sets them (no random start to wash out)."""
        if self.prototype_updates == 0:
            self.mask_prototypes.copy_(q_mean)
        else:
            self.mask_prototypes.lerp_(q_mean, 1 - self.prototype_momentum)
        self.prototype_updates += 1

    def region_maps(self, features: torch.Tensor) -> RegionMaps:
        masks = F.normalize(self.mask_embeddings(features).float(), dim=-1)  # (B, N, D)
        dense = self.dense_projector(features.permute(0, 2, 3, 1))  # (B, h, w, D), BN over B·h·w
        dense = F.normalize(dense.float(), dim=-1)
        return RegionMaps(*region_heatmaps(masks, dense, self.temperature, self.eps))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)  # (B, C, h, w)
        out = {"global": self.global_projector(features.mean(dim=(2, 3)))}  # (B, D)
        if self.local:
            maps = self.region_maps(features)
            regions = region_pool(maps.heatmaps, features.float())  # (B, N, C)
            out.update(
                scores=maps.scores, heatmaps=maps.heatmaps, regions=self.local_projector(regions)  # (B, N, D)
            )
        return out


class FRA(nn.Module):
    """Online network + predictors (trained) and a momentum copy (EMA of the online parameters, no gradients)."""

    def __init__(self, cfg, local: bool = True) -> None:
        super().__init__()
        self.local = local
        self.online = Network(cfg, local)
        self.global_predictor = MLP(cfg.proj_dim, cfg.proj_hidden_dim, cfg.proj_dim)  # G_g
        self.local_predictor = MLP(cfg.proj_dim, cfg.proj_hidden_dim, cfg.proj_dim) if local else None  # G_l
        self.momentum = copy.deepcopy(self.online)
        self.momentum.requires_grad_(False)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, list]:
        """Both views through both networks. Lists are indexed by view; momentum outputs carry no gradient."""
        online = [self.online(view1), self.online(view2)]
        with torch.no_grad():
            target = [self.momentum(view1), self.momentum(view2)]
        out = {
            "pred_global": [self.global_predictor(o["global"]) for o in online],
            "target_global": [t["global"] for t in target],
        }
        if self.local:
            out.update(
                pred_regions=[self.local_predictor(o["regions"]) for o in online],
                target_regions=[t["regions"] for t in target],
                online_scores=[o["scores"] for o in online],
                target_scores=[t["scores"] for t in target],
                online_heatmaps=[o["heatmaps"] for o in online],
            )
        return out
