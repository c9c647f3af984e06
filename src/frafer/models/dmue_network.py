"""DMUE's training network around a plain expression classifier (She et al., CVPR 2021; docs/method.md §4).

The classifier's trunk is shared up to layer3; its own layer4 is the target branch, and C copies of that layer4
(taken before fine-tuning starts, so from the pre-trained weights) are the auxiliary branches. Every branch pools,
goes through one batch-norm shared by all branches (its running statistics kept per branch) and dropout, and ends
in a bias-free linear layer. Only the target branch is deployed: `sync_classifier` folds the batch-norm into the
classifier's linear head, so a DMUE bundle is the same trunk + Linear as plain fine-tuning.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from frafer.errors import FraferError
from frafer.models.classifier import FERClassifier


def has_pairs(labels: torch.Tensor, num_classes: int) -> bool:
    """Every class has at least 2 samples in the batch: the pairwise terms are defined."""
    return bool(torch.bincount(labels, minlength=num_classes).min() >= 2)


def class_similarity(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C): each sample's mean cosine similarity to the other samples of every class, min-max scaled per row.

    A sample's own entry is left out, so its own class needs 2 samples (`has_pairs`).
    """
    unit = F.normalize(features.float(), dim=1)
    sim = unit @ unit.T  # (B, B)
    member = F.one_hot(labels, num_classes).to(sim.dtype)  # (B, C)
    not_self = 1.0 - torch.eye(len(labels), device=sim.device, dtype=sim.dtype)
    sums = (sim * not_self) @ member  # (B, C)
    counts = not_self @ member
    mean = sums / counts.clamp_min(1.0)
    low, high = mean.min(dim=1, keepdim=True).values, mean.max(dim=1, keepdim=True).values
    return (mean - low) / (high - low).clamp_min(1e-12)


class DMUENet(nn.Module):
    """classifier (trunk + linear head, deployed) + C auxiliary layer4 branches + pairwise uncertainty module."""

    def __init__(self, classifier: FERClassifier, num_classes: int, dropout: float = 0.5, head_init_std: float = 0.01):
        super().__init__()
        if num_classes < 3:
            raise FraferError(f"DMUE needs at least 3 classes (its branches are (C−1)-way), not {num_classes}")
        self.num_classes = num_classes
        self.classifier = classifier
        self.classifier.head.requires_grad_(False)  # written by sync_classifier, never trained directly
        trunk = classifier.trunk
        dim = trunk.out_channels
        self.aux_layers = nn.ModuleList(copy.deepcopy(trunk.layer4) for _ in range(num_classes))
        # One batch-norm for every branch: shared scale and shift, each branch normalised by its own batch
        # statistics in training. Running statistics are kept per branch, so the deployed target branch's are its
        # own and not an average over the auxiliary branches' features.
        self.norm = nn.BatchNorm1d(dim)  # the target branch's running statistics
        self.register_buffer("aux_running_mean", torch.zeros(num_classes, dim))
        self.register_buffer("aux_running_var", torch.ones(num_classes, dim))
        self.dropout = nn.Dropout(dropout)
        self.target_fc = nn.Linear(dim, num_classes, bias=False)
        self.aux_fc = nn.ModuleList(nn.Linear(dim, num_classes - 1, bias=False) for _ in range(num_classes))
        for fc in (self.target_fc, *self.aux_fc):
            nn.init.normal_(fc.weight, std=head_init_std)
        # per-class similarity (C) + one-hot label (C) → s ∈ (0, 1); trained (the released code forgot to)
        self.uncertainty = nn.Sequential(nn.Linear(2 * num_classes, num_classes), nn.PReLU(),
                                         nn.Linear(num_classes, 1))

    def trunk_modules(self) -> list[nn.Module]:
        """The pre-trained part: shared trunk and every layer4 copy (the trunk's learning rate)."""
        return [self.classifier.trunk, self.aux_layers]

    def head_modules(self) -> list[nn.Module]:
        """The new part: batch-norm, classifiers and uncertainty module (the head's learning rate)."""
        return [self.norm, self.target_fc, self.aux_fc, self.uncertainty]

    def _classify(self, fc: nn.Linear, pooled: torch.Tensor, branch: int | None = None) -> torch.Tensor:
        """pooled (B, D) → shared batch-norm (branch's running statistics; None = target) → dropout → fc."""
        if branch is None:
            normed = self.norm(pooled)
        else:
            n = self.norm
            normed = F.batch_norm(pooled, self.aux_running_mean[branch], self.aux_running_var[branch], n.weight, n.bias,
                                  self.training, n.momentum, n.eps)
        return fc(self.dropout(normed))

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Every branch's outputs on a batch (see `branches`); `frafer.losses.dmue.dmue_loss` turns them into DMUE's
        loss."""
        return self.branches(self.classifier.trunk.through_layer3(images), labels)

    def branches(self, shared: torch.Tensor, labels: torch.Tensor) -> dict:
        """From the shared layer3 map (B, C', h, w): the target branch's pooled features (B, D) and logits (B, C),
        each auxiliary branch's logits (B, C−1), whether every class has a pair in the batch, and the uncertainty
        module's scale s (B,) from each sample's class similarities and label (1 without pairs)."""
        c_count = self.num_classes
        features = self.classifier.trunk.layer4(shared).mean(dim=(2, 3))  # (B, D) target branch
        target_logits = self._classify(self.target_fc, features)  # (B, C)
        aux_logits = [self._classify(self.aux_fc[c], self.aux_layers[c](shared).mean(dim=(2, 3)), c)
                      for c in range(c_count)]
        pairs = has_pairs(labels, c_count)
        similarity = class_similarity(features.detach(), labels, c_count)
        label_code = F.one_hot(labels, c_count).to(similarity.dtype)
        scale = torch.sigmoid(self.uncertainty(torch.cat([similarity, label_code], dim=1))).squeeze(1)  # (B,)
        if not pairs:
            scale = 0.0 * scale + 1.0  # plain cross-entropy; the module stays in the graph (DDP) with no gradient
        return {"features": features, "target_logits": target_logits, "aux_logits": aux_logits, "pairs": pairs,
                "scale": scale}

    @torch.no_grad()
    def sync_classifier(self) -> FERClassifier:
        """Fold the target branch's batch-norm (running statistics) and classifier into the plain linear head."""
        n = self.norm
        gain = n.weight * torch.rsqrt(n.running_var + n.eps)  # (D,)
        weight = self.target_fc.weight * gain  # (C, D)
        self.classifier.head.weight.copy_(weight)
        self.classifier.head.bias.copy_(self.target_fc.weight @ (n.bias - n.running_mean * gain))
        return self.classifier
