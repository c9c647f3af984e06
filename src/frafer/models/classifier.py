"""The expression classifier: a pre-trained trunk, global average pooling and a new linear head (docs/method.md §4)."""

from __future__ import annotations

import torch
from torch import nn

from frafer.models.backbones import ResNetTrunk


class FERClassifier(nn.Module):
    """trunk → GAP → [feature norm] → dropout → Linear(C_trunk, num_classes); head N(0, head_init_std), bias 0.

    The feature norm (a parameter-free batch-norm) exists only while linear probing: frozen features of a random or
    pre-trained trunk share a large common offset and very different scales, which SGD on a plain linear layer
    cannot handle at any one learning rate. `deployable_state_dict` folds it into the linear layer, so every saved
    model is the plain trunk + Linear above.
    """

    def __init__(self, trunk: ResNetTrunk, num_classes: int, dropout: float = 0.0, head_init_std: float = 0.01):
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.feature_norm: nn.Module = nn.Identity()
        self.head = nn.Linear(trunk.out_channels, num_classes)
        nn.init.normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled trunk features (B, C): what the linear probe and verification use."""
        return self.trunk(x).mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled features → (B, num_classes) logits."""
        return self.head(self.dropout(self.feature_norm(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))  # (B, num_classes) logits

    def add_feature_norm(self) -> None:
        """Standardise features before the head with batch statistics (running statistics in eval mode)."""
        self.feature_norm = nn.BatchNorm1d(self.head.in_features, affine=False, eps=1e-6).to(self.head.weight.device)

    def deployable_state_dict(self) -> dict[str, torch.Tensor]:
        """trunk.* and head.* with the feature norm's running statistics folded into the head (eval behaviour)."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("feature_norm.")}
        norm = self.feature_norm
        if isinstance(norm, nn.BatchNorm1d):
            scale = torch.rsqrt(norm.running_var + norm.eps)  # (C,)
            weight = self.head.weight.detach() * scale  # (classes, C)
            state["head.weight"] = weight
            state["head.bias"] = self.head.bias.detach() - weight @ norm.running_mean
        return state

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
