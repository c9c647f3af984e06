"""Collectives that keep gradients right, and no-ops when not distributed.

FRA couples the images of the global batch (shared mask mean, Sinkhorn sums, mean entropy, synchronised batch-norm).
Each such sum must (a) cover every process and (b) pass gradients back to every process's inputs. The official
code all-reduces, in place, tensors that need gradients, which silently drops the cross-process part of the
gradient. Here `all_reduce_sum` is an autograd function: forward sums over processes, backward sums the incoming
gradients over processes (the adjoint of a sum that every process uses).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()  # never reduce a tensor autograd may still need, in place
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over all processes, differentiable; `x` itself outside distributed runs."""
    if not is_distributed():
        return x
    if x.requires_grad:
        return _AllReduceSum.apply(x)
    out = x.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def global_count(n: int, device: torch.device | str = "cpu") -> int:
    """Number of items over all processes (e.g. images in the global batch)."""
    if not is_distributed():
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's `x` concatenated along dim 0 in rank order, without gradient (keys, shuffled inputs).

    Only for tensors no gradient flows through: MoCo's key encoder inputs and outputs and its queue entries.
    All processes must pass tensors of the same shape.
    """
    if not is_distributed():
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)
