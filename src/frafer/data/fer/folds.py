"""Subject-disjoint evaluation splits: group k-fold, leave-one-subject-out, a held-out validation split, a fixed
class-stratified share of the training labels (few-label studies), and a check that no image sits in two splits.

Small lab datasets (CK+, JAFFE) have a few people with many images each; a fold that shares a person between
train and test measures identity memory, not expression recognition.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from frafer.data.fer.dataset import FERDataset, FERSample
from frafer.errors import FraferError

Fold = tuple[list[int], list[int]]  # (train indices, test indices) into the sample list


def subject_groups(samples: Sequence[FERSample]) -> dict[str, list[int]]:
    """{subject: sample indices}; FraferError naming the first sample without a subject."""
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if sample.subject is None:
            raise FraferError(
                f"sample {sample.key} has no subject; subject-disjoint splits need one for every sample "
                "(give the reader a subjects CSV or a subject_pattern)"
            )
        groups.setdefault(sample.subject, []).append(index)
    return groups


def subject_folds(samples: Sequence[FERSample], k: int, seed: int = 0) -> list[Fold]:
    """k folds with no subject on both sides, balanced in sample count.

    Subjects are shuffled by `seed`, then placed largest first, each into the fold holding the fewest samples
    so far (ties broken by fold order). Every sample is in exactly one test fold.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise FraferError(f"subject folds need an integer k >= 2, got {k!r}")
    groups = subject_groups(samples)
    if len(groups) < k:
        raise FraferError(f"{k} subject-disjoint folds need at least {k} subjects, found {len(groups)}")
    order = [sorted(groups)[i] for i in np.random.default_rng(seed).permutation(len(groups))]
    order.sort(key=lambda subject: -len(groups[subject]))  # stable: equal sizes keep the shuffled order
    members: list[list[int]] = [[] for _ in range(k)]
    for subject in order:
        smallest = min(range(k), key=lambda fold: len(members[fold]))
        members[smallest] += groups[subject]
    everything = set(range(len(samples)))
    return [(sorted(everything - set(test)), sorted(test)) for test in members]


def leave_one_subject_out(samples: Sequence[FERSample]) -> list[Fold]:
    """One fold per subject (in sorted subject order): that subject's samples are the test side."""
    groups = subject_groups(samples)
    if len(groups) < 2:
        raise FraferError(f"leave-one-subject-out needs at least 2 subjects, found {len(groups)}")
    everything = set(range(len(samples)))
    return [(sorted(everything - set(groups[s])), sorted(groups[s])) for s in sorted(groups)]


def column_folds(samples: Sequence[FERSample]) -> list[Fold]:
    """The dataset's own folds (FERSample.fold, from a fold column), in natural order of the fold names.

    When subjects are known too, a subject found in two folds is an error: train and test would share a person.
    """
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if sample.fold is None:
            raise FraferError(f"sample {sample.key} has no fold; the fold column must give one for every image")
        groups.setdefault(sample.fold, []).append(index)
    if len(groups) < 2:
        raise FraferError(f"the fold column gives {len(groups)} fold(s); at least 2 are needed")
    home: dict[str, str] = {}
    for sample in samples:
        if sample.subject is not None and home.setdefault(sample.subject, sample.fold) != sample.fold:
            raise FraferError(f"subject {sample.subject} is in folds {home[sample.subject]} and {sample.fold} of the "
                              "fold column: its folds are not subject-disjoint")
    names = sorted(groups, key=lambda name: (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name))
    everything = set(range(len(samples)))
    return [(sorted(everything - set(groups[name])), groups[name]) for name in names]


def check_disjoint_splits(dataset: FERDataset) -> None:
    """FraferError when one image (same file path, or same key for CSV pixels) is in two splits."""
    owner: dict[tuple[str, str], str] = {}
    for split, samples in dataset.splits.items():
        for sample in samples:
            if isinstance(sample.image, np.ndarray):
                identity = ("key", sample.key)
            else:
                identity = ("path", os.path.normpath(os.path.abspath(sample.image)))
            first = owner.setdefault(identity, split)
            if first != split:
                raise FraferError(
                    f"{dataset.name}: image {sample.key} is in both the '{first}' and the '{split}' split"
                )


def label_subset(samples: Sequence[FERSample], fraction: float, seed: int = 0) -> list[FERSample]:
    """A fixed, class-stratified share of the samples: round(fraction · n) of each class's n, at least one.

    Each class's samples are shuffled once by `seed` and the first ones taken, so for one seed a smaller fraction's
    subset lies inside a larger one's (1 % ⊂ 10 % ⊂ 100 %), and the subset does not depend on the training seed.
    Order is kept.
    """
    if not 0 < fraction <= 1:
        raise FraferError(f"label fraction must be in (0, 1], got {fraction!r}")
    by_class: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        by_class.setdefault(sample.label, []).append(index)
    rng = np.random.default_rng(seed)
    kept = set()
    for label in sorted(by_class):
        members = by_class[label]
        order = rng.permutation(len(members))
        kept.update(members[i] for i in order[:max(1, round(fraction * len(members)))])
    return [sample for index, sample in enumerate(samples) if index in kept]


def holdout_split(
    samples: Sequence[FERSample], fraction: float, seed: int = 0, by_subject: bool = True
) -> tuple[list[FERSample], list[FERSample]]:
    """(kept, held out): about `fraction` of the samples held out as a validation split.

    With by_subject and subjects known for every sample, whole subjects are held out (no person on both sides);
    with no subjects at all, samples are drawn at random. Both sides are always non-empty.
    """
    if not 0 < fraction < 1:
        raise FraferError(f"holdout fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    if len(samples) < 2:
        raise FraferError(f"a holdout split needs at least 2 samples, got {len(samples)}")
    rng = np.random.default_rng(seed)
    target = fraction * len(samples)
    if by_subject and any(sample.subject is not None for sample in samples):
        groups = subject_groups(samples)  # raises if only some samples know their subject
        if len(groups) < 2:
            raise FraferError(f"a subject-disjoint holdout needs at least 2 subjects, found {len(groups)}")
        subjects = [sorted(groups)[i] for i in rng.permutation(len(groups))]
        sizes = np.cumsum([len(groups[s]) for s in subjects])[:-1]  # held-out count after taking 1, 2, … subjects
        take = int(np.argmin(np.abs(sizes - target))) + 1
        held = sorted(i for s in subjects[:take] for i in groups[s])
    else:
        count = min(max(int(round(target)), 1), len(samples) - 1)
        held = sorted(rng.permutation(len(samples))[:count].tolist())
    held_set = set(held)
    kept = [sample for i, sample in enumerate(samples) if i not in held_set]
    return kept, [samples[i] for i in held]
