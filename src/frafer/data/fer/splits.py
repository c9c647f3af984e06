"""From a data config to train / val / test sample lists and per-sample targets, shared by every FER command.

Model selection uses `val` only; `test` is touched once, at the end. A dataset without a validation split gets one
carved from its training split (subject-disjoint when subjects are known); `data.folds` replaces the dataset's own
splits by subject-disjoint k-fold (or leave-one-subject-out) over all of its samples, `data.fold_column` by the
dataset's own folds.

The trained classes are the dataset's own (CK+ has no neutral), or the `data.classes` chosen from them, always in
EXPRESSIONS order; the samples of `FERSplits` are re-labelled to index `FERSplits.classes`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from frafer.config.schema import FERDataConfig
from frafer.data.fer.crowd import crowd_targets, draw_label
from frafer.data.fer.dataset import NO_LABEL, FERDataset, FERSample, check_classes
from frafer.data.fer.folds import (
    Fold,
    check_disjoint_splits,
    column_folds,
    holdout_split,
    label_subset,
    leave_one_subject_out,
    subject_folds,
)
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.class_folders import EXPRESSION_ALIASES, expression_id
from frafer.data.readers.fer_formats import read_fer_dataset
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
        parts = [f"{self.name}: {len(self.classes)} classes ({', '.join(self.classes)}), train {len(self.train)}, "
                 f"val {len(self.val)}, test {len(self.test)}"]
        if self.notes:
            parts.append("; ".join(f"{reason}: {count}" for reason, count in sorted(self.notes.items())))
        return " — ".join(parts)


def read_configured_dataset(d: FERDataConfig) -> FERDataset:
    """The dataset `d` names, read in its native layout (errors name the missing file or bad value)."""
    options: dict = {}
    if d.format in CONTEMPT_CHOICE:
        options["num_classes"] = d.num_classes or 8
    if d.format == "ferplus":
        options["source"] = d.ferplus_source
        if d.fer2013_csv:
            options["fer2013_csv"] = d.fer2013_csv
    if d.format == "folders":
        if d.subjects_csv:
            options["subjects"] = d.subjects_csv
        if d.subject_pattern:
            options["subject_pattern"] = d.subject_pattern
        if d.fold_column:
            options["fold_column"] = d.fold_column
    if d.extra_roots:
        if d.format != "synthetic":
            raise FraferError("config key 'data.extra_roots': only the synthetic format merges several roots")
        from frafer.data.readers.synthetic_faces import read_synthetic_roots

        return read_synthetic_roots([d.root, *d.extra_roots])
    return read_fer_dataset(d.format, d.root, **options)


# Formats whose reader chooses 7 classes (contempt dropped) or 8 through data.num_classes.
CONTEMPT_CHOICE = ("affectnet", "ferplus")


def trained_classes(d: FERDataConfig, available: tuple[str, ...], name: str) -> tuple[str, ...]:
    """The classes the head predicts: `data.classes` (aliases accepted) chosen from the dataset's, or all of them."""
    classes = available
    if d.classes:
        chosen = []
        for given in d.classes:
            cid = expression_id(given)
            if cid is None:
                raise FraferError(f"config key 'data.classes': '{given}' is not an expression name; known names: "
                                  f"{', '.join(EXPRESSION_ALIASES)}")
            if EXPRESSIONS[cid] not in available:
                raise FraferError(f"config key 'data.classes': {name} has no '{EXPRESSIONS[cid]}' images; its classes "
                                  f"are {', '.join(available)}")
            chosen.append(EXPRESSIONS[cid])
        classes = check_classes(chosen)
    if d.num_classes and d.format not in CONTEMPT_CHOICE and d.num_classes != len(classes):
        raise FraferError(f"config key 'data.num_classes': {d.num_classes}, but {name} gives {len(classes)} classes "
                          f"({', '.join(classes)}); choose them with data.classes=[...] or set data.num_classes=0")
    if d.crowd_mode != "none" and classes not in (EXPRESSIONS[:7], EXPRESSIONS):
        raise FraferError(f"config key 'data.classes': crowd-label modes train on the 7 basic expressions or all 8, "
                          f"got {', '.join(classes)}")
    return classes


def relabel(samples, classes: tuple[str, ...], notes: Counter, split: str, keep_vote_only: bool = False):
    """Samples of the trained classes, labels re-indexed into `classes`; the others dropped and counted by reason.

    keep_vote_only keeps samples known only by their votes (NO_LABEL, crowd-label training).
    """
    index = {EXPRESSIONS.index(name): i for i, name in enumerate(classes)}
    kept = []
    for s in samples:
        if s.label == NO_LABEL:
            if keep_vote_only and s.votes is not None:
                kept.append(s)
            else:
                notes[f"{split}: no majority label"] += 1
        elif s.label in index:
            kept.append(s if index[s.label] == s.label else dataclasses.replace(s, label=index[s.label]))
        else:
            notes[f"{split}: class not trained ({EXPRESSIONS[s.label]})"] += 1
    return kept


def uses_folds(d: FERDataConfig) -> bool:
    return bool(d.folds or d.fold_column)


def fold_plan(dataset: FERDataset, d: FERDataConfig, seed: int) -> tuple[list[FERSample], list[Fold]]:
    """Every sample of the dataset (all splits) and its folds: the fold column's, k-fold or leave-one-subject-out."""
    everything = [s for split in dataset.splits.values() for s in split]
    if d.fold_column:
        return everything, column_folds(everything)
    if d.folds == -1:
        return everything, leave_one_subject_out(everything)
    return everything, subject_folds(everything, d.folds, seed)


def prepare_splits(d: FERDataConfig, seed: int, dataset: FERDataset | None = None) -> FERSplits:
    """Read (unless `dataset` is given), split and filter the dataset of `d` (see the module docstring)."""
    dataset = dataset or read_configured_dataset(d)
    notes = Counter({f"read: {reason}": n for reason, n in dataset.skipped.items() if n})
    classes = trained_classes(d, dataset.classes, dataset.name)
    check_disjoint_splits(dataset)
    if uses_folds(d):
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
    train = relabel(train, classes, notes, "train", keep_vote_only=d.crowd_mode != "none")
    if d.label_fraction < 1:
        subset = label_subset(train, d.label_fraction, d.label_seed)
        notes[f"train: labels left out (data.label_fraction={d.label_fraction:g}, label_seed={d.label_seed})"] += (
            len(train) - len(subset))
        train = subset
    val = relabel(val, classes, notes, "val")
    test = relabel(test, classes, notes, "test")
    if not train:
        raise FraferError(f"{dataset.name}: no training samples left for {len(classes)} classes")
    return FERSplits(dataset.name, classes, train, val, test, dict(notes))


def _fold_splits(dataset: FERDataset, d: FERDataConfig, seed: int):
    everything, folds = fold_plan(dataset, d, seed)
    if d.fold < 0:
        raise FraferError("config key 'data.fold': -1 (every fold) is run by frafer finetune / linear-probe; "
                          "give one fold here")
    if d.fold >= len(folds):
        raise FraferError(f"config key 'data.fold': {d.fold}, but there are only {len(folds)} folds")
    train_idx, test_idx = folds[d.fold]
    train = [everything[i] for i in train_idx]
    val: list[FERSample] = []
    if d.val_fraction > 0:
        train, val = holdout_split(train, d.val_fraction, seed)
    return train, val, [everything[i] for i in test_idx]


# ----------------------------------------------------------------------------------------------- targets


def make_targets(
    samples: list[FERSample], crowd_mode: str, num_classes: int
) -> tuple[list[FERSample], Callable[[FERSample, int, int], object]]:
    """The training samples kept under `crowd_mode` and a `target_fn(sample, index, sample_seed)` for FERImages.

    none → the class id (int). Crowd modes → a (C,) float vector: one-hot for majority and for probability (a
    label drawn from the truncated vote distribution, afresh every epoch through the sample's seed), the accepted
    classes for multilabel, the distribution for crossentropy; `frafer.losses.classification.crowd_loss` reads them.
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


def training_targets(
    splits: FERSplits, crowd_mode: str
) -> tuple[list[FERSample], Callable[[FERSample, int, int], object]]:
    """`make_targets` on the training split, counting in `splits.notes` the samples it leaves out.

    A crowd mode drops the training faces whose votes give it no target (no majority label for `majority`), which
    on FER+ is about a tenth of Train: said in the run's summary line rather than silently.
    """
    kept, target_fn = make_targets(splits.train, crowd_mode, len(splits.classes))
    if len(kept) < len(splits.train):
        splits.notes[f"train: no '{crowd_mode}' target from the votes"] = len(splits.train) - len(kept)
    return kept, target_fn


def class_balanced_weights(samples: list[FERSample], num_classes: int) -> torch.Tensor:
    """Per-sample weight 1 / (its class's count), so every class is drawn equally often (majority label)."""
    counts = Counter(s.label for s in samples)
    return torch.tensor([1.0 / counts[s.label] for s in samples], dtype=torch.double)
