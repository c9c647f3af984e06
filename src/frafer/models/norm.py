"""Batch-norm whose statistics span the global batch, on any device, with correct gradients.

torch's SyncBatchNorm only runs on accelerators; this module does the same job everywhere (CPU / gloo included) with
one differentiable all-reduce of [Σx, Σx²] per call. `convert_to_global_bn` picks torch's fused SyncBatchNorm on
CUDA and this module elsewhere.
"""

from __future__ import annotations

import torch
from torch import nn

from frafer.collectives import all_reduce_sum, is_distributed


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm{1,2}d with statistics over the batch of every process (channel dim 1)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        local_n = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        sums = torch.cat([xf.sum(dims), (xf * xf).sum(dims), local_n.view(1)])
        sums = all_reduce_sum(sums)
        c = x.shape[1]
        n = sums[-1]
        mean = sums[:c] / n
        var = (sums[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, used for normalising
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        return y.to(x.dtype)


def convert_to_global_bn(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by a global-batch one: torch's SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _swap_bn(module)


def _swap_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight = module.weight
            new.bias = module.bias
        if module.track_running_stats:
            new.running_mean = module.running_mean
            new.running_var = module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new
    for name, child in module.named_children():
        module.add_module(name, _swap_bn(child))
    return module
