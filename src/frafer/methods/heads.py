"""Downstream heads: how a trunk becomes an expression classifier, by the name runs and bundles record.

A head says whether the trunk trains, what trains around the classifier (its `Objective`: the module the optimiser
and checkpoints see, and the loss of a batch) and how its optimiser is built. `linear` (the linear probe: the
trunk frozen, SGD on a linear layer), `finetune` (trunk and head trained with AdamW) and `dmue` (DMUE's branches
around the same classifier, `frafer.models.dmue_network`) all deploy as a trunk + linear layer (`FERClassifier`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from frafer.data.pipelines.batch_mix import mix_batch, mixed_loss
from frafer.errors import FraferError
from frafer.losses.classification import classification_loss, crowd_loss
from frafer.losses.dmue import dmue_loss
from frafer.models.backbones import ResNetTrunk
from frafer.models.classifier import FERClassifier
from frafer.models.dmue_network import DMUENet
from frafer.optim import split_decay_groups

LossOfBatch = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class Objective:
    """What one downstream run trains around its classifier."""
    module: nn.Module  # what the optimiser updates and checkpoints hold (the classifier, or a network around it)
    loss: LossOfBatch  # (module or its DDP wrapper, images, targets, epoch) → (loss, detached parts)
    deployed: Callable[[], FERClassifier]  # the classifier as it would be saved now: what is evaluated and bundled


@dataclass(frozen=True)
class Head:
    name: str
    summary: str  # one line for `frafer methods`
    frozen_trunk: bool
    objective: Callable[[object, FERClassifier, int], Objective]  # (FinetuneConfig, classifier, classes) → Objective
    optimizer: Callable[[object, nn.Module], torch.optim.Optimizer]  # (FinetuneConfig, Objective.module) → optimiser
    network: str = "linear"  # what its bundle holds: a key of BUNDLE_NETWORKS


def _plain_objective(cfg, model: FERClassifier, num_classes: int) -> Objective:
    criterion = loss_fn(cfg)
    mix, alpha = cfg.aug.mix, cfg.aug.mix_alpha

    def loss(net, images, targets, epoch):
        if mix == "none":
            value = criterion(net(images).float(), targets)
        else:
            images, partner, lam = mix_batch(images, mix, alpha)
            value = mixed_loss(criterion, net(images).float(), targets, partner, lam)
        return value, {"loss": value.detach()}
    return Objective(model, loss, lambda: model)


def _dmue_objective(cfg, model: FERClassifier, num_classes: int) -> Objective:
    if cfg.data.crowd_mode not in ("none", "majority", "probability"):
        raise FraferError(f"model.head=dmue trains on one label per image; data.crowd_mode={cfg.data.crowd_mode} "
                          "gives several (use none, majority or probability)")
    network = DMUENet(model, num_classes, cfg.dmue.dropout, cfg.model.head_init_std)

    def loss(net, images, targets, epoch):
        labels = targets.argmax(dim=1) if targets.is_floating_point() else targets  # one-hot crowd targets
        labels = labels.long()
        return dmue_loss(net(images, labels), labels, epoch, cfg.dmue)
    return Objective(network, loss, network.sync_classifier)


def _probe_optimizer(cfg, model: FERClassifier) -> torch.optim.Optimizer:
    """SGD on the linear layer alone."""
    p = cfg.probe
    return torch.optim.SGD([{"params": list(model.head.parameters()), "base_lr": p.lr}], lr=p.lr,
                           momentum=p.momentum, weight_decay=p.weight_decay)


def _layer_rates(parts: list[nn.Module], lr: float, decay: float) -> Iterator[tuple[nn.Module, float]]:
    """(module, LR) with layer-wise decay: a trunk's layer4 at lr, layer3 at lr·d, …, its stem at lr·d⁴.

    Modules that are not a whole trunk (DMUE's layer4 copies) train at lr.
    """
    for part in parts:
        if not isinstance(part, ResNetTrunk):
            yield part, lr
            continue
        yield nn.ModuleList([part.conv1, part.bn1]), lr * decay ** 4
        for depth, stage in zip((3, 2, 1, 0), (part.layer1, part.layer2, part.layer3, part.layer4), strict=True):
            yield stage, lr * decay ** depth


def _adamw(cfg, trunk_parts: list[nn.Module], head_parts: list[nn.Module]) -> torch.optim.Optimizer:
    """AdamW, trunk and head at their own LRs (the trunk's decayed layer by layer), no decay on biases and norms.

    Each group keeps its peak LR as `base_lr`; the schedule scales every group by the same warm-up + cosine.
    """
    o = cfg.optim
    rated = [*_layer_rates(trunk_parts, o.lr, o.layer_decay), *((part, o.head_lr or o.lr) for part in head_parts)]
    groups = []
    for part, lr in rated:
        decay, no_decay = split_decay_groups(part)
        groups += [{"params": decay, "weight_decay": o.weight_decay, "base_lr": lr},
                   {"params": no_decay, "weight_decay": 0.0, "base_lr": lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=o.betas, fused=o.fused or None)


def _finetune_optimizer(cfg, model: FERClassifier) -> torch.optim.Optimizer:
    return _adamw(cfg, [model.trunk], [model.head])


def _dmue_optimizer(cfg, network: DMUENet) -> torch.optim.Optimizer:
    return _adamw(cfg, network.trunk_modules(), network.head_modules())


HEADS: dict[str, Head] = {h.name: h for h in (
    Head("linear", "linear probe: frozen trunk, SGD on a linear layer (cached features or the faithful loop)",
         frozen_trunk=True, objective=_plain_objective, optimizer=_probe_optimizer),
    Head("finetune", "fine-tuning: trunk + linear layer, AdamW at separate LRs, warm-up + cosine",
         frozen_trunk=False, objective=_plain_objective, optimizer=_finetune_optimizer),
    Head("dmue", "DMUE fine-tuning: auxiliary branches mine label distributions, pairwise uncertainty weighs "
                 "samples; deploys the target branch as trunk + linear layer",
         frozen_trunk=False, objective=_dmue_objective, optimizer=_dmue_optimizer),
)}

# The networks a bundle can hold, by the name its bundle.json gives: rebuilt from the trunk layout and classes.
BUNDLE_NETWORKS: dict[str, Callable[..., nn.Module]] = {"linear": FERClassifier}


def get_head(name: str) -> Head:
    if name not in HEADS:
        raise FraferError(f"unknown downstream head '{name}' (known: {', '.join(HEADS)})")
    return HEADS[name]


def loss_fn(cfg) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of every head: cross-entropy or a crowd-label loss, label-smoothed by optim.label_smoothing."""
    mode = cfg.data.crowd_mode
    if mode == "none":
        return lambda logits, target: classification_loss(logits, target, cfg.optim.label_smoothing)
    return lambda logits, target: crowd_loss(logits, target, mode, cfg.optim.label_smoothing)
