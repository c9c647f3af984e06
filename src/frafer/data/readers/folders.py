"""A plain folder tree of images (any depth), e.g. an unlabelled face crawl for pre-training."""

from __future__ import annotations

import os
from pathlib import Path

from frafer.data.readers.images import IMAGE_EXTENSIONS, is_image_file
from frafer.errors import FraferError


def list_images(root: str | Path, allow_empty: bool = False) -> list[Path]:
    """All image files under `root`, recursively, in a fixed order (sorted by relative path).

    Only IMAGE_EXTENSIONS count (any letter case); files and folders whose name starts with '.'
    are skipped (editor backups, .ipynb_checkpoints, macOS ._ files). Symlinked folders are
    followed once each. Raises FraferError for a missing root, a file, or (unless allow_empty,
    for callers that merge several folders) a tree with no images.
    """
    root = Path(root)
    if not root.exists():
        raise FraferError(f"data root {root} does not exist")
    accepted = ", ".join(IMAGE_EXTENSIONS)
    if not root.is_dir():
        raise FraferError(f"data root {root} is a file, expected a folder of images ({accepted})")
    images = sorted(_walk_images(root), key=lambda path: path.relative_to(root).parts)
    if not images and not allow_empty:
        raise FraferError(
            f"data root {root} contains no images: expected files ending in {accepted} "
            "(searched all sub-folders, skipping hidden ones)"
        )
    return images


def _walk_images(root: Path) -> list[Path]:
    """Image paths under root, skipping hidden entries and visiting each real folder only once."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop or two links to the same folder
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and is_image_file(name) and path.is_file():
                found.append(path)
    return found
