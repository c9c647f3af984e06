"""FRA (Gao & Patras, CVPR 2024): BYOL's global branch plus facial-query region heatmaps, consistency and relation."""

from __future__ import annotations

from frafer.losses.ssl import fra_loss
from frafer.methods.base import Method
from frafer.models.fra_networks import FRA


def _trainable(model: FRA) -> list:
    return [model.online, model.global_predictor, model.local_predictor]


METHOD = Method(
    name="fra",
    summary="Facial Region Awareness: global + facial-query region branches, consistency + relation losses, LARS",
    build=lambda cfg: FRA(cfg.model, local=True),
    trainable=_trainable,
    loss=lambda out, cfg: fra_loss(out, cfg.loss),
    owns=("loss",),
)
