"""The fast linear probe: extract frozen-trunk features once, cache them, train the linear head on the cache.

It replays exactly what the faithful loop (`frafer.train.classifier_loop`, trunk frozen) does when the training
augmentation is off: same head initialisation, batch order, targets, SGD and per-step cosine LR, so the two paths
give the same head (tested). Training features may be averaged with their mirror image (probe.flip_average);
validation and test features never are, so the reported numbers are those of the saved bundle.

The head trains with one CPU thread: its matrix products are far too small to gain from more, and threads that
wait for cores another process holds made a 100-epoch probe take minutes instead of seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from frafer.artifacts.feature_store import FeatureStore, feature_identity
from frafer.config.schema import FinetuneConfig
from frafer.data.fer.dataset import FERSample, load_sample_image
from frafer.data.fer.splits import FERSplits, class_balanced_weights, prepare_splits, training_targets
from frafer.data.pipelines.sampling import EpochBatchSampler
from frafer.data.pipelines.transforms import build_eval_transform
from frafer.engine import common, distributed, machine, session
from frafer.engine.metrics_log import MetricsLogger
from frafer.errors import FraferError
from frafer.eval.features import frozen_pass
from frafer.eval.reports import classification_report
from frafer.methods.heads import get_head, loss_fn
from frafer.optim import schedule_lr
from frafer.train.downstream_common import FinetuneResult, build_classifier, save_model, write_results


@torch.no_grad()
def extract_features(
    model, samples: list[FERSample], transform, device: torch.device, batch_size: int = 256, num_workers: int = 0,
    flip_average: bool = False, precision: str = "fp32", desc: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled trunk features (N, C) in sample order, and a (N,) mask of the samples that could be read."""
    out = frozen_pass(model.features, samples, load_sample_image, transform, device, batch_size, num_workers,
                      flip_average, precision, desc, modules=[model])
    if not out.readable.any():  # nothing readable: every row masked out
        return torch.zeros(len(samples), model.head.in_features), out.readable
    return out.values, out.readable


def _probe_state(model) -> dict[str, torch.Tensor]:
    """A copy of what the probe trains: the head and the feature norm's running statistics."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("trunk.")}


def cached_linear_probe(cfg: FinetuneConfig, run_dir: Path, ctx: distributed.Context, overwrite: bool = False,
                        store_folder: Path | None = None, splits: FERSplits | None = None) -> FinetuneResult:
    """probe.path=cached: the whole linear probe on cached features; see the module docstring.

    `store_folder` (the feature store the folds of a k-fold run share) defaults to `run_dir/features`; `splits`,
    when given, are used instead of reading the dataset again.
    """
    t, p, device = cfg.train, cfg.probe, ctx.device
    session.check_run_dir(run_dir, False, overwrite, ctx)  # refused at once
    machine.set_threads(t.threads, cfg.data.num_workers)
    splits = splits or prepare_splits(cfg.data, t.seed)
    train_samples, target_fn = training_targets(splits, cfg.data.crowd_mode)
    tqdm.write(splits.summary())
    model, init_record = build_classifier(cfg, len(splits.classes))
    model.freeze_trunk()
    if p.feature_norm:
        model.add_feature_norm()
    model.to(device)
    eval_tf = build_eval_transform(cfg.data.image_size, cfg.aug.mean, cfg.aug.std)
    store = FeatureStore(store_folder or run_dir / "features", feature_identity(cfg, init_record))  # checks the cache
    # only now, with data, trunk and cache accepted, is an overwritten run cleared (its feature cache stays)
    session.write_run_record(run_dir, cfg, ctx, False, overwrite,
                             {"mode": "linear_probe (cached)", "data": splits.summary()},
                             {"init.json": json.dumps(init_record, indent=2)}, keep=("features",))


    def features(name, samples, flip):
        return store.get(samples, flip, name, lambda missing: extract_features(
            model, missing, eval_tf, device, p.batch_size, cfg.data.num_workers, flip, t.precision,
            desc=f"features {name}"))

    train_x, train_ok = features("train", train_samples, p.flip_average)
    val = features("val", splits.val, False) if splits.val else None
    test = features("test", splits.test, False) if splits.test else None
    if not train_ok.any():
        raise common.FraferError("no readable training image to train the linear probe on")

    def evaluate(samples, feats):
        x, ok = feats
        model.eval()
        with torch.no_grad():
            logits = model.classify(x[ok].to(device)).float().cpu()
        model.train()
        labels = np.array([s.label for s, good in zip(samples, ok.tolist(), strict=True) if good])
        report = classification_report(labels, logits.argmax(1).numpy(), list(splits.classes))
        report["unreadable"] = int((~ok).sum())
        return report

    weights = class_balanced_weights(train_samples, len(splits.classes)) if cfg.data.balanced_sampler else None
    batch_size = min(p.batch_size, len(train_samples))  # a set smaller than one batch trains full-batch
    sampler = EpochBatchSampler(len(train_samples), batch_size, 0, 1, t.seed, weights)
    head = get_head("linear")
    optimizer = head.optimizer(cfg, model)
    no_scaler = torch.amp.GradScaler("cuda", enabled=False)  # the head trains in fp32
    criterion = loss_fn(cfg)
    logger = MetricsLogger(run_dir, tensorboard=t.tensorboard)
    # Targets that do not change between epochs, gathered once: class ids, or the crowd vectors of every sample.
    fixed_targets = None
    if cfg.data.crowd_mode != "probability":
        fixed_targets = torch.stack([torch.as_tensor(target_fn(s, i, 0)) for i, s in enumerate(train_samples)])
    history, best, best_head, step, loss = [], None, None, 0, math.nan
    total_steps = (len(train_samples) // batch_size) * p.epochs
    model.train()  # the head and feature norm; the frozen trunk stays in eval mode
    with machine.limited_threads(1):
        for epoch in tqdm(range(p.epochs), desc="linear probe (cached)", leave=False):
            sampler.set_epoch(epoch)
            for keys in sampler:
                rows = [(i, seed) for i, seed in keys if train_ok[i]]  # unreadable images drop out, as in the loop
                schedule_lr(optimizer, step, total_steps, 0)  # no warm-up, cosine to 0
                if rows:
                    idx = torch.tensor([i for i, _ in rows])
                    if fixed_targets is not None:
                        targets = fixed_targets[idx]
                    else:  # probability mode: a label drawn afresh from each sample's seed
                        targets = torch.stack([torch.as_tensor(target_fn(train_samples[i], i, s)) for i, s in rows])
                    logits = model.classify(train_x[idx].to(device))
                    loss_t = criterion(logits.float(), targets.to(device))
                    common.optimizer_step(step, loss_t, {}, optimizer, no_scaler, [], 0.0, "Lower probe.lr.")
                    loss = loss_t.item()
                step += 1
            finished = epoch + 1
            logger.log(step, {"loss": loss, "lr": optimizer.param_groups[0]["lr"]}, prefix="train")
            if val is not None and (finished % t.eval_every_epochs == 0 or finished == p.epochs):
                report = evaluate(splits.val, val)
                history.append({"epoch": finished, "val_top1": report["top1"], "val_macro_f1": report["macro_f1"]})
                logger.log(step, history[-1], prefix="val")
                if t.select == "val" and (best is None or report["top1"] > best["val_top1"]):
                    best, best_head = history[-1], _probe_state(model)
    logger.close()

    results = {"last": {"epoch": p.epochs, "val": evaluate(splits.val, val) if val else None,
                        "test": evaluate(splits.test, test) if test else None}}
    selected = best is not None
    save_model(run_dir / ("model_last" if selected else "model"), model, cfg, splits, init_record, head, p.epochs,
               results["last"]["val"])
    if selected:
        model.load_state_dict(best_head, strict=False)
        results["best_val"] = {"epoch": best["epoch"], "val": evaluate(splits.val, val),
                               "test": evaluate(splits.test, test) if test else None}
        save_model(run_dir / "model", model, cfg, splits, init_record, head, best["epoch"],
                   results["best_val"]["val"])
    write_results(run_dir, results, splits.classes, run_dir / "reports", f"linear probe (cached) on {splits.name}")
    return FinetuneResult(run_dir, "linear_probe", step, loss, results)


def run_cached_probe(cfg: FinetuneConfig, run_dir: Path, overwrite: bool, splits: FERSplits | None = None,
                     store_folder: Path | None = None) -> FinetuneResult:
    """The cached probe in one process (distributed set-up and teardown around it)."""
    with session.training_session(cfg.train.device, cfg.train.precision) as ctx:
        if ctx.world_size > 1:
            raise FraferError("the cached linear probe runs in one process; use probe.path=faithful with torchrun")
        return cached_linear_probe(cfg, run_dir, ctx, overwrite, store_folder, splits)

