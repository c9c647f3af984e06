"""What every training loop shares: the run record, RNG snapshots, the run-folder claim, the non-finite guard."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import shutil
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
    """Seed, versions, commit, machine and start time: written as run.json beside a run's checkpoints."""
    import torchvision

    from frafer.engine.machine import machine_info

    return {
        "seed": seed,
        "world_size": world_size,
        "device": str(device),
        "git_commit": git_commit(),
        "versions": {
            "frafer": frafer.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def resume_from(run_dir: Path) -> Path | None:
    """The newest intact checkpoint of `run_dir` (None without any), naming the damaged newer ones it skips."""
    from tqdm import tqdm

    from frafer.artifacts.checkpoint import resume_checkpoint

    ckpt, skipped = resume_checkpoint(run_dir)
    for reason in skipped:
        tqdm.write(f"skipping damaged checkpoint {reason}")
    return ckpt


def check_resumable(ckpt: Path, budget) -> dict:
    """The checkpoint's meta.json, after checking that it was planned with the same steps per epoch and length."""
    meta = json.loads((ckpt / "meta.json").read_text())
    if meta.get("steps_per_epoch") != budget.steps_per_epoch:
        raise FraferError(
            f"cannot resume {ckpt}: it was made with {meta.get('steps_per_epoch')} steps per epoch, the data and "
            f"batch size now give {budget.steps_per_epoch}"
        )
    if meta.get("total_steps", budget.total) != budget.total:
        raise FraferError(
            f"cannot resume {ckpt}: its schedules span {meta['total_steps']} steps, the config now gives "
            f"{budget.total} (train.epochs / train.steps); resume with the run's own length"
        )
    return meta


def default_run_dir(out_dir: str, name: str, config_name: str) -> Path:
    """`out_dir/name`, or `out_dir/<config stem>-<time>` when the run has no name."""
    return Path(out_dir) / (name or f"{config_name}-{time.strftime('%Y%m%d-%H%M%S')}")


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


def optimizer_step(step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor], optimizer, scaler,
                   params: list[torch.Tensor], grad_clip: float, advice: str) -> None:
    """The step every loop takes once it has a batch's loss: stop on a non-finite loss or part (`check_finite`),
    then zero the gradients, backward (scaled for fp16), clip the global norm to `grad_clip` (0 = off), step the
    optimiser and update the grad scaler (a no-op one outside fp16)."""
    check_finite(step, parts | {"loss": loss}, advice)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


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


# What a run writes into its folder; --overwrite removes exactly these (and never anything else a user keeps there).
RUN_ARTIFACTS = ("config.yaml", "run.json", "init.json", "metrics.jsonl", "results.json", "results.md", "tb",
                 "checkpoints", "reports", "model", "model_last", "features", "folds.json", "folds.md")


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool, keep: tuple[str, ...] = (),
                  clear: bool = True) -> None:
    """Refuse to start a fresh run in a folder that holds another one, unless `overwrite` (then clear it).

    `keep` names artifacts an overwrite leaves in place (a probe's feature cache, checked against its trunk and
    data before any reuse). Resuming continues the folder's own run and is always allowed. `clear=False` only
    checks: the loops refuse at once, but clear an overwritten run only when they are about to write, so a run
    that fails on its data, trunk or cache leaves the old one as it was.
    """
    run_dir = Path(run_dir)
    if resume or not run_dir.is_dir():
        return
    present = [name for name in RUN_ARTIFACTS if (run_dir / name).exists()]
    present += sorted(p.name for p in run_dir.glob("fold_*") if p.is_dir())  # the folds of a k-fold run
    if not present:
        return
    if not overwrite:
        raise FraferError(
            f"run folder {run_dir} already holds a run ({', '.join(present[:4])}); pass --overwrite to replace its "
            "results, --resume to continue it, or choose another --run-dir"
        )
    for name in present if clear else ():
        if name in keep:
            continue
        target = run_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
