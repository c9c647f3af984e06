"""From a data config to train / val / test sample lists and per-sample targets, shared by every FER command.

Model selection uses `val` only; `test` is touched once, at the end. A dataset without a validation split gets one
carved from its training split (subject-disjoint when subjects are known); `data.folds` replaces the dataset's own
splits by subject-disjoint k-fold (or leave-one-subject-out) over all of its samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from frafer.config import FERDataConfig
from frafer.data.crowd import crowd_targets, draw_label
from frafer.data.fer import NO_LABEL, FERDataset, FERSample
from frafer.data.folds import check_disjoint_splits, holdout_split, leave_one_subject_out, subject_folds
from frafer.data.formats import read_fer_dataset
from frafer.data.labels import EXPRESSIONS
from frafer.errors import FraferError


@dataclass
class FERSplits:
    name: str
    classes: tuple[str, ...]
    train: list[FERSample]
    val: list[FERSample]  # may be empty (val_fraction = 0): selection then falls back to the last epoch
    test: list[FERSample]  # may be empty (a dataset with no test split)
    notes: dict[str, int] = field(default_factory=dict)  # what was dropped or read-skipped, and why

    def summary(self) -> str:
        parts = [f"{self.name}: {len(self.classes)} classes, train {len(self.train)}, val {len(self.val)}, "
                 f"test {len(self.test)}"]
        if self.notes:
            parts.append("; ".join(f"{reason}: {count}" for reason, count in sorted(self.notes.items())))
        return " — ".join(parts)


def read_configured_dataset(d: FERDataConfig) -> FERDataset:
    """The dataset `d` names, read in its native layout (errors name the missing file or bad value)."""
    options: dict = {}
    if d.format in ("affectnet", "ferplus"):
        options["num_classes"] = d.num_classes
    if d.format == "ferplus":
        options["source"] = d.ferplus_source
        if d.fer2013_csv:
            options["fer2013_csv"] = d.fer2013_csv
    if d.format == "folders":
        if d.subjects_csv:
            options["subjects"] = d.subjects_csv
        if d.subject_pattern:
            options["subject_pattern"] = d.subject_pattern
    if d.extra_roots:
        if d.format != "synthetic":
            raise FraferError("config key 'data.extra_roots': only the synthetic format merges several roots")
        from frafer.data.formats.synthetic_faces import read_synthetic_roots

        return read_synthetic_roots([d.root, *d.extra_roots])
    return read_fer_dataset(d.format, d.root, **options)


def prepare_splits(d: FERDataConfig, seed: int) -> FERSplits:
    """Read, split and filter the dataset of `d` (see the module docstring)."""
    dataset = read_configured_dataset(d)
    notes = Counter({f"read: {reason}": n for reason, n in dataset.skipped.items() if n})
    classes = tuple(EXPRESSIONS[: d.num_classes])
    if len(dataset.classes) < d.num_classes:
        raise FraferError(
            f"config key 'data.num_classes': {d.num_classes}, but {dataset.name} has only {len(dataset.classes)} "
            f"classes ({', '.join(dataset.classes)})"
        )
    check_disjoint_splits(dataset)
    if d.folds:
        train, val, test = _fold_splits(dataset, d, seed)
    else:
        train = dataset.split(d.train_split)
        test = dataset.splits.get(d.test_split, [])
        if d.val_split in dataset.splits and d.val_split != d.train_split:
            val = dataset.splits[d.val_split]
        elif d.val_fraction > 0:
            train, val = holdout_split(train, d.val_fraction, seed)
        else:
            val = []
    train = _keep_trainable(train, classes, d.crowd_mode != "none", notes, "train")
    val = evaluable(val, classes, notes, "val")
    test = evaluable(test, classes, notes, "test")
    if not train:
        raise FraferError(f"{dataset.name}: no training samples left for {len(classes)} classes")
    return FERSplits(dataset.name, classes, train, val, test, dict(notes))


def _fold_splits(dataset: FERDataset, d: FERDataConfig, seed: int):
    everything = [s for split in dataset.splits.values() for s in split]
    folds = leave_one_subject_out(everything) if d.folds == -1 else subject_folds(everything, d.folds, seed)
    if d.fold >= len(folds):
        raise FraferError(f"config key 'data.fold': {d.fold}, but there are only {len(folds)} folds")
    train_idx, test_idx = folds[d.fold]
    train = [everything[i] for i in train_idx]
    val: list[FERSample] = []
    if d.val_fraction > 0:
        train, val = holdout_split(train, d.val_fraction, seed)
    return train, val, [everything[i] for i in test_idx]


def _keep_trainable(samples, classes, crowd: bool, notes: Counter, split: str) -> list[FERSample]:
    """Training samples of the trained classes; vote-only samples (no majority) only in crowd-label modes."""
    kept = []
    for s in samples:
        if s.label >= len(classes):
            notes[f"{split}: class not trained ({EXPRESSIONS[s.label]})"] += 1
        elif s.label == NO_LABEL and not (crowd and s.votes is not None):
            notes[f"{split}: no majority label"] += 1
        else:
            kept.append(s)
    return kept


def evaluable(samples, classes, notes, split: str) -> list[FERSample]:
    """Validation and test always use majority labels: vote-only samples and untrained classes are left out."""
    kept = [s for s in samples if 0 <= s.label < len(classes)]
    if len(kept) < len(samples):
        key = f"{split}: no label among the trained classes"
        notes[key] = notes.get(key, 0) + len(samples) - len(kept)
    return kept


# ----------------------------------------------------------------------------------------------- targets


def make_targets(
    samples: list[FERSample], crowd_mode: str, num_classes: int
) -> tuple[list[FERSample], Callable[[FERSample, int, int], object]]:
    """The training samples kept under `crowd_mode` and a `target_fn(sample, index, sample_seed)` for FERImages.

    none → the class id (int). Crowd modes → a (C,) float vector: one-hot for majority and for probability (a
    label drawn from the truncated vote distribution, afresh every epoch through the sample's seed), the accepted
    classes for multilabel, the distribution for crossentropy; `frafer.losses.fer.crowd_loss` reads them.
    """
    if crowd_mode == "none":
        return samples, lambda sample, index, seed: sample.label
    kept, targets = crowd_targets(samples, crowd_mode, num_classes)
    if not kept:
        raise FraferError(f"no training sample has a usable '{crowd_mode}' target from its votes")
    kept_samples = [samples[i] for i in kept]
    table = torch.as_tensor(np.asarray(targets), dtype=torch.float32)  # (M, C)

    if crowd_mode == "probability":
        def target_fn(sample, index, seed):
            label = draw_label(table[index].numpy(), seed, 0, index)
            return torch.nn.functional.one_hot(torch.tensor(label), num_classes).float()
    else:
        def target_fn(sample, index, seed):
            return table[index]
    return kept_samples, target_fn


def class_balanced_weights(samples: list[FERSample], num_classes: int) -> torch.Tensor:
    """Per-sample weight 1 / (its class's count), so every class is drawn equally often (majority label)."""
    counts = Counter(s.label for s in samples)
    return torch.tensor([1.0 / counts[s.label] for s in samples], dtype=torch.double)
