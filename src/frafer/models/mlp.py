"""The projection / prediction MLP of every FRA and BYOL projector and predictor."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Linear → BatchNorm → ReLU → Linear, neither Linear with a bias: every FRA projector and predictor.

    Works on (..., in_dim): leading dims are flattened, so batch-norm statistics span them all (B for global
    embeddings, B·H·W for the dense projector, B·N for region embeddings).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.net(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)
