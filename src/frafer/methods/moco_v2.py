"""MoCo v2 (He et al. CVPR 2020; Chen et al. 2020): InfoNCE against a queue of momentum keys, SGD.

Its constants: 2-layer MLP head (trunk width → trunk width → 128), temperature 0.2, 65,536 queued keys, momentum
0.999 (constant), SGD lr 0.03 · batch / 256, momentum 0.9, weight decay 1e-4, cosine schedule without warm-up, and
MoCo v2's augmentation (both views alike: crop 0.2–1, jitter 0.4/0.4/0.4/0.1 at p 0.8, grey 0.2, blur 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from frafer.config.schema import option
from frafer.errors import FraferError
from frafer.losses.info_nce import info_nce
from frafer.methods.base import Method
from frafer.models.moco import MoCo


@dataclass
class MocoConfig:
    """MoCo v2's `moco:` section."""

    dim: int = option(128, "MoCo v2 embedding width", lo=1)
    hidden_dim: int = option(0, "hidden width of the 2-layer projection head (0 = the trunk's width: 2048 on a "
                                "ResNet-50)", lo=0)
    queue_size: int = option(65536, "keys kept in the queue of negatives", lo=1)
    temperature: float = option(0.2, "InfoNCE temperature", lo=0, lo_open=True)
    bn_batch: int = option(32, "images per batch-norm batch for shuffle-BN (MoCo v2: 256 over 8 GPUs = 32); must "
                               "divide the per-process batch", lo=1)


def _check(cfg) -> None:
    if cfg.train.sync_bn:
        raise FraferError("config key 'train.sync_bn': MoCo v2 relies on shuffle-BN (moco.bn_batch); batch-norm "
                          "over the global batch would let keys and queries share statistics, so it stays off")

METHOD = Method(
    name="moco_v2",
    summary="MoCo v2: InfoNCE against a queue of momentum-encoder keys, shuffle-BN, SGD",
    build=lambda cfg: MoCo(cfg.model, cfg.moco, seed=cfg.train.seed),
    trainable=lambda model: [model.online],
    loss=lambda out, cfg: _loss(out, cfg),
    defaults={
        "optim": {"optimizer": "sgd", "base_lr": 0.03, "reference_batch": 256, "scale_lr": True,
                  "weight_decay": 1e-4, "warmup_epochs": 0.0, "ema_base": 0.999, "ema_final": 0.999},
        "aug": {"jitter": [0.4, 0.4, 0.4, 0.1], "blur_p": [0.5, 0.5], "solarize_p": [0.0, 0.0]},
        "train": {"sync_bn": False},
    },
    sections={"moco": MocoConfig},
    check=_check,
)


def _loss(out: dict, cfg):
    loss = info_nce(out["query"], out["key"], out["negatives"], cfg.moco.temperature)
    return loss, {"loss": loss.detach()}
