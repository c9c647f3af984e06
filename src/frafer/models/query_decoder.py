"""The facial-query decoder: learnable queries attend to the trunk's feature map (with DETR's 2-D sine encoding)."""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_position_encoding(h: int, w: int, dim: int, device=None, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding of an h×w grid → (h·w, dim): the first half encodes y, the second x.

    Row i sits at (i + 1) / (h + 1e-6) · 2π (columns alike). Per axis, channel j uses the frequency
    temperature^(2⌊j/2⌋ / (dim/2)): sine on even channels, cosine on odd ones, so each pair shares one frequency.
    """
    if dim % 4:
        raise ValueError(f"positional encoding width must be a multiple of 4, got {dim}")
    half = dim // 2

    def axis(n: int) -> torch.Tensor:  # (n, dim/2)
        pos = torch.arange(1, n + 1, device=device, dtype=torch.float32) / (n + 1e-6) * 2 * math.pi
        j = torch.arange(half, device=device, dtype=torch.float32)
        angle = pos[:, None] / temperature ** (2 * torch.div(j, 2, rounding_mode="floor") / half)
        return torch.where(j.long() % 2 == 0, angle.sin(), angle.cos())

    ey, ex = axis(h), axis(w)
    grid = torch.cat([ey[:, None, :].expand(h, w, -1), ex[None, :, :].expand(h, w, -1)], dim=2)
    return grid.reshape(h * w, dim)


class DecoderLayer(nn.Module):
    """One post-norm DETR decoder layer: self-attention, cross-attention to the memory, feed-forward.

    The queries' positions `query_pos` are added to the self-attention queries and keys and to the
    cross-attention queries; the memory's positions `pos` to the cross-attention keys only. Values never
    carry positions.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt, query_pos, memory, pos):  # (B, N, D), (B, N, D), (B, L, D), (B, L, D)
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.drop1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop2(attended))
        return self.norm3(tgt + self.drop3(self.ffn(tgt)))


class QueryDecoder(nn.Module):
    """N learnable facial queries attend to the trunk's map and become per-image mask embeddings Q_b.

    DETR's decoder, as the official FRA code uses it: memory = 1×1 conv(F); the decoder input starts at zero and
    the queries enter every layer as query positions; the sine encoding enters the memory's keys only; a final
    LayerNorm; then a 3-layer MLP. See docs/method.md, "Facial queries".
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
        self.queries = nn.Parameter(torch.randn(num_queries, dim))  # N(0, 1), as an nn.Embedding starts
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.mask_mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim), nn.ReLU(inplace=True),
            nn.Linear(dim, out_dim),
        )
        # DETR's initialisation: Xavier-uniform for every matrix of the decoder, Kaiming-uniform (a=1) for the
        # input projection with a zero bias.
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
        nn.init.zeros_(self.input_proj.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        memory = self.input_proj(features).flatten(2).transpose(1, 2)  # (B, h·w, D)
        pos = sine_position_encoding(h, w, memory.shape[-1], memory.device).to(memory.dtype)  # (h·w, D)
        pos = pos.unsqueeze(0).expand(b, -1, -1)
        query_pos = self.queries.unsqueeze(0).expand(b, -1, -1).to(memory.dtype)  # (B, N, D)
        tgt = torch.zeros_like(query_pos)
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, pos)
        return self.mask_mlp(self.norm(tgt))  # (B, N, out_dim)
