"""Labelled images in class folders (root/<class>/**/*.png): the kNN monitor's memory bank and queries."""

from __future__ import annotations

from pathlib import Path

from frafer.data.readers.folders import list_images
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
