"""What both downstream trainings share: the result record, the classifier they build, and their output files.

Fine-tuning and the linear probe (faithful loop or cached features) import this; it imports neither of them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from frafer.artifacts.bundle import BUNDLE_FILE, load_bundle, save_bundle
from frafer.artifacts.regions import region_model_from_pretraining
from frafer.artifacts.trunk_init import TrunkLayout, is_random_init, load_trunk, rescale_to_init_norms
from frafer.config.schema import FinetuneConfig, to_dict
from frafer.data.fer.framing import FRAMINGS, framing_for_format
from frafer.data.fer.splits import FERSplits, uses_folds
from frafer.engine import common
from frafer.eval.reports import markdown_table, write_report
from frafer.files import atomic_write_text
from frafer.methods.heads import Head
from frafer.models.classifier import FERClassifier


@dataclass
class FinetuneResult:
    run_dir: Path
    mode: str  # finetune | linear_probe
    step: int
    last_loss: float
    results: dict = field(default_factory=dict)  # {"last": {...}, "best_val": {...}} with val / test reports
    stopped: str = "completed"



def build_classifier(cfg: FinetuneConfig, num_classes: int, layout: TrunkLayout | None = None):
    """Trunk from model.init (or from a recorded layout, when resuming) + a fresh head; seeded, so reproducible."""
    m = cfg.model
    torch.manual_seed(cfg.train.seed)
    if layout is not None:
        trunk, record = layout.build(), {"source": "resumed", "layout": layout.to_dict()}
    else:
        trunk, record = load_trunk(m.init, m.arch, m.blocks, m.width, m.remove_maxpool)
        if m.rescale_init and not is_random_init(m.init):
            factors = rescale_to_init_norms(trunk)
            record["rescaled"] = {"convs": len(factors), "min": min(factors), "max": max(factors)}
    model = FERClassifier(trunk, num_classes, m.dropout, m.head_init_std)
    return model, record



def every_fold(d) -> bool:
    """Folds are configured and data.fold asks for all of them."""
    return uses_folds(d) and d.fold == -1


def resolve_run_dir(cfg: FinetuneConfig, run_dir, mode: str) -> Path:
    return Path(run_dir) if run_dir else common.default_run_dir(cfg.train.out_dir, cfg.train.name, mode)


def run_mode(head: Head) -> str:
    """What a run with `head` is called in folders, records and reports."""
    return "linear_probe" if head.frozen_trunk else "finetune"


def save_model(folder: Path, model, cfg: FinetuneConfig, splits: FERSplits, init_record: dict, head: Head,
               epoch: float, val_report: dict | None) -> None:
    """The bundle of `model` as `head` deploys it, recording the run that made it."""
    info = {"mode": run_mode(head), "head": head.name, "epoch": epoch,
            "init": init_record["source"], "pretrain_method": init_record.get("method", "unknown"),
            "data": to_dict(cfg.data) | {"name": splits.name},
            "val_top1": None if val_report is None else val_report["top1"], "config": to_dict(cfg)}
    regions = _regions_of(init_record) if cfg.model.keep_regions else None
    framing = FRAMINGS[cfg.data.framing] if cfg.data.framing else framing_for_format(cfg.data.format)
    save_bundle(folder, model, splits.classes, cfg.data.image_size, cfg.aug.mean, cfg.aug.std,
                TrunkLayout.from_dict(init_record["layout"]), info, framing, regions, network=head.network)



def _regions_of(init_record: dict):
    """The region model of an FRA pre-training init, with its spec; None for other inits.

    A bundle used as init (its classifier fine-tuned again) carries its own region model, which is kept.
    """
    if init_record.get("method") != "fra":
        return None
    source = Path(init_record["source"])
    return _read_regions(str(source), source.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_regions(source: str, mtime_ns: int):
    """Read once per init and run, not at every save of a better model (the key's mtime guards a rewritten file)."""
    path = Path(source)
    if (path.parent / BUNDLE_FILE).is_file():
        bundle = load_bundle(path.parent)
        return None if bundle.regions is None else (bundle.regions, bundle.regions_spec)
    return region_model_from_pretraining(path)


def write_results(run_dir: Path, results: dict, classes, reports_dir: Path, header: str) -> None:
    """results.json, a Markdown summary table, and per-split reports (confusion matrix CSV/PNG, per-class table)."""
    rows = []
    for which, entry in results.items():
        for split in ("val", "test"):
            report = entry.get(split)
            if report is None:
                continue
            write_report(report, reports_dir, f"{which}_{split}")
            rows.append({"model": f"{which} (epoch {entry['epoch']:g})", "split": split, "top1": report["top1"],
                         "mean_class_acc": report["mean_class_acc"], "macro_f1": report["macro_f1"],
                         "images": report["count"]})
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    table = markdown_table(rows, ["model", "split", "top1", "mean_class_acc", "macro_f1", "images"])
    atomic_write_text(run_dir / "results.md", f"# {header}\n\n{table}\n")
    tqdm.write(f"\n{header}\n{table}")
