"""DMUE's loss terms (She et al., CVPR 2021), each a plain function of tensors; docs/method.md §4 has the facts.

C classes; auxiliary branch c is a (C−1)-way classifier over the classes other than c, in increasing order
(`other_classes`). `frafer.models.dmue_network.DMUENet` runs the branches; `dmue_loss` combines their outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ramp_weights(epoch: int, switch_epoch: float) -> tuple[float, float]:
    """(w_u, w_d) at epoch e: w_u = exp(−5(1 − e/a)²) before the switch epoch a, then 1; w_d = 1, then exp(−(1 − a/e)²).

    Early on the auxiliary branches (w_d) dominate, so the mined distributions are worth learning from when the
    target branch's terms (w_u) reach full weight.
    """
    a = float(switch_epoch)
    if epoch < a:
        return math.exp(-5.0 * (1.0 - epoch / a) ** 2), 1.0
    return 1.0, math.exp(-((1.0 - a / epoch) ** 2))


def other_classes(num_classes: int, device=None) -> torch.Tensor:
    """(C, C−1): row c lists the classes of auxiliary branch c, every class but c in increasing order."""
    grid = torch.arange(num_classes, device=device).expand(num_classes, num_classes)
    keep = ~torch.eye(num_classes, dtype=torch.bool, device=device)
    return grid[keep].view(num_classes, num_classes - 1)


def to_branch_labels(labels: torch.Tensor, branch: int) -> torch.Tensor:
    """Labels (none equal to `branch`) as indices into auxiliary branch `branch`'s C−1 outputs."""
    return labels - (labels > branch).long()


def mined_distribution(own_branch_logits: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       temperature: float) -> torch.Tensor:
    """Latent distributions (B, C): softmax(z / T) of each sample's own-class auxiliary branch (B, C−1), detached,
    placed at the other classes, with 0 at the annotated class; each row sums to 1."""
    probs = F.softmax(own_branch_logits.detach().float() / temperature, dim=1)
    probs = probs / probs.sum(dim=1, keepdim=True)
    index = other_classes(num_classes, labels.device)[labels]  # (B, C−1)
    return torch.zeros(len(labels), num_classes, device=probs.device).scatter_(1, index, probs)


def soft_loss(target_logits: torch.Tensor, labels: torch.Tensor, mined: torch.Tensor) -> torch.Tensor:
    """L_soft: MSE between the target branch's softmax, annotated class zeroed and the rest renormalised, and the
    mined distribution."""
    probs = F.softmax(target_logits.float(), dim=1)
    probs = probs * (1.0 - F.one_hot(labels, probs.shape[1]).to(probs.dtype))
    probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return F.mse_loss(probs, mined)


def weighted_cross_entropy(target_logits: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CE_weighted: cross-entropy of s × logits, s (B,) in (0, 1) acting as each sample's inverse temperature."""
    return F.cross_entropy(scale.float()[:, None] * target_logits.float(), labels)


def similarity_preserving_loss(branch_logits: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """L_sp of one auxiliary branch: MSE between the row-normalised Gram matrix of its logits (n, C−1) and that of
    the target branch's features of the same n samples (n, D); the target side is the reference (detached)."""
    z = branch_logits.float()
    f = target_features.detach().float()
    return F.mse_loss(F.normalize(z @ z.T, dim=1), F.normalize(f @ f.T, dim=1))


def dmue_loss(out: dict, labels: torch.Tensor, epoch: int, cfg) -> tuple[torch.Tensor, dict]:
    """L = w_u(e)·[CE_weighted + ω·L_soft + γ·L_sp] + w_d(e)·L_aux from `DMUENet`'s outputs (cfg: a DMUEConfig).

    Every auxiliary branch saw the whole batch, but its losses use only the samples not of its class; its outputs
    on its own class are the mined distributions, detached. A batch where some class has fewer than 2 samples
    (out["pairs"] false) has no pairwise terms: its L_sp is 0 and its uncertainty scale 1.
    """
    features, target_logits, pairs = out["features"], out["target_logits"], out["pairs"]
    c_count = target_logits.shape[1]
    own_logits = target_logits.new_zeros(len(labels), c_count - 1, dtype=torch.float32)  # own-class branch outputs
    aux_terms, sp_terms = [], []
    for c, logits in enumerate(out["aux_logits"]):  # (B, C−1) each
        mine = labels == c
        own_logits[mine] = logits[mine].detach().float()
        rest = ~mine
        if rest.any():
            aux_terms.append(F.cross_entropy(logits[rest].float(), to_branch_labels(labels[rest], c)))
            if pairs:
                sp_terms.append(similarity_preserving_loss(logits[rest], features[rest]))
    mined = mined_distribution(own_logits, labels, c_count, cfg.temperature)
    zero = target_logits.new_zeros(())
    parts = {
        "wce": weighted_cross_entropy(target_logits, labels, out["scale"]),
        "soft": soft_loss(target_logits, labels, mined),
        "sp": torch.stack(sp_terms).mean() if sp_terms else zero,
        "aux": torch.stack(aux_terms).mean() if aux_terms else zero,
    }
    w_u, w_d = ramp_weights(epoch, cfg.switch_epoch)
    loss = w_u * (parts["wce"] + cfg.omega * parts["soft"] + cfg.gamma * parts["sp"]) + w_d * parts["aux"]
    logged = {k: v.detach() for k, v in parts.items()}
    logged |= {"scale": out["scale"].detach().mean(), "pairs": torch.tensor(float(pairs)), "w_u": torch.tensor(w_u),
               "w_d": torch.tensor(w_d)}
    return loss, logged
