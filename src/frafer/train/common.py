"""What every training loop shares: the run record, autocast, RNG snapshots and the non-finite-loss guard."""

from __future__ import annotations

import contextlib
import math
import platform
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import torch

import frafer
from frafer.errors import FraferError


class NonFiniteLoss(FraferError):
    """The loss became NaN or infinite; the run stops and its last good checkpoint is kept."""


def git_commit() -> str:
    """The commit of the frafer checkout running this code, or 'unknown' (installed without git)."""
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_info(seed: int, world_size: int, device: torch.device) -> dict:
    """Seed, versions, commit and start time: written as run.json beside a run's checkpoints."""
    import torchvision

    return {
        "seed": seed,
        "world_size": world_size,
        "device": str(device),
        "git_commit": git_commit(),
        "versions": {
            "frafer": frafer.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def default_run_dir(out_dir: str, name: str, config_name: str) -> Path:
    """`out_dir/name`, or `out_dir/<config stem>-<time>` when the run has no name."""
    return Path(out_dir) / (name or f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def autocast(precision: str, device: torch.device):
    """bf16 / fp16 autocast on `device`, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def check_finite(step: int, parts: dict[str, torch.Tensor], advice: str) -> None:
    """Raise NonFiniteLoss naming the first non-finite loss part (one device sync per step, not one per part)."""
    if torch.stack([v.detach().float() for v in parts.values()]).isfinite().all():
        return
    for name, value in parts.items():
        if not math.isfinite(float(value)):
            raise NonFiniteLoss(
                f"loss part '{name}' is {float(value)} at step {step + 1}; stopping (the last checkpoint is intact). "
                + advice
            )


@contextlib.contextmanager
def whole_step():
    """Hold back SIGINT (Ctrl-C) until the block ends, then deliver it to the handler that was in place.

    Interrupted mid-step, the checkpoint would hold batch-norm statistics of a forward pass whose update was never
    applied, and the resumed run would repeat that forward: no longer exact. Only the main thread can do this.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if received:
        signal.raise_signal(signal.SIGINT)
