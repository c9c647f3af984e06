"""FRA's self-supervised losses: semantic consistency (global + local), semantic relation, diversity.

Pure functions of tensors (sums over the global batch go through `frafer.collectives`, a no-op on one process).
Everything is computed in float32 whatever the autocast precision of the forward pass. The global term is BYOL's
(`frafer.losses.byol_loss.instance_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from frafer.collectives import all_reduce_sum, global_count
from frafer.losses.byol_loss import instance_loss, regression


def local_loss(pred: torch.Tensor, target: torch.Tensor, decorrelation_weight: float = 0.02) -> torch.Tensor:
    """L_local on region embeddings pred, target: (B, N, D); region m matches region m by query index.

    The decorrelation term (official code) adds weight · mean_{b,m} (1/N) Σ_{n≠m} cos(p_m, z_n)².
    """
    loss = regression(pred, target).mean()
    if decorrelation_weight > 0:
        p = F.normalize(pred.float(), dim=-1)
        z = F.normalize(target.detach().float(), dim=-1)
        cos2 = torch.einsum("bmd,bnd->bmn", p, z).pow(2)  # (B, N, N)
        n = cos2.shape[1]
        off_diagonal = cos2.sum(dim=2) - torch.diagonal(cos2, dim1=1, dim2=2)  # (B, N)
        loss = loss + decorrelation_weight * (off_diagonal / n).mean()
    return loss


@torch.no_grad()
def sinkhorn(probs: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Balance assignments over the global batch: (P, N) probabilities → (P, N), each row summing to 1.

    Sinkhorn-Knopp alternates normalising regions (each gets mass 1/N over every process's pixels) and pixels
    (each gets mass 1/P); the result is rescaled so each pixel's assignment is a distribution.
    """
    q = probs.float().t()  # (N, P_local)
    n_regions = q.shape[0]
    n_pixels = global_count(q.shape[1], q.device)
    q = q / all_reduce_sum(q.sum())
    for _ in range(iterations):
        q = q / all_reduce_sum(q.sum(dim=1, keepdim=True)) / n_regions
        q = q / q.sum(dim=0, keepdim=True) / n_pixels
    return (q * n_pixels).t()


def _flatten_pixels(scores: torch.Tensor) -> torch.Tensor:
    """(B, N, h, w) → (B·h·w, N)."""
    return scores.float().permute(0, 2, 3, 1).reshape(-1, scores.shape[1])


def relation_loss(
    online_scores: torch.Tensor,
    target_scores: torch.Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    sinkhorn_iterations: int = 3,
    mean_entropy_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """R(v) for one view: online assignments learn the balanced momentum assignments of the same view.

    R = mean_pixels CE(ŝ, s) + w·[log N − H(mean_pixels s)], s = softmax(S^θ/τ_s), ŝ = Sinkhorn(softmax(S^ξ/τ_t)).
    Scores: (B, N, h, w). Returns R and its two parts.
    """
    logits = _flatten_pixels(online_scores) / student_temperature  # (P, N)
    log_s = torch.log_softmax(logits, dim=1)
    with torch.no_grad():
        teacher_probs = torch.softmax(_flatten_pixels(target_scores) / teacher_temperature, dim=1)  # (P, N)
        teacher = sinkhorn(teacher_probs, sinkhorn_iterations)
    cross_entropy = -(teacher * log_s).sum(dim=1).mean()
    n = logits.shape[1]
    total_pixels = global_count(logits.shape[0], logits.device)
    mean_s = all_reduce_sum(log_s.exp().sum(dim=0)) / total_pixels  # (N,) over the global batch
    entropy = -(mean_s * torch.log(mean_s.clamp_min(1e-12))).sum()
    mean_entropy = math.log(n) - entropy
    return cross_entropy + mean_entropy_weight * mean_entropy, {"rel_ce": cross_entropy, "rel_me": mean_entropy}


def diversity(heatmaps: torch.Tensor) -> torch.Tensor:
    """δ = mean_b H(M̄_b), the entropy of each image's average attention over regions; heatmaps: (B, N, h, w)."""
    m_bar = heatmaps.float().mean(dim=(2, 3))  # (B, N)
    return -(m_bar * torch.log(m_bar.clamp_min(1e-12))).sum(dim=1).mean()


def heatmap_sharpness(heatmaps: torch.Tensor) -> dict[str, torch.Tensor]:
    """How peaked the region heatmaps are, for logging; heatmaps: (B, N, h, w), a distribution over N per pixel.

    hm_entropy: mean per-pixel entropy over regions (log N when uniform, 0 when one region takes the pixel);
    hm_maxprob: mean per-pixel largest region probability (1/N when uniform, 1 when peaked).
    """
    p = heatmaps.detach().float()
    return {"hm_entropy": -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1).mean(),
            "hm_maxprob": p.max(dim=1).values.mean()}


def fra_loss(out: dict[str, list], cfg) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total FRA objective from `FRA.forward` outputs and a LossConfig.

    L = Σ_{(v,w) ∈ {(1,2),(2,1)}} [λ_c·L_inst + (1−λ_c)·L_local] + λ_r·L_r ∓ λ_div·δ.
    Returns the loss and its parts (detached) for logging, with the online heatmaps' region usage δ and sharpness
    (`heatmap_sharpness`) averaged over the two views whatever the weights.
    """
    pairs = ((0, 1), (1, 0))
    inst = sum(instance_loss(out["pred_global"][v], out["target_global"][w]) for v, w in pairs)
    parts = {"inst": inst}
    consistency = cfg.lambda_c * inst
    if cfg.lambda_c < 1.0:
        dec = cfg.decorrelation_weight if cfg.decorrelation else 0.0
        local = sum(local_loss(out["pred_regions"][v], out["target_regions"][w], dec) for v, w in pairs)
        consistency = consistency + (1.0 - cfg.lambda_c) * local
        parts["local"] = local
    total = consistency
    if cfg.lambda_r > 0:
        per_view = [
            relation_loss(
                out["online_scores"][v], out["target_scores"][v], cfg.student_temperature,
                cfg.teacher_temperature, cfg.sinkhorn_iterations, cfg.mean_entropy_weight,
            )
            for v in (0, 1)
        ]
        scale = 0.5 if cfg.relation_views == "mean" else 1.0
        relation = scale * (per_view[0][0] + per_view[1][0])
        total = total + cfg.lambda_r * relation
        parts["relation"] = relation
        parts["rel_ce"] = scale * (per_view[0][1]["rel_ce"] + per_view[1][1]["rel_ce"])
        parts["rel_me"] = scale * (per_view[0][1]["rel_me"] + per_view[1][1]["rel_me"])
    maps = out.get("online_heatmaps")
    if maps is not None:
        # δ is always logged, differentiated only when the term uses it (and never inside a caller's no_grad)
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.diversity_weight > 0):
            delta = 0.5 * (diversity(maps[0]) + diversity(maps[1]))
        if cfg.diversity_weight > 0:
            sign = -1.0 if cfg.diversity_mode == "subtract" else 1.0
            total = total + sign * cfg.diversity_weight * delta
        parts["diversity"] = delta
        sharp = [heatmap_sharpness(m) for m in maps]
        parts |= {k: 0.5 * (sharp[0][k] + sharp[1][k]) for k in sharp[0]}
    parts = {k: v.detach() for k, v in parts.items()}
    parts["loss"] = total.detach()
    return total, parts
