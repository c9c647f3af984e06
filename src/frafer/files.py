"""Atomic file writes: a reader (or a resumed run) never sees half a file, whatever interrupts the writer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Let `write` fill a temporary file beside `path`, then rename it into place; on failure nothing is left."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """`text` as UTF-8, byte for byte (no newline translation: CSV line ends stay as written)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))
