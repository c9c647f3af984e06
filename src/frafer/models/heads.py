"""Projection / prediction MLPs, the 2-D sine positional encoding and the facial-query decoder."""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """Linear (no bias) → BatchNorm → ReLU → Linear: the shape of every FRA projector and predictor.

    Works on (..., in_dim): leading dims are flattened, so batch-norm statistics span them all (B for global
    embeddings, B·H·W for the dense projector, B·N for region embeddings).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


def sine_position_encoding(h: int, w: int, dim: int, device=None, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine/cosine encoding of an h×w grid → (h·w, dim); the first half encodes y, the second x."""
    if dim % 4:
        raise ValueError(f"positional encoding width must be a multiple of 4, got {dim}")
    quarter = dim // 4
    freqs = temperature ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)  # (dim/4,)
    y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    ey = torch.cat([torch.sin(y[:, None] / freqs), torch.cos(y[:, None] / freqs)], dim=1)  # (h, dim/2)
    ex = torch.cat([torch.sin(x[:, None] / freqs), torch.cos(x[:, None] / freqs)], dim=1)  # (w, dim/2)
    grid = torch.cat([ey[:, None, :].expand(h, w, -1), ex[None, :, :].expand(h, w, -1)], dim=2)
    return grid.reshape(h * w, dim)


class QueryDecoder(nn.Module):
    """N learnable facial queries attend to the trunk's map and become per-image mask embeddings Q_b.

    Memory = 1×1 conv(F) + sine positional encoding; a post-norm transformer decoder; then a 3-layer MLP.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 256,
        out_dim: int = 256,
        num_queries: int = 8,
        layers: int = 1,
        heads: int = 8,
        ffn_dim: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.input_proj = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(
            dim, heads, dim_feedforward=ffn_dim, dropout=dropout, batch_first=True, norm_first=False
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=layers)
        self.mask_mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim), nn.ReLU(inplace=True),
            nn.Linear(dim, out_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        memory = self.input_proj(features).flatten(2).transpose(1, 2)  # (B, h·w, dim)
        memory = memory + sine_position_encoding(h, w, memory.shape[-1], memory.device).to(memory.dtype)
        queries = self.queries.unsqueeze(0).expand(b, -1, -1).to(memory.dtype)  # (B, N, dim)
        return self.mask_mlp(self.decoder(queries, memory))  # (B, N, out_dim)
