"""Pre-training (FRA, BYOL, MoCo v2): one loop with its schedules, momentum update, checkpoints and monitor visible.

The method (`frafer.methods`) supplies the model, what trains, the loss and the momentum pairs; this loop is the
same for all of them.

`pretrain(cfg)` is the one public entry; the CLI and the tests call it. Read top to bottom:
data → model → optimiser → (resume) → epochs of steps → checkpoint → result.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from frafer.config.loader import PretrainConfig
from frafer.data.pipelines.batch_augment import BatchedViewColour
from frafer.data.pipelines.sampling import EpochBatchSampler
from frafer.data.pipelines.ssl_dataset import SkipReport, UnlabelledImages, collate_two_views
from frafer.data.pipelines.transforms import TwoViewTransform
from frafer.data.readers.folders import list_images
from frafer.data.readers.pairs import read_pairs
from frafer.data.readers.vggface2 import list_vggface2
from frafer.data.synthetic.renderer import SyntheticFaces
from frafer.engine import common, distributed, machine, session, speed
from frafer.engine.common import NonFiniteLoss
from frafer.engine.metrics_log import MetricsLogger
from frafer.errors import FraferError
from frafer.eval.knn import KNNMonitor
from frafer.eval.verification import verify_trunk
from frafer.methods import get_method
from frafer.methods.base import Method, update_momentum
from frafer.models.norm import convert_to_global_bn
from frafer.optim import Budget, build_pretrain_optimizer, momentum_at, plan_budget, schedule_lr
from frafer.precision import autocast

_NAN_ADVICE = "Lower optim.base_lr, raise optim.warmup_epochs or use train.precision=fp32."

__all__ = ["NonFiniteLoss", "PretrainResult", "default_run_dir", "pretrain"]

# The model and optimiser layout a checkpoint's state belongs to. 2: DETR's query decoder, bias-free projector
# outputs, the official LARS buffer. Layout-1 checkpoints (no "layout" in meta.json) cannot be resumed: their
# decoder, projectors and momentum buffers mean something else (their trunks still initialise fine-tuning).
CHECKPOINT_LAYOUT = 2


@dataclass
class PretrainResult:
    run_dir: Path
    step: int
    last_loss: float
    knn: list[dict] = field(default_factory=list)  # every kNN evaluation: {"step", "epoch", "knn_top1", ...}
    verification: list[dict] = field(default_factory=list)  # every verification: {"step", "epoch", "accuracy", ...}
    stopped: str = "completed"  # completed | max_steps | interrupted


# ----------------------------------------------------------------------------------------------- data


def build_pretrain_dataset(cfg: PretrainConfig) -> UnlabelledImages:
    """The unlabelled images of `cfg.data`; a missing or empty root fails here, before any model is built."""
    a = cfg.aug
    transform = TwoViewTransform(
        cfg.data.image_size, crop_scale=a.crop_scale, flip_p=a.flip_p, jitter=a.jitter, jitter_p=a.jitter_p,
        grey_p=a.grey_p, blur_p=a.blur_p, blur_sigma=a.blur_sigma, solarize_p=a.solarize_p, mean=a.mean, std=a.std,
        crops_only=a.on_device,
    )
    d = cfg.data
    if d.source == "synthetic":
        syn = d.synthetic
        faces = SyntheticFaces(syn.num_images, d.image_size, syn.num_identities, syn.seed,
                               expression_gain=syn.expression_gain)
        return UnlabelledImages.from_source(faces, transform)
    if d.source == "vggface2":
        index = list_vggface2(d.root, d.bbox_csv or None, d.crop_margin)
        return UnlabelledImages(index.items, transform)
    return UnlabelledImages(list_images(d.root), transform)


def build_loader(dataset, sampler: EpochBatchSampler, num_workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_two_views,
        pin_memory=pin,
        persistent_workers=num_workers > 0,
        # A private generator: worker seeding must not consume the global RNG that dropout uses (exact resume).
        generator=torch.Generator(),
    )


def build_batch_colour(cfg: PretrainConfig, rank: int) -> BatchedViewColour | None:
    """The colour half of the views, run on the batch on the training device (None: the loader did it)."""
    a = cfg.aug
    if not a.on_device:
        return None
    return BatchedViewColour(cfg.data.image_size, cfg.train.seed, rank, jitter=a.jitter, jitter_p=a.jitter_p,
                             grey_p=a.grey_p, blur_p=a.blur_p, blur_sigma=a.blur_sigma, solarize_p=a.solarize_p,
                             mean=a.mean, std=a.std)


def effective_lr(cfg: PretrainConfig) -> float:
    o = cfg.optim
    return o.base_lr * cfg.train.batch_size / o.reference_batch if o.scale_lr else o.base_lr


def default_run_dir(cfg: PretrainConfig, config_name: str = "pretrain") -> Path:
    return common.default_run_dir(cfg.train.out_dir, cfg.train.name, config_name)


def pretrain(cfg: PretrainConfig, run_dir: str | Path | None = None, resume: bool = False,
             overwrite: bool = False) -> PretrainResult:
    """Pre-train FRA (or BYOL) as `cfg` says, in `run_dir`; with resume=True continue its latest checkpoint.

    A fresh run into a folder holding another run is refused unless `overwrite` (which clears that run first).
    """
    with session.training_session(cfg.train.device, cfg.train.precision) as ctx:
        run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
        session.check_run_dir(run_dir, resume, overwrite, ctx)  # refused at once, cleared only once it writes
        return _pretrain(cfg, run_dir, resume, ctx, overwrite)


def _pretrain(cfg: PretrainConfig, run_dir: Path, resume: bool, ctx: distributed.Context,
              overwrite: bool = False) -> PretrainResult:
    t, device = cfg.train, ctx.device
    machine.set_threads(t.threads, cfg.data.num_workers)
    torch.manual_seed(t.seed)
    random.seed(t.seed)

    # Data (and the monitor's folders) first: a bad path fails before any model is built.
    dataset = build_pretrain_dataset(cfg)
    sampler = EpochBatchSampler(len(dataset), t.batch_size, ctx.rank, ctx.world_size, t.seed)
    budget = plan_budget(len(dataset), t.batch_size, t.epochs, t.steps, cfg.optim.warmup_epochs,
                         cfg.optim.warmup_steps, t.max_steps)
    steps_per_epoch = budget.steps_per_epoch
    pairs = read_pairs(cfg.monitor.verify_pairs, cfg.monitor.verify_root) if cfg.monitor.verify_pairs else []
    monitor = None
    if cfg.monitor.knn_train_root:
        m = cfg.monitor
        monitor = KNNMonitor(
            m.knn_train_root, m.knn_val_root, m.knn_image_size or cfg.data.image_size, cfg.aug.mean, cfg.aug.std,
            m.knn_k, m.knn_temperature, num_workers=min(cfg.data.num_workers, 2),
        )

    method = get_method(cfg.method)
    model = method.build(cfg).to(device)
    if ctx.world_size > 1 and t.sync_bn:
        model = convert_to_global_bn(model, device)
    speed.prepare_model(model, t)
    momentum_pairs = method.momentum_pairs(model)
    peak_lr = effective_lr(cfg)
    optimizer = build_pretrain_optimizer(cfg.optim, torch.nn.ModuleList(method.trainable(model)), peak_lr,
                                         trunk=model.online.trunk)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    scaler = torch.amp.GradScaler("cuda", enabled=t.precision == "fp16")

    step = 0
    ckpt = common.resume_from(run_dir) if resume else None
    if ckpt is not None:
        step, _ = session.restore_state(ckpt, model, optimizer, scaler, device, budget,
                                        lambda meta: _check_resumable(meta, ckpt, cfg.method),
                                        may_lack=("mask_prototypes", "prototype_updates"))
    session.write_run_record(run_dir, cfg, ctx, resume, overwrite, {"method": cfg.method})
    logger = MetricsLogger(run_dir, enabled=ctx.is_main, tensorboard=t.tensorboard)
    net = session.wrap_ddp(model, ctx, broadcast_buffers=False)  # each network keeps its own BN statistics
    loader = build_loader(dataset, sampler, cfg.data.num_workers, pin=device.type == "cuda")
    colour = build_batch_colour(cfg, ctx.rank)
    skipped = SkipReport()
    result = PretrainResult(run_dir, step, math.nan)  # result.step: the run's step, wherever it is read

    def checkpoint(reason: str) -> None:
        meta = {"epoch": budget.epoch(result.step), "steps_per_epoch": steps_per_epoch, "total_steps": budget.total,
                "loss": result.last_loss, "reason": reason, "layout": CHECKPOINT_LAYOUT, "method": cfg.method}
        session.save_state(run_dir, result.step, model, optimizer, scaler, ctx, meta, t.keep_checkpoints)

    def run_monitor(epoch: float) -> None:
        # The monitors' DataLoaders draw seeds from the global RNG; a forked RNG keeps a watched run identical
        # to an unwatched one (and keeps rank 0, the only one watching, in step with the others).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            _monitor_once(cfg, model, monitor, pairs, budget, epoch, ctx, logger, result)

    if step == 0 and cfg.monitor.knn_at_start:
        run_monitor(0)
    model.train()
    steps = PretrainStepParts(net, method, momentum_pairs, optimizer, scaler, params, colour)
    with session.checkpoint_on_interrupt(ctx, checkpoint, logger, result, lambda: result.step):
        while result.step < budget.stop:
            train_one_epoch(cfg, steps, loader, sampler, budget, ctx, skipped, logger, result, checkpoint)
            _report_skipped(skipped, ctx, logger, result.step)
            if budget.ends_epoch(result.step):
                finished = budget.epoch(result.step)
                run_monitor(finished)
                if ctx.is_main:
                    tqdm.write(f"epoch {finished:g}/{budget.epochs:g} step {result.step}: loss {result.last_loss:.4f}")
    result.stopped = "completed" if result.step >= budget.total else "max_steps"
    checkpoint(result.stopped)
    logger.close()
    return result


@dataclass(frozen=True)
class PretrainStepParts:
    """What a pre-training step uses: the network (DDP-wrapped or not), its method, what it optimises and how."""
    net: torch.nn.Module
    method: Method
    momentum_pairs: list
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: list[torch.Tensor]
    colour: BatchedViewColour | None  # the views' colour half on the device, or None (the loader did it)


def train_one_epoch(cfg: PretrainConfig, steps: PretrainStepParts, loader, sampler: EpochBatchSampler, budget: Budget,
                    ctx: distributed.Context, skipped: SkipReport, logger: MetricsLogger, result: PretrainResult,
                    checkpoint) -> None:
    """From `result.step` to the end of its epoch (or to the run's stop): steps, logging, periodic checkpoints."""
    t, device = cfg.train, ctx.device
    bar = session.epoch_bar(loader, sampler, result.step, budget, ctx)
    tick, seen = time.perf_counter(), 0
    for view1, view2, bad in bar:
        step = result.step
        skipped.add(bad)
        lr = schedule_lr(steps.optimizer, step, budget.total, budget.warmup, cfg.optim.min_lr)
        with common.whole_step():  # a Ctrl-C lands between steps: the interrupt checkpoint is exact
            view1, view2 = speed.to_device(view1, device, t), speed.to_device(view2, device, t)
            if steps.colour is not None:  # uint8 crops -> normalised float views
                view1, view2 = speed.in_layout(*steps.colour(view1, view2, step), run=t)
            with autocast(t.precision, device):
                out = steps.net(view1, view2)
            loss, parts = steps.method.loss(out, cfg)
            common.optimizer_step(step, loss, parts, steps.optimizer, steps.scaler, steps.params,
                                  cfg.optim.grad_clip, _NAN_ADVICE)
            ema = momentum_at(step, budget.total, cfg.optim.ema_base, cfg.optim.ema_final)
            update_momentum(steps.momentum_pairs, ema)
            result.step = step = step + 1
        seen += view1.shape[0] * ctx.world_size
        if step % t.log_every == 0 or step == budget.stop:
            parts = distributed.mean_over_processes(parts)
            result.last_loss = float(parts["loss"])
            rate = seen / max(time.perf_counter() - tick, 1e-9)
            values = {k: float(v) for k, v in parts.items()} | {"lr": lr, "ema": ema, "img_per_s": rate}
            logger.log(step, values, prefix="train")
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()} | {"img/s": f"{rate:.0f}"})
        if step % t.checkpoint_every == 0 and step < budget.stop:
            checkpoint("periodic")
        if step >= budget.stop:
            break
    bar.close()


def _monitor_once(cfg: PretrainConfig, model, monitor: KNNMonitor | None, pairs: list, budget: Budget, epoch: float,
                  ctx: distributed.Context, logger: MetricsLogger, result: PretrainResult) -> None:
    """The kNN and verification monitors on the online trunk, where due (main process), then a barrier."""
    m, step, device = cfg.monitor, result.step, ctx.device
    knn_due = monitor is not None and budget.due(step, m.knn_every_epochs)
    verify_due = bool(pairs) and budget.due(step, m.verify_every_epochs)
    if ctx.is_main and knn_due:
        record = {"step": step, "epoch": epoch, **monitor.evaluate(model.online.trunk, device)}
        result.knn.append(record)
        logger.log(step, {k: v for k, v in record.items() if k != "step"}, prefix="monitor")
        tqdm.write(f"[monitor] epoch {epoch} step {step}: kNN top-1 {record['knn_top1']:.2f}%")
    if ctx.is_main and verify_due:
        v = verify_trunk(model.online.trunk, pairs, m.knn_image_size or cfg.data.image_size, device,
                         cfg.aug.mean, cfg.aug.std, num_workers=min(cfg.data.num_workers, 2))
        record = {"step": step, "epoch": epoch, "accuracy": v["accuracy"], "std": v["std"], "auc": v["auc"],
                  "skipped_pairs": v["skipped_pairs"]}
        result.verification.append(record)
        logger.log(step, {f"verify_{k}": x for k, x in record.items() if k != "step"}, prefix="monitor")
        tqdm.write(f"[monitor] epoch {epoch} step {step}: {m.verify_pairs} verification "
                   f"{v['accuracy']:.2f}% ± {v['std']:.2f} (AUC {v['auc']:.2f})")
    distributed.barrier()


def _report_skipped(skipped: SkipReport, ctx: distributed.Context, logger, step: int) -> None:
    """Report the unreadable files every process skipped since the last report (once, from the main process)."""
    everyone = distributed.gather_objects((skipped.count, skipped.first(5)))
    if ctx.is_main:
        total = sum(count for count, _ in everyone)
        if total:
            first = [p for _, paths in everyone for p in paths][:5]
            tqdm.write(f"skipped {total} unreadable file(s) this epoch, e.g. {', '.join(first)}")
            logger.log(step, {"skipped_files": total}, prefix="data")
    skipped.reset()


def _check_resumable(meta: dict, ckpt: Path, method: str) -> None:
    """A pre-training checkpoint resumes only in its own layout and with its own method."""
    if meta.get("layout", 1) != CHECKPOINT_LAYOUT:
        raise FraferError(
            f"cannot resume {ckpt}: it was written by an earlier frafer (checkpoint layout "
            f"{meta.get('layout', 1)}, this version writes {CHECKPOINT_LAYOUT}: DETR's query decoder, bias-free "
            "projector outputs, the official LARS buffer), so its decoder, projectors and optimiser state would be "
            "read wrongly. Start a new run; its trunk still initialises fine-tuning and probes (model.init=<run>)"
        )
    if meta.get("method") != method:
        raise FraferError(f"cannot resume {ckpt}: it was pre-trained with method {meta.get('method')}, the "
                          f"config says method {method}; resume with the run's own config.yaml")
