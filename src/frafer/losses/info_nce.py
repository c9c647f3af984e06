"""InfoNCE, MoCo's contrastive loss: each query against its own key and a queue of other images' keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """mean_b −log( exp(q_b·k_b/T) / (exp(q_b·k_b/T) + Σ_j exp(q_b·n_j/T)) ).

    query, key: (B, D) and negatives: (K, D), all L2-normalised; the key and the negatives carry no gradient.
    """
    q = query.float()
    positive = (q * key.detach().float()).sum(dim=1, keepdim=True)  # (B, 1)
    negative = q @ negatives.detach().float().t()  # (B, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
