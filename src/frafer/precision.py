"""Mixed precision: one autocast context for every forward pass (training loops and the frozen-network pass)."""

from __future__ import annotations

import contextlib

import torch


def autocast(precision: str, device: torch.device):
    """bf16 / fp16 autocast on `device`, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
