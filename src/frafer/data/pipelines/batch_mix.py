"""Mixing pairs of training images on the batch: mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019).

Each image is paired with another of its batch (a random permutation) and mixed with it: mixup blends the two
whole images, CutMix pastes a box of the partner into the image. `lam` is the share of every mixed image that is
its own (for CutMix, after the box is clipped to the image), and the loss is `lam · L(own target) + (1 − lam) ·
L(partner's target)`. Mixing the losses rather than the targets keeps every crowd-label mode valid (a drawn label
stays one-hot, a multilabel set stays a set), which is why torchvision's MixUp / CutMix (class ids only) are not
used. The draws use torch's global generator, which checkpoints save: a resumed run mixes as the straight one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

MIX_KINDS = ("none", "mixup", "cutmix")


def mix_batch(images: torch.Tensor, kind: str, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """images (B, C, H, W) → (mixed images, partner index (B,), lam); lam ~ Beta(alpha, alpha) before clipping."""
    if kind not in MIX_KINDS[1:]:
        raise ValueError(f"unknown mix '{kind}'; choose one of {', '.join(MIX_KINDS[1:])}")
    if alpha <= 0:
        raise ValueError(f"mix alpha must be > 0, got {alpha}")
    partner = torch.randperm(images.shape[0], device=images.device)
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if kind == "mixup":
        return images * lam + images[partner] * (1 - lam), partner, lam
    height, width = images.shape[-2:]
    top, bottom, left, right = cut_box(height, width, lam)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
    return mixed, partner, 1 - (bottom - top) * (right - left) / (height * width)


def cut_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box of area ≈ (1 − lam)·H·W, with the image's aspect ratio, centred anywhere, clipped to the image."""
    side = math.sqrt(1 - lam)
    box_h, box_w = round(height * side), round(width * side)
    cy, cx = (int(torch.randint(n, ())) for n in (height, width))
    top, left = max(cy - box_h // 2, 0), max(cx - box_w // 2, 0)
    return top, min(cy + box_h - box_h // 2, height), left, min(cx + box_w - box_w // 2, width)


def mixed_loss(criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
               targets: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """lam · criterion(logits, targets) + (1 − lam) · criterion(logits, targets[partner])."""
    return lam * criterion(logits, targets) + (1 - lam) * criterion(logits, targets[partner])
