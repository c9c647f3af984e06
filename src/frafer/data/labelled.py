"""Labelled images in class folders (root/<class>/**/*.png), for the kNN monitor and evaluation."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from frafer.data.formats.folders import list_images
from frafer.data.images import UnreadableImage, load_rgb
from frafer.errors import FraferError


def class_folder_items(root: str | Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """[(image path, class index)] and the class names (sorted sub-folder names unless `classes` is given)."""
    root = Path(root)
    if not root.is_dir():
        raise FraferError(f"labelled data root {root} does not exist or is not a folder")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = list(classes) if classes is not None else found
    if not classes:
        raise FraferError(f"labelled data root {root} has no class sub-folders")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise FraferError(f"{root}: class folder '{unknown[0]}' is not one of {', '.join(classes)}")
    items = []
    for label, name in enumerate(classes):
        if (root / name).is_dir():
            items += [(p, label) for p in list_images(root / name, allow_empty=True)]
    if not items:
        raise FraferError(f"labelled data root {root} has no images in its class folders")
    return items, classes


class LabelledImages(Dataset):
    """(image tensor, label) per item; an unreadable file yields None and is dropped by `collate_labelled`."""

    def __init__(self, items: list[tuple[Path, int]], transform) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            return self.transform(load_rgb(path)), label
        except UnreadableImage:
            return None


def collate_labelled(batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack readable samples; also return how many were unreadable."""
    good = [b for b in batch if b is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), len(batch) - len(good)
