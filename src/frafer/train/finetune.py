"""Fine-tuning, the public entry: `finetune(cfg)` (plain or DMUE, as `model.head` says).

It runs one split, or every fold of a cross-validation (`frafer.train.cross_validation`); the training itself is
`frafer.train.classifier_loop`. The linear probe's entry is `frafer.train.linear_probe`.
"""

from __future__ import annotations

from pathlib import Path

from frafer.config.schema import FinetuneConfig
from frafer.methods.heads import get_head
from frafer.train.classifier_loop import run_classifier
from frafer.train.cross_validation import run_folds
from frafer.train.downstream_common import FinetuneResult, every_fold, resolve_run_dir

__all__ = ["FinetuneResult", "finetune"]


def finetune(cfg: FinetuneConfig, run_dir: str | Path | None = None, resume: bool = False,
             overwrite: bool = False) -> FinetuneResult:
    """Fine-tune the whole network on expression labels (docs/method.md §4); see the module docstring.

    A fresh run into a folder holding another run is refused unless `overwrite` (which clears that run first).
    With folds and data.fold=-1, every fold runs in turn (`frafer.train.cross_validation`).
    """
    if every_fold(cfg.data):
        return run_folds(cfg, resolve_run_dir(cfg, run_dir, "finetune"), "finetune", resume, overwrite)
    return run_classifier(cfg, run_dir, resume, get_head(cfg.model.head), overwrite=overwrite)
