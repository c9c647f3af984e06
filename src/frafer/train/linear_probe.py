"""The linear probe, the public entry: `linear_probe(cfg)` trains a linear head on the frozen trunk.

Two paths give the same head (tested): cached features (`frafer.train.cached_probe`, seconds) or the faithful
loop (`frafer.train.classifier_loop` with the trunk frozen and the training augmentation, as the paper does).
"""

from __future__ import annotations

from pathlib import Path

from frafer.config.schema import FinetuneConfig
from frafer.methods.heads import get_head
from frafer.train.cached_probe import run_cached_probe
from frafer.train.classifier_loop import run_classifier
from frafer.train.cross_validation import run_folds
from frafer.train.downstream_common import FinetuneResult, every_fold, resolve_run_dir

__all__ = ["FinetuneResult", "linear_probe"]


def linear_probe(cfg: FinetuneConfig, run_dir: str | Path | None = None, resume: bool = False,
                 overwrite: bool = False) -> FinetuneResult:
    """Train a linear head on the frozen trunk: cached features (probe.path=cached) or the faithful loop.

    Into a folder holding another run only with `overwrite`; the cached path then reuses the folder's feature
    cache when it was made from the same trunk, pipeline and data, and refuses it otherwise. With folds and
    data.fold=-1, every fold runs in turn, sharing one feature cache.
    """
    if every_fold(cfg.data):
        return run_folds(cfg, resolve_run_dir(cfg, run_dir, "linear_probe"), "linear_probe", resume, overwrite)
    if cfg.probe.path == "cached":  # seconds on its feature cache: a resume simply trains the head again
        return run_cached_probe(cfg, resolve_run_dir(cfg, run_dir, "linear_probe"), overwrite or resume)
    return run_classifier(cfg, run_dir, resume, get_head("linear"), overwrite=overwrite)

