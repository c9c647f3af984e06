"""MoCo v2 (He et al. CVPR 2020; Chen et al. 2020): InfoNCE against a queue of momentum keys, SGD.

Its constants: 2-layer MLP head (trunk width → trunk width → 128), temperature 0.2, 65,536 queued keys, momentum
0.999 (constant), SGD lr 0.03 · batch / 256, momentum 0.9, weight decay 1e-4, cosine schedule without warm-up, and
MoCo v2's augmentation (both views alike: crop 0.2–1, jitter 0.4/0.4/0.4/0.1 at p 0.8, grey 0.2, blur 0.5).
"""

from __future__ import annotations

from frafer.losses.contrastive import info_nce
from frafer.methods.base import Method
from frafer.models.moco import MoCo

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
    owns=("moco",),
)


def _loss(out: dict, cfg):
    loss = info_nce(out["query"], out["key"], out["negatives"], cfg.moco.temperature)
    return loss, {"loss": loss.detach()}
