"""What a pre-training method is: a few functions and some config defaults, nothing more.

The pre-training loop asks its method for the model, the modules the optimiser trains, the loss of one batch and
the (momentum, online) pairs it updates after each step. It declares its own config sections and rules too,
so adding a method is its file, its loss and a recipe. Every method names its query / online encoder `online`
with the trunk at `online.trunk`, so exporting a trunk, initialising fine-tuning from a run and the kNN and
verification monitors work the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

TRUNK_PREFIX = "online.trunk."  # where every method's checkpoint holds the trunk that downstream tasks use


@dataclass(frozen=True)
class Method:
    name: str
    summary: str  # one line for `frafer methods`
    build: Callable[[object], nn.Module]  # PretrainConfig → model (online + momentum networks)
    trainable: Callable[[nn.Module], list[nn.Module]]  # model → the modules the optimiser updates
    loss: Callable[[dict, object], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # (outputs, cfg) → (loss, parts)
    # Config values that differ from the schema's defaults (the schema's are FRA's), as a nested dict; a recipe or
    # an override still wins over them.
    defaults: dict = field(default_factory=dict)
    # The config sections only this method reads, by name (FRA: {"loss": LossConfig}): added to pre-training's
    # schema, refused when set in another method's run.
    sections: dict[str, type] = field(default_factory=dict)
    check: Callable[[object], None] = lambda cfg: None  # the method's own cross-field rules; raises FraferError

    def momentum_pairs(self, model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """(momentum network, online network): ξ follows θ after every step."""
        return [(model.momentum, model.online)]


@torch.no_grad()
def update_momentum(pairs: list[tuple[nn.Module, nn.Module]], m: float) -> None:
    """ξ ← m·ξ + (1 − m)·θ over parameters only (each momentum network keeps its own batch-norm statistics)."""
    for target, source in pairs:
        torch._foreach_lerp_(list(target.parameters()), [p.detach() for p in source.parameters()], 1.0 - m)
