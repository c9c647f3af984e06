"""The downstream training loop: fine-tuning, DMUE, and the faithful linear probe (the same loop, trunk frozen).

`run_classifier(cfg, head)` trains as its downstream head says: `finetune` and `dmue` train trunk and head (AdamW,
separate LRs, warm-up + cosine per step); `linear` (its trunk frozen) trains the head alone with the trunk in eval
mode and the training augmentation (the faithful probe, as the paper does). All: data → model → optimiser →
(resume) → epochs → validation → selection → test once → bundle + reports.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from frafer.artifacts.bundle import load_bundle
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.config.schema import FinetuneConfig
from frafer.data.fer.dataset import FERImages, collate_fer
from frafer.data.fer.splits import FERSplits, class_balanced_weights, prepare_splits, training_targets
from frafer.data.pipelines.sampling import EpochBatchSampler, fit_batch
from frafer.data.pipelines.transforms import build_eval_transform, build_fer_train_transform
from frafer.engine import common, distributed, machine, session, speed
from frafer.engine.metrics_log import MetricsLogger
from frafer.eval.evaluate import evaluate_samples
from frafer.methods.heads import Head, Objective
from frafer.optim import Budget, plan_budget, schedule_lr
from frafer.precision import autocast
from frafer.train.downstream_common import (
    FinetuneResult,
    build_classifier,
    resolve_run_dir,
    run_mode,
    save_model,
    write_results,
)

_NAN_ADVICE = "Lower optim.lr, raise optim.warmup_epochs or use train.precision=fp32."


def run_classifier(cfg: FinetuneConfig, run_dir, resume: bool, head: Head, overwrite: bool = False,
                   splits: FERSplits | None = None) -> FinetuneResult:
    with session.training_session(cfg.train.device, cfg.train.precision) as ctx:
        run_dir = resolve_run_dir(cfg, run_dir, run_mode(head))
        session.check_run_dir(run_dir, resume, overwrite, ctx)  # refused at once, cleared only once it writes
        return _train(cfg, run_dir, resume, head, ctx, splits, overwrite)



# ----------------------------------------------------------------------------------------------- the loop


def _train(cfg: FinetuneConfig, run_dir: Path, resume: bool, head: Head, ctx,
           splits: FERSplits | None = None, overwrite: bool = False) -> FinetuneResult:
    t, device = cfg.train, ctx.device
    frozen, mode = head.frozen_trunk, run_mode(head)
    batch_size = cfg.probe.batch_size if frozen else t.batch_size
    machine.set_threads(t.threads, cfg.data.num_workers)
    random.seed(t.seed)

    # Data first: a bad path or label fails before any model is built.
    splits = splits or prepare_splits(cfg.data, t.seed)
    train_samples, target_fn = training_targets(splits, cfg.data.crowd_mode)
    requested = batch_size
    batch_size = fit_batch(requested, len(train_samples), ctx.world_size,
                           "probe.batch_size" if frozen else "train.batch_size")
    if ctx.is_main:
        tqdm.write(splits.summary())
        if batch_size != requested:
            tqdm.write(f"note: {len(train_samples)} training images are fewer than one batch of {requested}: training "
                       f"in batches of {batch_size}")
    a = cfg.aug
    train_tf = build_fer_train_transform(cfg.data.image_size, a.flip_p, a.jitter, a.translate, a.rotate,
                                         a.erase_p, a.erase_scale, a.mean, a.std)
    eval_tf = build_eval_transform(cfg.data.image_size, a.mean, a.std)
    weights = class_balanced_weights(train_samples, len(splits.classes)) if cfg.data.balanced_sampler else None
    sampler = EpochBatchSampler(len(train_samples), batch_size, ctx.rank, ctx.world_size, t.seed, weights)
    if frozen:  # the probe's own length, no warm-up (as the cached probe)
        budget = plan_budget(len(train_samples), batch_size, cfg.probe.epochs, 0, 0.0, 0, t.max_steps,
                             where="probe")
    else:
        budget = plan_budget(len(train_samples), batch_size, t.epochs, t.steps, cfg.optim.warmup_epochs,
                             cfg.optim.warmup_steps, t.max_steps)
    steps_per_epoch = budget.steps_per_epoch
    min_lr = 0.0 if frozen else cfg.optim.min_lr

    ckpt = common.resume_from(run_dir) if resume else None
    layout, recorded = None, None
    if ckpt is not None:  # the trunk's layout and source as first built: bundles keep naming the real source
        recorded = json.loads((run_dir / "init.json").read_text())
        layout = TrunkLayout.from_dict(recorded["layout"])
    model, init_record = build_classifier(cfg, len(splits.classes), layout)
    init_record = recorded or init_record
    if frozen:
        model.freeze_trunk()
        if cfg.probe.feature_norm:
            model.add_feature_norm()
    objective = head.objective(cfg, model, len(splits.classes))
    trained = objective.module.to(device)  # the classifier, or the network a head trains around it
    speed.prepare_model(trained, t)
    optimizer = head.optimizer(cfg, trained)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler("cuda", enabled=t.precision == "fp16")
    # The weights' moving average: of the deployed classifier only (DMUE's branches never ship), BN statistics too.
    ema = (AveragedModel(objective.deployed(), multi_avg_fn=get_ema_multi_avg_fn(cfg.optim.weight_ema),
                         use_buffers=True) if cfg.optim.weight_ema else None)

    def deployed():
        """The classifier as it would ship now: the moving average when one is kept."""
        return ema.module if ema is not None else objective.deployed()

    step, history, best = 0, [], None
    if ckpt is not None:
        step, meta = session.restore_state(ckpt, trained, optimizer, scaler, device, budget, ema=ema)
        history, best = meta.get("history", []), meta.get("best")
    session.write_run_record(run_dir, cfg, ctx, ckpt is not None, overwrite,
                             {"mode": mode, "data": splits.summary()}, {"init.json": json.dumps(init_record, indent=2)})
    logger = MetricsLogger(run_dir, enabled=ctx.is_main, tensorboard=t.tensorboard)
    net = session.wrap_ddp(trained, ctx)
    loader = DataLoader(
        FERImages(train_samples, train_tf, target_fn), batch_sampler=sampler, num_workers=cfg.data.num_workers,
        collate_fn=collate_fer, pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0,
        generator=torch.Generator(),
    )
    result = FinetuneResult(run_dir, mode, step, math.nan)  # result.step: the run's step, wherever it is read
    eval_workers = min(cfg.data.num_workers, 4)

    def evaluate(samples, desc, net=None):
        return evaluate_samples(net or deployed(), samples, splits.classes, eval_tf, device, batch_size,
                                eval_workers, desc)

    def checkpoint(reason: str) -> None:
        meta = {"epoch": budget.epoch(result.step), "steps_per_epoch": steps_per_epoch, "total_steps": budget.total,
                "loss": result.last_loss, "reason": reason, "history": history, "best": best}
        session.save_state(run_dir, result.step, trained, optimizer, scaler, ctx, meta, t.keep_checkpoints, ema)

    def validation_due() -> bool:
        """After every `eval_every_epochs` whole epochs, and at the run's end (a partial last epoch too)."""
        return ctx.is_main and bool(splits.val) and result.step > 0 and budget.due(result.step, t.eval_every_epochs)

    def validate_epoch(finished: float, best: dict | None) -> dict | None:
        """Validate after epoch `finished`, record it, save the bundle when it is the best so far; returns best."""
        report = evaluate(splits.val, "validating")
        record = {"epoch": finished, "step": result.step, "val_top1": report["top1"],
                  "val_macro_f1": report["macro_f1"]}
        history.append(record)
        logger.log(result.step, {k: v for k, v in record.items() if k != "step"}, prefix="val")
        improved = best is None or report["top1"] > best["val_top1"]
        if t.select == "val" and improved:
            best = record
            save_model(run_dir / "model", deployed(), cfg, splits, init_record, head, finished, report)
        loss = f"loss {result.last_loss:.4f}, " if math.isfinite(result.last_loss) else ""
        mark = " (best)" if improved else ""
        tqdm.write(f"epoch {finished:g}/{budget.epochs:g}: {loss}val top-1 {report['top1']:.2f}%{mark}")
        return best

    trained.train()
    finished = budget.epoch(result.step)
    if budget.ends_epoch(result.step) and validation_due() and all(r["epoch"] != finished for r in history):
        # resumed from a checkpoint taken at an epoch's end before its validation was recorded (Ctrl-C while
        # validating): validate now, so that epoch still takes part in model selection
        best = validate_epoch(finished, best)
    steps = ClassifierStepParts(net, objective, optimizer, scaler, params, 0.0 if frozen else cfg.optim.grad_clip, ema,
                      min_lr, mode)
    with session.checkpoint_on_interrupt(ctx, checkpoint, logger, result, lambda: result.step):
        while result.step < budget.stop:
            unreadable = train_one_epoch(t, steps, loader, sampler, budget, ctx, logger, result)
            if not budget.ends_epoch(result.step):
                break  # interrupted inside an epoch by max_steps
            finished = budget.epoch(result.step)
            if ctx.is_main and unreadable:
                tqdm.write(f"skipped {unreadable} unreadable image(s) in epoch {finished:g}")
                logger.log(result.step, {"unreadable": unreadable}, prefix="data")
            if validation_due():
                best = validate_epoch(finished, best)
            elif ctx.is_main:
                tqdm.write(f"epoch {finished:g}/{budget.epochs:g}: loss {result.last_loss:.4f}")
            checkpoint("epoch")
    result.stopped = "completed" if result.step >= budget.total else "max_steps"
    if not budget.ends_epoch(result.step):
        checkpoint(result.stopped)
    if ctx.is_main:
        result.results = _finish(run_dir, deployed(), cfg, splits, init_record, head, budget.epoch(result.step),
                                 best, evaluate)
    distributed.barrier()
    logger.close()
    return result


@dataclass(frozen=True)
class ClassifierStepParts:
    """What a downstream step uses: the network (DDP-wrapped or not), its objective, what it optimises and how."""
    net: torch.nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: list[torch.Tensor]
    grad_clip: float  # 0 = off (the faithful probe never clips)
    ema: AveragedModel | None  # the classifier's moving average, updated after every step
    min_lr: float
    label: str  # of the progress bar


def train_one_epoch(t, steps: ClassifierStepParts, loader, sampler: EpochBatchSampler, budget: Budget, ctx,
                    logger: MetricsLogger, result: FinetuneResult) -> int:
    """From `result.step` to the end of its epoch (or to the run's stop); returns the unreadable images it skipped.

    t: the train section (precision, channels_last, log_every).
    """
    device = ctx.device
    bar = session.epoch_bar(loader, sampler, result.step, budget, ctx, steps.label)
    tick, seen, unreadable = time.perf_counter(), 0, 0
    for images, targets, _, bad in bar:
        step = result.step
        unreadable += bad
        lr = schedule_lr(steps.optimizer, step, budget.total, budget.warmup, steps.min_lr)
        with common.whole_step():  # a Ctrl-C lands after the step: an interrupt checkpoint holds whole steps
            if len(images):  # a batch of only unreadable files still counts as a step (exact resume)
                with autocast(t.precision, device):
                    loss, parts = steps.objective.loss(steps.net, speed.to_device(images, device, t),
                                                       targets.to(device), step // budget.steps_per_epoch)
                common.optimizer_step(step, loss, parts, steps.optimizer, steps.scaler, steps.params,
                                      steps.grad_clip, _NAN_ADVICE)
                if steps.ema is not None:
                    steps.ema.update_parameters(steps.objective.deployed())
                result.last_loss = loss.item()
            result.step = step = step + 1
        seen += len(images) * ctx.world_size
        if step % t.log_every == 0 or step == budget.stop:
            rate = seen / max(time.perf_counter() - tick, 1e-9)
            logged = {k: float(v) for k, v in parts.items()} if len(images) else {}
            logger.log(step, logged | {"loss": result.last_loss, "lr": lr, "img_per_s": rate}, prefix="train")
            bar.set_postfix(loss=f"{result.last_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
        if step >= budget.stop:
            break
    bar.close()
    return unreadable


def _finish(run_dir: Path, model, cfg, splits: FERSplits, init_record, head: Head, epoch, best, evaluate) -> dict:
    """Evaluate the last epoch (always reported) and the best-on-validation epoch on val and test; write it all."""
    reports_dir = run_dir / "reports"
    results = {"last": {"epoch": epoch}}
    last_val = evaluate(splits.val, "validating") if splits.val else None
    results["last"]["val"] = last_val
    results["last"]["test"] = evaluate(splits.test, "testing") if splits.test else None
    last_folder = run_dir / ("model_last" if cfg.train.select == "val" and best is not None else "model")
    save_model(last_folder, model, cfg, splits, init_record, head, epoch, last_val)
    if cfg.train.select == "val" and best is not None:
        if best["epoch"] == epoch:  # the last epoch is the best one: same weights, same reports
            results["best_val"] = dict(results["last"])
        else:
            selected = load_bundle(run_dir / "model", next(model.parameters()).device).model
            results["best_val"] = {"epoch": best["epoch"], "val": evaluate(splits.val, "validating", selected),
                                   "test": evaluate(splits.test, "testing", selected) if splits.test else None}
    write_results(run_dir, results, splits.classes, reports_dir, header=f"{run_mode(head)} on {splits.name}")
    return results
