"""The expression classifier: a pre-trained trunk, global average pooling and a new linear head (METHOD.md §2)."""

from __future__ import annotations

import torch
from torch import nn

from frafer.models.backbones import ResNetTrunk


class FERClassifier(nn.Module):
    """trunk → GAP → dropout → Linear(C_trunk, num_classes); head weights N(0, head_init_std), bias 0."""

    def __init__(self, trunk: ResNetTrunk, num_classes: int, dropout: float = 0.0, head_init_std: float = 0.01):
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(trunk.out_channels, num_classes)
        nn.init.normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled trunk features (B, C): what the linear probe and verification use."""
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))  # (B, num_classes) logits

    def freeze_trunk(self) -> None:
        """Linear probing: no gradients into the trunk, and its batch-norm kept in eval mode by `train()`."""
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self._trunk_frozen = True
        self.trunk.eval()

    def train(self, mode: bool = True) -> FERClassifier:
        super().train(mode)
        if getattr(self, "_trunk_frozen", False):
            self.trunk.eval()
        return self
