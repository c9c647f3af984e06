"""Downstream heads: how a trunk becomes an expression classifier, by the name runs and bundles record.

A head says whether the trunk trains, how its optimiser is built and which network its bundle holds. `linear`
(the linear probe: the trunk frozen, SGD on a linear layer) and `finetune` (trunk and head trained with AdamW)
both deploy as a trunk + linear layer (`FERClassifier`); DMUE will train with its own branches and deploy the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from frafer.errors import FraferError
from frafer.losses.classification import classification_loss, crowd_loss
from frafer.models.classifier import FERClassifier
from frafer.optim import split_decay_groups


@dataclass(frozen=True)
class Head:
    name: str
    summary: str  # one line for `frafer methods`
    frozen_trunk: bool
    optimizer: Callable[[object, FERClassifier], torch.optim.Optimizer]  # (FinetuneConfig, model) → optimiser
    network: str = "linear"  # what its bundle holds: a key of BUNDLE_NETWORKS


def _probe_optimizer(cfg, model: FERClassifier) -> torch.optim.Optimizer:
    """SGD on the linear layer alone."""
    p = cfg.probe
    return torch.optim.SGD([{"params": list(model.head.parameters()), "base_lr": p.lr}], lr=p.lr,
                           momentum=p.momentum, weight_decay=p.weight_decay)


def _finetune_optimizer(cfg, model: FERClassifier) -> torch.optim.Optimizer:
    """AdamW, trunk and head at their own LRs, no decay on biases and norms.

    Each group keeps its peak LR as `base_lr`; the schedule scales every group by the same warm-up + cosine.
    """
    o = cfg.optim
    groups = []
    for part, lr in ((model.trunk, o.lr), (model.head, o.head_lr or o.lr)):
        decay, no_decay = split_decay_groups(part)
        groups += [{"params": decay, "weight_decay": o.weight_decay, "base_lr": lr},
                   {"params": no_decay, "weight_decay": 0.0, "base_lr": lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=o.betas)


HEADS: dict[str, Head] = {h.name: h for h in (
    Head("linear", "linear probe: frozen trunk, SGD on a linear layer (cached features or the faithful loop)",
         frozen_trunk=True, optimizer=_probe_optimizer),
    Head("finetune", "fine-tuning: trunk + linear layer, AdamW at separate LRs, warm-up + cosine",
         frozen_trunk=False, optimizer=_finetune_optimizer),
)}

# The networks a bundle can hold, by the name its bundle.json gives: rebuilt from the trunk layout and classes.
BUNDLE_NETWORKS: dict[str, Callable[..., nn.Module]] = {"linear": FERClassifier}


def get_head(name: str) -> Head:
    if name not in HEADS:
        raise FraferError(f"unknown downstream head '{name}' (known: {', '.join(HEADS)})")
    return HEADS[name]


def loss_fn(cfg) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of every head: cross-entropy (with label smoothing) or a crowd-label loss."""
    mode = cfg.data.crowd_mode
    if mode == "none":
        return lambda logits, target: classification_loss(logits, target, cfg.optim.label_smoothing)
    return lambda logits, target: crowd_loss(logits, target, mode)
