"""FRA (Gao & Patras, CVPR 2024): BYOL's global branch plus facial-query region heatmaps, consistency and relation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frafer.config.schema import option
from frafer.errors import FraferError
from frafer.losses.fra_loss import fra_loss
from frafer.methods.base import Method
from frafer.models.fra_networks import FRA


@dataclass
class LossConfig:
    """FRA's `loss:` section (docs/method.md §2)."""

    lambda_c: float = option(0.5, "weight of the global (instance) term in L_c (1 = no local term)", lo=0, hi=1)
    lambda_r: float = option(0.1, "weight of the relation loss L_r", lo=0)
    decorrelation: bool = option(True, "add the official code's region decorrelation term to L_local")
    decorrelation_weight: float = option(0.02, "weight of the decorrelation term", lo=0)
    student_temperature: float = option(0.1, "softmax temperature of online assignments", lo=0, lo_open=True)
    teacher_temperature: float = option(0.04, "softmax temperature of momentum assignments", lo=0, lo_open=True)
    sinkhorn_iterations: int = option(3, "Sinkhorn-Knopp iterations on teacher assignments", lo=0)
    mean_entropy_weight: float = option(1.0, "weight of the mean-entropy term in the relation loss", lo=0)
    relation_views: Literal["mean", "sum"] = option("mean", "combine R(view1), R(view2): mean (code) or sum (paper)")
    diversity_mode: Literal["subtract", "add"] = option("subtract",
                                                        "diversity term: L - lambda*delta or L + lambda*delta")
    diversity_weight: float = option(0.0, "lambda of the diversity term (0 = off; report: 0.01 subtract)", lo=0)


def _check(cfg) -> None:
    if cfg.loss.lambda_c == 1.0 and cfg.loss.lambda_r == 0.0 and not cfg.loss.diversity_weight:
        raise FraferError("config keys 'loss.lambda_c=1' and 'loss.lambda_r=0' leave FRA without its local branch: "
                          "that is BYOL; set method: byol (loss weights no longer choose the method)")


def _trainable(model: FRA) -> list:
    return [model.online, model.global_predictor, model.local_predictor]


METHOD = Method(
    name="fra",
    summary="Facial Region Awareness: global + facial-query region branches, consistency + relation losses, LARS",
    build=lambda cfg: FRA(cfg.model, local=True),
    trainable=_trainable,
    loss=lambda out, cfg: fra_loss(out, cfg.loss),
    sections={"loss": LossConfig},
    check=_check,
)
