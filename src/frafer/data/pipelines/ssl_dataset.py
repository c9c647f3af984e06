"""Two-view dataset for self-supervised pre-training that never dies on one bad file.

Each sample is keyed by `(index, sample_seed)`: the augmentation is seeded from sample_seed inside
a forked RNG, so a sample is the same in the main process or any worker, and the caller's RNG
(used for dropout and the like) is left exactly as it was. An unreadable file is replaced by the
next readable one, keeping the batch full, and its path travels with the batch so that the
training loop can report it (see SkipReport).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from frafer.data.readers.images import Box, UnreadableImage, load_rgb
from frafer.errors import FraferError

Item = str | Path | tuple[str | Path, Box | None]
TwoViews = Callable[[Image.Image], tuple[torch.Tensor, torch.Tensor]]
Sample = tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]


class _FileSource:
    """Images read from disk: one (path, crop box or None) per index."""

    def __init__(self, items: Iterable[Item]):
        self.items = [_as_file_item(item) for item in items]

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int) -> Image.Image:
        path, box = self.items[index]
        return load_rgb(path, box)


class _MemorySource:
    """Images served from memory by a sequence whose `[i]` is (PIL image, label); labels ignored."""

    def __init__(self, images: Sequence[tuple[Image.Image, Any]]):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> Image.Image:
        image, _label = self.images[index]
        return image if image.mode == "RGB" else image.convert("RGB")


class UnlabelledImages(Dataset):
    """Unlabelled images -> (view1, view2, skipped paths), for BYOL-style pre-training.

    items: image paths, or (path, box) pairs with box = (x, y, w, h) or None (VGGFace2Index.items).
    transform: PIL image -> two view tensors (TwoViewTransform).
    max_consecutive_failures: unreadable files in a row before the data is declared broken.
    Use `from_source` for images held in memory (e.g. synthetic faces).
    """

    def __init__(
        self,
        items: Iterable[Item] | _MemorySource,
        transform: TwoViews,
        max_consecutive_failures: int = 50,
    ):
        self.source = items if isinstance(items, _MemorySource) else _FileSource(items)
        if len(self.source) == 0:
            raise FraferError("the pre-training dataset is empty: no images were given")
        if max_consecutive_failures < 1:
            raise FraferError(f"max_consecutive_failures must be >= 1, got {max_consecutive_failures}")
        self.transform = transform
        self.max_consecutive_failures = max_consecutive_failures

    @classmethod
    def from_source(
        cls,
        images: Sequence[tuple[Image.Image, Any]],
        transform: TwoViews,
        max_consecutive_failures: int = 50,
    ) -> UnlabelledImages:
        """Build from an in-memory sequence whose `[i]` returns (PIL image, label); labels are ignored."""
        return cls(_MemorySource(images), transform, max_consecutive_failures)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        """Two seeded views of image `index`, or of the next readable one if it cannot be read.

        key: (index, sample_seed), or a plain index which then is its own seed.
        Returns (view1, view2, skipped) with views (3, H, W) and skipped the paths passed over.
        """
        index, seed = _split_key(key, len(self))
        image, skipped = self._read_from(index)
        with torch.random.fork_rng(devices=[]):  # the caller's CPU RNG comes back untouched
            torch.manual_seed(seed)
            view1, view2 = self.transform(image)
        return view1, view2, skipped

    def _read_from(self, index: int) -> tuple[Image.Image, tuple[str, ...]]:
        """The first readable image at index, index + 1, ... (wrapping), and the paths skipped."""
        failures: list[UnreadableImage] = []
        attempts = min(self.max_consecutive_failures, len(self))
        for step in range(attempts):
            try:
                image = self.source.read((index + step) % len(self))
            except UnreadableImage as err:
                failures.append(err)
                continue
            return image, tuple(err.path for err in failures)
        raise FraferError(_broken_data_message(index, failures))


def collate_two_views(batch: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Stack a list of samples into (B, 3, H, W) view batches plus every path skipped for them."""
    view1 = torch.stack([sample[0] for sample in batch])
    view2 = torch.stack([sample[1] for sample in batch])
    skipped = [path for sample in batch for path in sample[2]]
    return view1, view2, skipped


class SkipReport:
    """The unreadable files skipped during an epoch, reported once per epoch by the training loop.

    Paths are kept once each, in the order first seen (a bad file can be passed over by several
    samples when its neighbours are bad too).
    """

    def __init__(self) -> None:
        self._paths: dict[str, None] = {}  # an ordered set

    def add(self, paths: Iterable[str]) -> None:
        """Record the paths skipped for one batch (the third item of collate_two_views)."""
        self._paths.update(dict.fromkeys(str(path) for path in paths))

    @property
    def count(self) -> int:
        """Number of distinct files skipped so far."""
        return len(self._paths)

    def first(self, n: int = 5) -> list[str]:
        """The first `n` distinct skipped paths."""
        return list(self._paths)[:n]

    def reset(self) -> None:
        """Start a new epoch."""
        self._paths.clear()

    def summary(self, n: int = 5) -> str | None:
        """One line such as 'skipped 3 unreadable files this epoch: a.jpg, b.png, c.jpg', or None."""
        if not self._paths:
            return None
        noun = "file" if self.count == 1 else "files"
        shown = ", ".join(self.first(n))
        more = f", … (+{self.count - n} more)" if self.count > n else ""
        return f"skipped {self.count} unreadable {noun} this epoch: {shown}{more}"


def _as_file_item(item: Item) -> tuple[Path, Box | None]:
    """Accept a path or a (path, box) pair."""
    if isinstance(item, tuple):
        path, box = item
        return Path(path), box
    return Path(item), None


def _split_key(key: int | tuple[int, int], length: int) -> tuple[int, int]:
    """(index, seed) from a sampler key; a plain index is its own seed."""
    if isinstance(key, tuple | list):
        index, seed = (operator.index(part) for part in key)
    else:
        index = seed = operator.index(key)
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} images")
    return index, seed


def _broken_data_message(index: int, failures: list[UnreadableImage]) -> str:
    """One line naming how many files failed in a row and the first few with their reasons."""
    shown = "; ".join(f"{err.path} ({err.reason})" for err in failures[:3])
    return (
        f"the image data looks broken: {len(failures)} unreadable files in a row from index {index}, "
        f"first: {shown}"
    )
