"""Labelled expression data in one shape, whatever its native format.

Every format reader (`frafer.data.readers.*`) returns an `FERDataset`: named splits of `FERSample`s whose labels
are indices into the canonical vocabulary `EXPRESSIONS` (so class id 3 is "surprise" in every dataset), plus the
counts of anything the reader skipped. `FERImages` turns one split into a torch Dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.images import UnreadableImage, load_rgb
from frafer.errors import FraferError

NO_LABEL = -1  # a sample known only by its votes (no majority): usable by crowd-label training, never evaluated


@dataclass(frozen=True, eq=False)
class FERSample:
    """One labelled face image.

    image: a file on disk, or (H, W) uint8 grey pixels read from a CSV (FER2013 / FERPlus).
    label: index into EXPRESSIONS, or NO_LABEL.
    votes: (10,) annotator counts in VOTE_COLUMNS order (frafer.data.fer.crowd), or None.
    subject: the person, for subject-disjoint folds; None when unknown.
    box: (x, y, w, h) face crop applied on load, or None.
    key: a stable name (relative path or CSV row) used in reports and duplicate checks.
    fold: the dataset's own fold of the sample (a fold column such as CK+'s fold10_by_subject), or None.

    Readers give labels as EXPRESSIONS indices; `prepare_splits` re-indexes them into the trained class list.
    """

    image: Path | np.ndarray
    label: int
    key: str
    votes: np.ndarray | None = None
    subject: str | None = None
    box: tuple[float, float, float, float] | None = None
    fold: str | None = None


@dataclass
class FERDataset:
    """Splits of one dataset ("train", "val", "test"; some may be absent) over `classes`.

    classes: the class names this dataset has, in EXPRESSIONS order (CK+ without neutral has 7, AffectNet-8 all
    8); sample labels index EXPRESSIONS. skipped: reason → count of rows the reader dropped.
    """

    name: str
    splits: dict[str, list[FERSample]]
    classes: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> list[FERSample]:
        if name not in self.splits:
            raise FraferError(f"{self.name} has no '{name}' split; it has {', '.join(self.splits) or 'none'}")
        return self.splits[name]


def check_classes(classes) -> tuple[str, ...]:
    """A non-empty set of canonical expressions, returned in EXPRESSIONS order (the order of every head)."""
    unknown = [c for c in classes if c not in EXPRESSIONS]
    if unknown or not classes:
        raise FraferError(f"classes must be a non-empty subset of {', '.join(EXPRESSIONS)}, got {tuple(classes)}")
    return tuple(c for c in EXPRESSIONS if c in set(classes))


def load_sample_image(sample: FERSample) -> Image.Image:
    """The sample as an RGB PIL image (CSV pixels become 3-channel grey); raises UnreadableImage."""
    if isinstance(sample.image, np.ndarray):
        image = Image.fromarray(sample.image).convert("RGB")
        return image if sample.box is None else image.crop(_box_to_ltrb(sample.box))
    return load_rgb(sample.image, box=sample.box)


def _box_to_ltrb(box) -> tuple[int, int, int, int]:
    x, y, w, h = (int(round(v)) for v in box)
    return x, y, x + w, y + h


class FERImages(Dataset):
    """(image tensor, target, index) per sample; an unreadable file yields None (dropped and counted by collate).

    Keys are plain indices or (index, sample_seed) pairs from EpochBatchSampler: the augmentation is then seeded
    from sample_seed in a forked RNG, so a sample is identical in any worker and after a resume.
    `target_fn(sample, index, sample_seed)` returns what the loss needs (by default the class id); crowd-label
    modes use the seed to draw a fresh label per epoch.
    """

    def __init__(self, samples: list[FERSample], transform: Callable, target_fn: Callable | None = None) -> None:
        self.samples, self.transform = samples, transform
        self.target_fn = target_fn or (lambda sample, index, seed: sample.label)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, key)
        sample = self.samples[index]
        try:
            image = load_sample_image(sample)
        except UnreadableImage:
            return None
        with torch.random.fork_rng(devices=[]):  # the caller's RNG (dropout) comes back untouched
            torch.manual_seed(seed)
            image = self.transform(image)
        return image, self.target_fn(sample, index, seed), index


def collate_fer(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Stack readable samples → (images (B,3,H,W), targets, indices, number unreadable)."""
    good = [b for b in batch if b is not None]
    missing = len(batch) - len(good)
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), missing
    images = torch.stack([g[0] for g in good])
    targets = torch.stack([torch.as_tensor(g[1]) for g in good])
    return images, targets, torch.tensor([g[2] for g in good]), missing
