"""Small checks shared by the labelled-expression readers (AffectNet, RAF-DB, FER2013, FERPlus, folders, synthetic).

They keep the error messages uniform: every user mistake names the file (and line) and what was expected.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from frafer.errors import FraferError

# FER2013 / FERPlus "Usage" column → split name.
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def require_dir(path: str | Path, what: str) -> Path:
    """`path` as a Path; FraferError unless it is an existing folder."""
    path = Path(path)
    if not path.is_dir():
        state = "is a file" if path.exists() else "does not exist"
        raise FraferError(f"{what} {path} {state}; expected a folder")
    return path


def require_file(path: str | Path, what: str) -> Path:
    """`path` as a Path; FraferError unless it is an existing file."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise FraferError(f"{what} {path} {state}; expected a file")
    return path


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) for each non-blank CSV row, header included (BOM tolerated)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        for row in reader:
            fields = [field.strip() for field in row]
            if any(fields):
                yield reader.line_num, fields


def parse_int(value: str, path: Path, line: int, what: str, allowed: range | None = None) -> int:
    """An integer field (optionally within `allowed`); FraferError naming the file, line and value otherwise."""
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or (allowed is not None and number not in allowed):
        expected = "an integer" if allowed is None else f"an integer {allowed.start}..{allowed.stop - 1}"
        raise FraferError(f"{path} line {line}: {what} must be {expected}, got {value!r}")
    return number


def parse_count(value: str, path: Path, line: int, what: str) -> int:
    """A non-negative integer field (a vote count, an id); FraferError naming the file, line and value otherwise."""
    if not (value.isascii() and value.isdigit()):
        raise FraferError(f"{path} line {line}: {what} must be a non-negative integer, got {value!r}")
    return int(value)


def parse_usage(value: str, path: Path, line: int) -> str:
    """Map a FER2013-style Usage value (Training / PublicTest / PrivateTest) to train / val / test."""
    if value not in USAGE_SPLITS:
        raise FraferError(f"{path} line {line}: Usage must be one of {', '.join(USAGE_SPLITS)}, got {value!r}")
    return USAGE_SPLITS[value]


def check_some_found(listed: Counter, missing: Counter, list_file: Path, image_dir: Path) -> None:
    """Raise when every image a split lists is missing on disk: the user pointed at the wrong folder."""
    for split, count in listed.items():
        if count and missing[split] == count:
            raise FraferError(
                f"none of the {count} '{split}' images listed in {list_file} exist under {image_dir}; "
                "is the dataset root right?"
            )


def add_skips(skipped: dict[str, int], counts: Counter) -> dict[str, int]:
    """Merge non-zero skip counts into `skipped` (reason → count) and return it."""
    for reason, count in counts.items():
        if count:
            skipped[reason] = skipped.get(reason, 0) + count
    return skipped
