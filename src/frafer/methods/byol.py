"""BYOL (Grill et al. 2020): FRA's global branch alone, the baseline every FRA result is compared against.

Same trunk, projector, predictor, optimiser and momentum schedule as FRA; no local branch is built.
"""

from __future__ import annotations

from frafer.losses.byol_loss import byol_loss
from frafer.methods.base import Method
from frafer.models.fra_networks import FRA

METHOD = Method(
    name="byol",
    summary="BYOL: FRA's global branch only (online + predictor against a momentum network), LARS",
    build=lambda cfg: FRA(cfg.model, local=False),
    trainable=lambda model: [model.online, model.global_predictor],
    loss=lambda out, cfg: byol_loss(out),
)
