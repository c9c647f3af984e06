"""BYOL's loss (Grill et al. 2020): the normalised regression of each view's prediction onto the other view's target.

FRA's global (instance) term is this same loss (`frafer.losses.fra_loss`). Computed in float32 whatever the autocast
precision of the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised squared error D(p, z) = 2 − 2·cos(p, z) along the last dim; z is a stop-gradient target."""
    return 2.0 - 2.0 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)


def instance_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_inst = mean_b D(G_g(z_g^θ(v)), z_g^ξ(w)); pred, target: (B, D)."""
    return regression(pred, target).mean()


def byol_loss(out: dict[str, list]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BYOL's objective Σ_{(v,w) ∈ {(1,2),(2,1)}} L_inst from the global branch's outputs, and its parts."""
    inst = sum(instance_loss(out["pred_global"][v], out["target_global"][w]) for v, w in ((0, 1), (1, 0)))
    return inst, {"inst": inst.detach(), "loss": inst.detach()}
