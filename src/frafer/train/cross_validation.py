"""Every fold of a cross-validation in one command: k subject-disjoint folds, leave-one-subject-out, or the
dataset's own fold column (CK+'s `fold10_by_subject`), and the table people report for CK+ and JAFFE.

The dataset is read once for all folds; the cached linear probe's folds share one feature store, so every image
goes through the trunk once. Each fold is an ordinary run folder (`fold_00/`, `fold_01/`, …, with its bundle);
the parent folder gets `folds.json` and `folds.md`: per-fold test figures, their mean ± std (over folds,
population std) and the pooled accuracy over every test image. `--resume` skips finished folds and continues the
interrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from frafer.config.schema import FinetuneConfig, dump_yaml
from frafer.data.fer.splits import fold_plan, prepare_splits, read_configured_dataset
from frafer.engine import common
from frafer.eval.reports import markdown_table
from frafer.files import atomic_write_text
from frafer.methods.heads import get_head
from frafer.train.cached_probe import run_cached_probe
from frafer.train.classifier_loop import run_classifier
from frafer.train.downstream_common import FinetuneResult


def run_folds(cfg: FinetuneConfig, run_dir: Path, mode: str, resume: bool = False, overwrite: bool = False):
    """Run `mode` (finetune | linear_probe) on every fold of `cfg.data`; returns the last fold's result with the
    fold table in `.results["folds"]`."""
    run_dir = Path(run_dir)
    # Under torchrun the main process alone checks, clears and writes the parent folder: another process checking
    # it could find the main one's fresh files and refuse its own run (no process group exists yet to wait on).
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        common.claim_run_dir(run_dir, resume, overwrite, clear=False)  # refused at once
    dataset = read_configured_dataset(cfg.data)  # parsed once, whatever the number of folds
    _, folds = fold_plan(dataset, cfg.data, cfg.train.seed)
    if main:
        common.claim_run_dir(run_dir, resume, overwrite, keep=("features",))  # cleared once the folds are known
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        tqdm.write(f"{dataset.name}: {len(folds)} folds, {mode}")
    rows, result = [], None
    for k in range(len(folds)):
        fold_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=k))
        fold_dir = run_dir / f"fold_{k:02d}"
        tqdm.write(f"\n== fold {k + 1}/{len(folds)} ==")
        if resume and (fold_dir / "results.json").is_file():  # finished before the interruption
            results = json.loads((fold_dir / "results.json").read_text())
            tqdm.write(f"fold {k}: finished earlier, results read from {fold_dir / 'results.json'}")
        else:
            splits = prepare_splits(fold_cfg.data, cfg.train.seed, dataset)
            if mode == "linear_probe" and cfg.probe.path == "cached":
                result = run_cached_probe(fold_cfg, fold_dir, True, splits, run_dir / "features")
            else:
                again = resume and (fold_dir / "checkpoints").is_dir()
                head = get_head("linear" if mode == "linear_probe" else cfg.model.head)
                result = run_classifier(fold_cfg, fold_dir, again, head, overwrite=True, splits=splits)
            results = result.results
        rows.append(fold_row(k, results))
    result = result or FinetuneResult(run_dir, mode, 0, float("nan"))
    if not main:
        return dataclasses.replace(result, run_dir=run_dir)
    table = fold_table(rows)
    atomic_write_text(run_dir / "folds.json", json.dumps(table, indent=2))
    header = f"{mode} on {dataset.name}, {len(folds)} folds (test split of each)"
    md = markdown_table(table["rows"] + table["summary"], table["columns"])
    atomic_write_text(run_dir / "folds.md", f"# {header}\n\n{md}\n")
    tqdm.write(f"\n{header}\n{md}")
    return dataclasses.replace(result, run_dir=run_dir, results={**result.results, "folds": table})


def fold_row(k: int, results: dict) -> dict:
    """Test top-1 / macro-F1 of a fold's last epoch and, when selection ran, of its best-on-validation epoch."""
    row = {"fold": k, "_confusion": {}}
    for which in ("last", "best_val"):
        test = (results.get(which) or {}).get("test")
        if test is None:
            continue
        row["test_images"] = test["count"]
        row[f"{which}_top1"], row[f"{which}_macro_f1"] = test["top1"], test["macro_f1"]
        row[f"{which}_mean_class_acc"] = test["mean_class_acc"]
        row["_confusion"][which] = test["confusion"]
    return row


def fold_table(rows: list[dict]) -> dict:
    """Rows per fold, then mean, std (population, over folds) and pooled accuracy (all test images at once)."""
    metrics = [c for c in ("last_top1", "last_macro_f1", "last_mean_class_acc", "best_val_top1",
                           "best_val_macro_f1", "best_val_mean_class_acc") if all(c in r for r in rows)]
    columns = ["fold", "test_images", *metrics]
    plain = [{c: r.get(c) for c in columns} for r in rows]
    mean = {"fold": "mean", "test_images": sum(r["test_images"] for r in rows)}
    std = {"fold": "std", "test_images": ""}
    pooled = {"fold": "pooled", "test_images": mean["test_images"]}
    for c in metrics:
        values = np.array([r[c] for r in rows], dtype=float)
        mean[c], std[c] = float(values.mean()), float(values.std())
        pooled[c] = ""
    for which in ("last", "best_val"):
        if f"{which}_top1" in metrics:
            cms = [np.asarray(r["_confusion"][which]) for r in rows]
            pooled[f"{which}_top1"] = float(100 * sum(np.trace(cm) for cm in cms) / max(1, sum(cm.sum() for cm in cms)))
    return {"columns": columns, "rows": plain, "summary": [mean, std, pooled]}
