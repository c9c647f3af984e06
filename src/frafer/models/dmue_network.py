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
from frafer.losses.dmue import (
    class_similarity,
    has_pairs,
    mined_distribution,
    ramp_weights,
    similarity_preserving_loss,
    soft_loss,
    to_branch_labels,
    weighted_cross_entropy,
)
from frafer.models.classifier import FERClassifier


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

    def forward(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, cfg) -> tuple[torch.Tensor, dict]:
        """The DMUE loss of a batch at `epoch` (cfg: a DMUEConfig) and its parts; see `losses`."""
        return self.losses(self.classifier.trunk.through_layer3(images), labels, epoch, cfg)

    def losses(self, shared: torch.Tensor, labels: torch.Tensor, epoch: int, cfg) -> tuple[torch.Tensor, dict]:
        """L = w_u(e)·[CE_weighted + ω·L_soft + γ·L_sp] + w_d(e)·L_aux from the layer3 map (B, C', h, w).

        Every auxiliary branch sees the whole batch (its batch-norm statistics do too), but its losses use only the
        samples not of its class; its outputs on its own class are the mined distributions, detached. A batch
        where some class has fewer than 2 samples skips the pairwise terms (uncertainty weighting and L_sp).
        """
        c_count = self.num_classes
        features = self.classifier.trunk.layer4(shared).mean(dim=(2, 3))  # (B, D) target branch
        target_logits = self._classify(self.target_fc, features)  # (B, C)
        pairs = has_pairs(labels, c_count)
        own_logits = torch.zeros(len(labels), c_count - 1, device=shared.device)  # each sample's own-class branch
        aux_terms, sp_terms = [], []
        for c in range(c_count):
            logits = self._classify(self.aux_fc[c], self.aux_layers[c](shared).mean(dim=(2, 3)), c)  # (B, C−1)
            mine = labels == c
            own_logits[mine] = logits[mine].detach().float()
            rest = ~mine
            if rest.any():
                aux_terms.append(F.cross_entropy(logits[rest].float(), to_branch_labels(labels[rest], c)))
                if pairs:
                    sp_terms.append(similarity_preserving_loss(logits[rest], features[rest]))
        mined = mined_distribution(own_logits, labels, c_count, cfg.temperature)
        similarity = class_similarity(features.detach(), labels, c_count)
        label_code = F.one_hot(labels, c_count).to(similarity.dtype)
        scale = torch.sigmoid(self.uncertainty(torch.cat([similarity, label_code], dim=1))).squeeze(1)  # (B,)
        if not pairs:
            scale = 0.0 * scale + 1.0  # plain cross-entropy; the module stays in the graph (DDP) with no gradient
        zero = target_logits.new_zeros(())
        parts = {
            "wce": weighted_cross_entropy(target_logits, labels, scale),
            "soft": soft_loss(target_logits, labels, mined),
            "sp": torch.stack(sp_terms).mean() if sp_terms else zero,
            "aux": torch.stack(aux_terms).mean() if aux_terms else zero,
        }
        w_u, w_d = ramp_weights(epoch, cfg.switch_epoch)
        loss = (w_u * (parts["wce"] + cfg.omega * parts["soft"] + cfg.gamma * parts["sp"])
                + w_d * parts["aux"])
        logged = {k: v.detach() for k, v in parts.items()}
        logged |= {"scale": scale.detach().mean(), "pairs": torch.tensor(float(pairs)), "w_u": torch.tensor(w_u),
                   "w_d": torch.tensor(w_d)}
        return loss, logged

    @torch.no_grad()
    def sync_classifier(self) -> FERClassifier:
        """Fold the target branch's batch-norm (running statistics) and classifier into the plain linear head."""
        n = self.norm
        gain = n.weight * torch.rsqrt(n.running_var + n.eps)  # (D,)
        weight = self.target_fc.weight * gain  # (C, D)
        self.classifier.head.weight.copy_(weight)
        self.classifier.head.bias.copy_(self.target_fc.weight @ (n.bias - n.running_mean * gain))
        return self.classifier
