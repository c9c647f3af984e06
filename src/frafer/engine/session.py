"""One engine for every training loop: the session, the run folder, DDP, checkpoints, resume and Ctrl-C.

Pre-training, fine-tuning and the faithful probe each read as their set-up plus an epoch of steps; everything
around those steps is here, written once:

    with training_session(cfg.train.device, cfg.train.precision) as ctx:     # DDP set-up, teardown, precision
        ...build data, model, optimiser...
        step, meta = restore_state(common.resume_from(run_dir), model, optimizer, scaler, ctx.device, budget)
        write_run_record(run_dir, cfg, ctx, resume, overwrite, info)        # config.yaml, run.json
        net = wrap_ddp(model, ctx)
        with checkpoint_on_interrupt(ctx, save, logger, result, lambda: step):  # Ctrl-C → a checkpoint, exact
            while step < budget.stop:
                train_one_epoch()
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from frafer.artifacts.checkpoint import WEIGHTS, load_state, load_weights, save_checkpoint
from frafer.config.schema import dump_yaml
from frafer.engine import common, distributed
from frafer.errors import FraferError
from frafer.files import atomic_write_text


@contextlib.contextmanager
def training_session(device: str, precision: str) -> Iterator[distributed.Context]:
    """Device and process-group set-up (a no-op on one process), the precision check, and teardown always."""
    ctx = distributed.setup(device)
    try:
        if precision == "fp16" and ctx.device.type != "cuda":
            raise FraferError("config key 'train.precision': fp16 needs a GPU; use bf16 or fp32 on the CPU")
        yield ctx
    finally:
        distributed.teardown()


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool, ctx: distributed.Context) -> None:
    """Refuse a fresh run into a folder holding another (unless `overwrite`), before anything is built.

    Every process checks, then all wait for each other: the main process must not write the new run's first files
    while another is still looking, or that one would find them and refuse (seen under load with torchrun).
    """
    common.claim_run_dir(run_dir, resume, overwrite, clear=False)
    distributed.barrier()


def write_run_record(run_dir: Path, cfg, ctx: distributed.Context, resume: bool, overwrite: bool,
                     info: dict, files: dict[str, str] | None = None, keep: tuple[str, ...] = ()) -> None:
    """Claim the folder (an overwritten run is cleared only now, when everything is set; `keep` survives), then
    write config.yaml and, for a fresh run, run.json (seed, versions, commit, machine + `info`) and `files`."""
    if not ctx.is_main:
        return
    common.claim_run_dir(run_dir, resume, overwrite, keep=keep)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    if resume and (run_dir / "run.json").exists():
        return
    for name, text in (files or {}).items():
        atomic_write_text(run_dir / name, text)
    record = info | common.run_info(cfg.train.seed, ctx.world_size, ctx.device)
    atomic_write_text(run_dir / "run.json", json.dumps(record, indent=2))


def wrap_ddp(model: torch.nn.Module, ctx: distributed.Context, broadcast_buffers: bool = True) -> torch.nn.Module:
    """The model under DistributedDataParallel when there are several processes; the model itself otherwise."""
    if ctx.world_size == 1:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=broadcast_buffers)


def save_state(run_dir: Path, step: int, model, optimizer, scaler, ctx: distributed.Context, meta: dict,
               keep: int, ema: torch.nn.Module | None = None) -> None:
    """Checkpoint `step` (weights, optimiser, grad scaler, RNG, the weights' moving average if kept; `meta` beside
    them) from the main process."""
    if ctx.is_main:
        state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                 "rng": common.rng_state(ctx.device)}
        if ema is not None:
            state["ema"] = ema.state_dict()
        save_checkpoint(run_dir / "checkpoints", step, model.state_dict(), state, {"step": step, **meta}, keep)
    distributed.barrier()


def restore_state(ckpt: Path, model, optimizer, scaler, device: torch.device, budget,
                  check: Callable[[dict], None] = lambda meta: None,
                  may_lack: tuple[str, ...] = (), ema: torch.nn.Module | None = None) -> tuple[int, dict]:
    """Load checkpoint `ckpt` into model, optimiser, grad scaler, RNG (and `ema`, the weights' moving average, which
    the checkpoint must then hold); returns (its step, its meta).

    The checkpoint must have been planned with the same run length (`budget`) and pass `check(meta)` (a loop's
    own conditions: layout, method); its weights must fit the model exactly, except that buffers whose names end
    in one of `may_lack` (state added since, rebuilt by training itself) may be missing.
    """
    meta = common.check_resumable(ckpt, budget)
    check(meta)
    try:
        missing, unexpected = model.load_state_dict(load_weights(ckpt / WEIGHTS), strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise FraferError(f"checkpoint {ckpt} does not match the model ({str(err).splitlines()[-1].strip()})") from None
    lacking = [k for k in missing if k.endswith(may_lack)] if may_lack else []
    missing = [k for k in missing if k not in lacking]
    if lacking:
        tqdm.write(f"{ckpt} predates {', '.join(sorted({k.rsplit('.', 1)[-1] for k in lacking}))}: "
                   "they start again from the next batch")
    if missing or unexpected:
        raise FraferError(f"checkpoint {ckpt} does not match the configured model "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    state = load_state(ckpt / "state.pt")
    if ema is not None:
        if "ema" not in state:
            raise FraferError(f"checkpoint {ckpt} was saved without a moving average of the weights: resume it with "
                              "the moving average off, as it was started")
        ema.load_state_dict(state["ema"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as err:  # other parameter groups: e.g. optim.weight_decay_scope changed since the start
        raise FraferError(f"checkpoint {ckpt} holds the state of another optimiser layout ({err}); resume with "
                          "the optimiser settings the run started with (optim.optimizer, optim.weight_decay_scope)"
                          ) from None
    scaler.load_state_dict(state["scaler"])
    common.set_rng_state(state["rng"], device)
    tqdm.write(f"resuming from {ckpt} at step {state['step']}")
    return int(state["step"]), meta


def epoch_bar(loader, sampler, step: int, budget, ctx: distributed.Context, label: str = "") -> tqdm:
    """Position the sampler at `step` (mid-epoch after a resume) and return the progress bar over its epoch."""
    epoch, start_batch = divmod(step, budget.steps_per_epoch)
    sampler.set_epoch(epoch, start_batch)
    desc = f"{label} epoch {epoch + 1}/{math.ceil(budget.epochs)}".lstrip()
    return tqdm(loader, total=len(sampler), desc=desc, disable=not ctx.is_main, dynamic_ncols=True, leave=False)


@contextlib.contextmanager
def checkpoint_on_interrupt(ctx: distributed.Context, save: Callable[[str], None], logger, result,
                            step: Callable[[], int]) -> Iterator[None]:
    """Ctrl-C inside the block: mark the result interrupted, save a checkpoint to resume from, re-raise.

    The steps themselves run under `common.whole_step`, so the interrupt lands between steps and the checkpoint
    holds whole steps only: the resumed run is the uninterrupted one.
    """
    try:
        yield
    except KeyboardInterrupt:
        result.stopped = "interrupted"
        if ctx.is_main:
            tqdm.write(f"interrupted at step {step()}: saving a checkpoint to resume from")
        save("interrupted")
        logger.close()
        raise
