"""Crowd labels: turning 10 annotator votes into a training target (Barsoum et al. 2016, FERPlus).

Votes are counts over VOTE_COLUMNS: the 8 canonical expressions, then "unknown" and "not a face". Each mode keeps
or drops an image and gives a target over the first `num_classes` expressions:

* majority     — the top class if it has more than half of the votes; one-hot.
* multilabel   — every class with at least 30 % of the votes (kept if they hold more than half); the loss accepts
                 whichever of them the model rates highest.
* probability  — the distribution truncated to its top classes covering at least 75 % (at most 3); one label is
                 drawn from it per epoch.
* crossentropy — the same truncated distribution, used as a soft target.

Before any mode, a class with a single vote is zeroed (treated as an annotator slip). An image whose target would
be "unknown" or "not a face" is dropped. Validation and test always use `majority`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from frafer.data.fer.dataset import NO_LABEL, FERSample
from frafer.data.fer.labels import EXPRESSIONS, FERPLUS_COLUMNS

VOTE_COLUMNS = (*EXPRESSIONS, "unknown", "not_face")
CROWD_MODES = ("majority", "multilabel", "probability", "crossentropy")

MAJORITY_SHARE = 0.5  # top class must hold more than this share of the votes
MULTILABEL_SHARE = 0.3  # a class with at least this share is an accepted answer
COVERAGE = 0.75  # probability / crossentropy: keep top classes until they cover this share …
MAX_CLASSES = 3  # … or this many classes are taken

_FERPLUS_TO_CANONICAL = {
    "neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad", "anger": "anger",
    "disgust": "disgust", "fear": "fear", "contempt": "contempt", "unknown": "unknown", "NF": "not_face",
}


def votes_from_ferplus(counts: Sequence[float]) -> np.ndarray:
    """Reorder 10 counts given in FERPlus column order (neutral, happiness, surprise, …) into VOTE_COLUMNS."""
    if len(counts) != len(FERPLUS_COLUMNS):
        columns = ", ".join(FERPLUS_COLUMNS)
        raise ValueError(f"expected {len(FERPLUS_COLUMNS)} vote counts ({columns}), got {len(counts)}")
    votes = np.zeros(len(VOTE_COLUMNS))
    for column, count in zip(FERPLUS_COLUMNS, counts, strict=True):
        votes[VOTE_COLUMNS.index(_FERPLUS_TO_CANONICAL[column])] = float(count)
    return votes


def clean_votes(votes: Sequence[float]) -> np.ndarray:
    """Zero every class that got a single vote (or less)."""
    votes = np.asarray(votes, dtype=np.float64)
    if votes.shape != (len(VOTE_COLUMNS),) or (votes < 0).any():
        raise ValueError(f"votes must be {len(VOTE_COLUMNS)} non-negative counts over {VOTE_COLUMNS}, got {votes}")
    return np.where(votes <= 1.0, 0.0, votes)


def crowd_target(votes: Sequence[float], mode: str, num_classes: int = 8) -> np.ndarray | None:
    """The (num_classes,) target of one image under `mode`, summing to 1, or None if the image is dropped."""
    if mode not in CROWD_MODES:
        raise ValueError(f"unknown crowd-label mode '{mode}'; choose one of {', '.join(CROWD_MODES)}")
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    votes = clean_votes(votes)
    total = votes.sum()
    if total <= 0:
        return None
    if mode == "majority":
        top = int(np.argmax(votes))
        kept = np.zeros_like(votes)
        if votes[top] > MAJORITY_SHARE * total:
            kept[top] = votes[top]
    elif mode == "multilabel":
        kept = np.where(votes >= MULTILABEL_SHARE * total, votes, 0.0)
        if kept.sum() <= MAJORITY_SHARE * total:
            return None
    else:
        kept = _top_covering(votes)
        if kept is None or kept.sum() <= MAJORITY_SHARE * total:
            return None
    if kept.sum() <= 0 or int(np.argmax(kept)) >= num_classes:  # unknown, not-a-face, or a class not trained
        return None
    target = kept[:num_classes]
    return target / target.sum()


def _top_covering(votes: np.ndarray) -> np.ndarray | None:
    """Take classes in order of votes (ties together) until COVERAGE of the votes or MAX_CLASSES are taken.

    Reaching "unknown" / "not a face" stops the walk; it is kept only if nothing else was taken yet (and the
    image is then dropped by the caller). More than MAX_CLASSES taken (a tie) drops the image.
    """
    remaining, kept = votes.copy(), np.zeros_like(votes)
    total, count = votes.sum(), 0
    while kept.sum() < COVERAGE * total and count < MAX_CLASSES:
        top = remaining.max()
        if top <= 0:
            break
        for i in np.flatnonzero(remaining == top):
            if i >= len(EXPRESSIONS):
                if kept.sum() == 0:
                    kept[i] = top
                return kept if count <= MAX_CLASSES else None
            kept[i], remaining[i] = top, 0.0
            count += 1
    return kept if count <= MAX_CLASSES else None


def majority_label(votes: Sequence[float], num_classes: int = 8) -> int:
    """The majority class id, or -1 when no class has more than half of the (cleaned) votes."""
    target = crowd_target(votes, "majority", num_classes)
    return -1 if target is None else int(np.argmax(target))


def crowd_targets(samples: list[FERSample], mode: str, num_classes: int = 8) -> tuple[list[int], np.ndarray]:
    """The samples kept under `mode` → (their indices, (M, num_classes) targets), in input order.

    A sample with votes gets `crowd_target`; one without votes is one-hot on its label, and is dropped when it has
    no label (NO_LABEL) or its label is a class not trained (contempt with num_classes=7), as a vote would be.
    """
    if mode not in CROWD_MODES:
        raise ValueError(f"unknown crowd-label mode '{mode}'; choose one of {', '.join(CROWD_MODES)}")
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    kept, targets = [], []
    for i, sample in enumerate(samples):
        if sample.votes is not None:
            target = crowd_target(sample.votes, mode, num_classes)
        elif sample.label != NO_LABEL and not 0 <= sample.label < len(EXPRESSIONS):
            last = len(EXPRESSIONS) - 1
            raise ValueError(f"sample '{sample.key}' has label {sample.label}; expected {NO_LABEL} or 0..{last}")
        elif 0 <= sample.label < num_classes:
            target = np.zeros(num_classes)
            target[sample.label] = 1.0
        else:
            target = None
        if target is not None:
            kept.append(i)
            targets.append(target)
    return kept, np.stack(targets) if targets else np.zeros((0, num_classes))


def draw_label(target: Sequence[float], seed: int, epoch: int, index: int) -> int:
    """The probability mode's label for one sample in one epoch, drawn from `target` (C,).

    The generator is seeded by (seed, epoch, index) alone, so a resumed run, another worker order or another
    number of processes draws the same label for the same sample and epoch.
    """
    p = np.asarray(target, dtype=np.float64)
    if p.ndim != 1 or (p < 0).any() or not p.sum() > 0:
        raise ValueError(f"draw_label needs a 1-D non-negative target with positive sum, got {p}")
    if min(seed, epoch, index) < 0:
        raise ValueError(f"draw_label needs non-negative seed, epoch and index, got {seed}, {epoch}, {index}")
    rng = np.random.default_rng([seed, epoch, index])
    return int(rng.choice(len(p), p=p / p.sum()))
