"""Expression-recognition losses, including the four FERPlus crowd-label modes (Barsoum et al. 2016).

Pure functions of tensors: logits (B, C) from a classifier, targets built on the data side
(`frafer.data.fer.crowd.crowd_targets` / `draw_label`). Computed in float32 whatever the autocast precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of logits (B, C) against class ids (B,), optionally label-smoothed."""
    return F.cross_entropy(logits.float(), labels.long(), label_smoothing=label_smoothing)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean_b −Σ_c t_bc · log softmax(logits)_bc; target (B, C) rows are distributions (not checked)."""
    _check_same_shape(logits, target)
    log_p = torch.log_softmax(logits.float(), dim=1)
    return -(target.to(log_p.dtype) * log_p).sum(dim=1).mean()


def multilabel_loss(logits: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
    """mean_b −log max_{c accepted} softmax(logits)_bc: any accepted class counts as right.

    accepted: (B, C) bool or 0/1. The max is taken over log-probabilities (log is monotone), so huge logits stay
    finite; the gradient reaches only the accepted class the model already rates highest.
    """
    _check_same_shape(logits, accepted)
    accepted = accepted.bool()
    if not accepted.any(dim=1).all():
        rows = torch.nonzero(~accepted.any(dim=1)).flatten().tolist()
        raise ValueError(f"multilabel_loss: rows {rows} accept no class; every row needs at least one")
    log_p = torch.log_softmax(logits.float(), dim=1)
    best = log_p.masked_fill(~accepted, float("-inf")).max(dim=1).values  # (B,)
    return -best.mean()


def crowd_loss(logits: torch.Tensor, target: torch.Tensor, mode: str, label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss of one crowd-label mode; target (B, C) is what the data side built for that mode.

    majority     — cross-entropy on the target's argmax (the target is one-hot).
    multilabel   — `multilabel_loss` over the classes with a positive target.
    probability  — cross-entropy on the label drawn this epoch; the target must be that one-hot draw.
    crossentropy — `soft_cross_entropy` against the truncated vote distribution.

    label_smoothing ε mixes every target with the uniform distribution, (1 − ε)·t + ε/C, as `F.cross_entropy` does
    for class ids; multilabel has no single target to smooth and refuses it.
    """
    _check_same_shape(logits, target)
    if mode == "majority":
        return classification_loss(logits, target.argmax(dim=1), label_smoothing)
    if mode == "multilabel":
        if label_smoothing:
            raise ValueError("crowd_loss 'multilabel' has no target to smooth; use label_smoothing=0")
        return multilabel_loss(logits, target > 0)
    if mode == "probability":
        # Passing the distribution itself would silently train on its argmax: insist on the drawn one-hot label.
        if not (((target == 0) | (target == 1)).all() and (target.sum(dim=1) == 1).all()):
            raise ValueError("crowd_loss 'probability' needs one-hot targets (the label drawn by draw_label)")
        return classification_loss(logits, target.argmax(dim=1), label_smoothing)
    if mode == "crossentropy":
        smoothed = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
        return soft_cross_entropy(logits, smoothed)
    raise ValueError(f"unknown crowd-label mode '{mode}'; choose one of majority, multilabel, probability, "
                     "crossentropy")


def _check_same_shape(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2 or target.shape != logits.shape:
        raise ValueError(f"expected logits (B, C) and a target of the same shape, got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
