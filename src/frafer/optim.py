"""LARS, its parameter groups, and the per-step schedules (learning rate, momentum-network coefficient)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from frafer.errors import FraferError

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    For a parameter w with gradient g in an adapted group:
        g ← (g + wd·w) · η‖w‖ / (‖g‖ + wd‖w‖)       (trust ratio; 1 when ‖w‖ or ‖g‖ is 0)
    Groups with `lars=False` (biases, normalisation parameters) get neither weight decay nor the trust ratio.
    The momentum buffer, as the official FRA code keeps it (`lr_in_buffer=True`, the default), accumulates
    lr-scaled steps:  v ← μ·v + lr·g;  w ← w − v.  `lr_in_buffer=False` is PyTorch SGD's form,
    v ← μ·v + g;  w ← w − lr·v; the two agree while the lr is constant and part whenever it changes (warm-up,
    cosine). Adapted gradients are rescaled in place (`p.grad` holds the update after a step), as the training
    loops clear them before the next backward anyway.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, eta: float = 1e-3,
                 lr_in_buffer: bool = True):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True))
        self.lr_in_buffer = lr_in_buffer

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                # One fused pass per operation over the whole group (many small kernels on a GPU otherwise).
                wd = group["weight_decay"]
                w_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = group["eta"] * w_norm / (g_norm + wd * w_norm)
                trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                # In place: the gradients are cleared after every step, and copies would cost one more pass
                # over every weight plus a model-sized allocation per step.
                if wd:
                    torch._foreach_add_(grads, params, alpha=wd)
                torch._foreach_mul_(grads, list(trust.unbind()))
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            torch._foreach_mul_(bufs, group["momentum"])
            if self.lr_in_buffer:
                torch._foreach_add_(bufs, grads, alpha=group["lr"])
                torch._foreach_sub_(params, bufs)
            else:
                torch._foreach_add_(bufs, grads)
                torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def split_decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(adapted, excluded): excluded = every bias (attention's `in_proj_bias` too) and every parameter of a
    normalisation module, by module type."""
    adapted, excluded, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_bias = name == "bias" or name.endswith("_bias")
            (excluded if isinstance(module, NORM_TYPES) or is_bias else adapted).append(p)
    return adapted, excluded


def build_lars(model: nn.Module, lr: float, weight_decay: float, momentum: float, eta: float,
               lr_in_buffer: bool = True, decay_only: nn.Module | None = None) -> LARS:
    """LARS over `model`; with `decay_only`, only that submodule's adapted weights take weight decay (the rest keep
    the trust ratio, at weight decay 0)."""
    adapted, excluded = split_decay_groups(model)
    decayed, undecayed = _within(adapted, decay_only)
    groups = [{"params": decayed}, {"params": excluded, "lars": False, "weight_decay": 0.0}]
    if undecayed:
        groups.append({"params": undecayed, "weight_decay": 0.0})
    return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lr_in_buffer=lr_in_buffer)


def _within(params: list[nn.Parameter], module: nn.Module | None) -> tuple[list, list]:
    """(params of `module`, the others); every param is of `module` when it is None."""
    if module is None:
        return params, []
    inside = {id(p) for p in module.parameters()}
    return [p for p in params if id(p) in inside], [p for p in params if id(p) not in inside]


def build_pretrain_optimizer(o, model: nn.Module, lr: float, trunk: nn.Module) -> torch.optim.Optimizer:
    """The pre-training optimiser an OptimConfig names: LARS with its bias / norm exclusion, or MoCo v2's SGD
    (momentum, weight decay on every parameter, as the MoCo code). Every group peaks at `lr` (its `base_lr`).
    With `optim.weight_decay_scope: trunk`, only `trunk`'s parameters take weight decay."""
    decay_only = trunk if o.weight_decay_scope == "trunk" else None
    if o.optimizer == "sgd":
        decayed, undecayed = _within([p for p in model.parameters() if p.requires_grad], decay_only)
        groups = [{"params": decayed}] + ([{"params": undecayed, "weight_decay": 0.0}] if undecayed else [])
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.sgd_momentum, weight_decay=o.weight_decay)
    else:
        optimizer = build_lars(model, lr, o.weight_decay, o.lars_momentum, o.lars_eta, o.lars_lr_in_buffer,
                               decay_only)
    for group in optimizer.param_groups:
        group["base_lr"] = lr
    return optimizer


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up from 0 to base_lr over warmup_steps, then cosine from base_lr to min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def momentum_at(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """m_k = final − (final − base)·(cos(π·k/K) + 1)/2: base at k = 0, final at k = K."""
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def schedule_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int,
                min_lr: float = 0.0) -> float:
    """The one learning-rate schedule of every loop: each param group's lr at `step` is min_lr + (base_lr − min_lr)
    times `lr_at`'s warm-up-then-cosine factor, base_lr being the group's own peak (a trunk and a head may differ).
    Returns the first group's lr, the one logged."""
    factor = lr_at(step, total_steps, warmup_steps, 1.0, 0.0)
    for group in optimizer.param_groups:
        group["lr"] = min_lr + (group["base_lr"] - min_lr) * factor
    return optimizer.param_groups[0]["lr"]


@dataclass(frozen=True)
class Budget:
    """A run's length in steps, and the steps its schedules span (warm-up, cosine, momentum: all of `total`)."""

    steps_per_epoch: int
    total: int  # the run's last step: every schedule ends exactly here
    warmup: int
    stop: int  # where this invocation stops: total, or an earlier train.max_steps interruption

    def epoch(self, step: int) -> int | float:
        """Epochs done after `step` steps: an int at an epoch's end, a fraction inside one."""
        whole, rest = divmod(step, self.steps_per_epoch)
        return whole if rest == 0 else round(step / self.steps_per_epoch, 4)

    @property
    def epochs(self) -> float:
        return self.total / self.steps_per_epoch

    def ends_epoch(self, step: int) -> bool:
        """A whole epoch just finished, or the run's last (possibly partial) epoch did."""
        return step % self.steps_per_epoch == 0 or step == self.total

    def due(self, step: int, every_epochs: int) -> bool:
        """After every `every_epochs` whole epochs (step 0 included) and at the run's end, a partial epoch too."""
        whole, rest = divmod(step, self.steps_per_epoch)
        return step == self.total or (rest == 0 and whole % every_epochs == 0)


def plan_budget(num_samples: int, batch_size: int, epochs: float, steps: int, warmup_epochs: float,
                warmup_steps: int = -1, max_steps: int = 0, where: str = "train") -> Budget:
    """The run length given in steps (`steps` > 0) or in possibly fractional epochs, with its warm-up.

    A warm-up longer than the run would never reach the peak learning rate: it is an error naming the keys.
    """
    steps_per_epoch = num_samples // batch_size
    if steps_per_epoch < 1:
        raise FraferError(f"config key '{where}.batch_size': {batch_size} is larger than the {num_samples} "
                          "training samples; not one full batch per epoch")
    total = steps if steps > 0 else max(1, int(epochs * steps_per_epoch + 0.5))  # half-way rounds up
    warmup = warmup_steps if warmup_steps >= 0 else round(warmup_epochs * steps_per_epoch)
    if warmup > total:
        key, advice = (("optim.warmup_steps", "lower it") if warmup_steps >= 0 else
                       ("optim.warmup_epochs", "lower optim.warmup_epochs or set optim.warmup_steps"))
        raise FraferError(f"config key '{key}': a warm-up of {warmup} steps is longer than the {total}-step run "
                          f"({steps_per_epoch} steps an epoch); {advice}")
    return Budget(steps_per_epoch, total, warmup, min(total, max_steps) if max_steps else total)
