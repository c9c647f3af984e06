"""Speed options of a training run: the same arithmetic through faster kernels.

`train.channels_last` stores images and conv weights NHWC, the layout oneDNN (CPU) and cuDNN's tensor-core kernels
(GPU) run fastest; `train.compile` hands the model to torch.compile, which fuses the elementwise work around the
convolutions and matrix products. channels_last changes float rounding only; compiled losses match eager ones for
two steps, then part by ~1e-3 relative, which is not explained yet (tests/engine/test_speed.py), so compile is off by
default. channels_last is off by default too: with torch 2.14.1 on CPU, the backward pass of a 1x1 stride-2
convolution of few channels (8 → 16) at an odd batch size corrupts memory and aborts the process (measured: width-8
trunks at batch 7 or 9; widths 32 and up ran clean). Checkpoints are the same either way, so a run may be resumed
with the options changed.
"""

from __future__ import annotations

import torch
from torch import nn


def memory_format(run) -> torch.memory_format:
    """The layout of a run's image batches (`run` is any `train:` section)."""
    return torch.channels_last if run.channels_last else torch.contiguous_format


def prepare_model(model: nn.Module, run) -> nn.Module:
    """Apply the run's speed options to `model` in place (on its device already); returns it.

    `nn.Module.compile` keeps the module's own state-dict names, so checkpoints, bundles and DDP see the plain model.
    """
    if run.channels_last:
        model.to(memory_format=torch.channels_last)
    if run.compile:
        model.compile()
    return model


def to_device(images: torch.Tensor, device: torch.device, run) -> torch.Tensor:
    """An image batch on `device` in the run's layout (an asynchronous copy from pinned memory on CUDA)."""
    return images.to(device, non_blocking=True, memory_format=memory_format(run))


def in_layout(*images: torch.Tensor, run) -> tuple[torch.Tensor, ...]:
    """Image batches already on their device, in the run's layout (ops such as index_copy may not keep it)."""
    return tuple(x.contiguous(memory_format=memory_format(run)) for x in images)
