"""FER2013: one CSV, `emotion,pixels,Usage`, each image 2304 space-separated grey values (48×48).

emotion 0–6 = Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral; Usage Training / PublicTest / PrivateTest →
train / val / test. A row whose pixels do not make a 48×48 image is skipped and counted. The pixel parser is
shared with FERPlus, whose votes are aligned row by row with this file.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from frafer.data.fer import FERDataset, FERSample, check_classes
from frafer.data.formats.fer_common import USAGE_SPLITS, add_skips, csv_rows, parse_int, parse_usage, require_file
from frafer.data.labels import EXPRESSIONS
from frafer.errors import FraferError

SIZE = 48
COLUMNS = ("emotion", "pixels", "usage")  # matched case-insensitively, in any order
# FER2013 emotion code → canonical name.
CODES = {0: "anger", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}

PixelRow = tuple[int, int, "np.ndarray | None", str]  # (row, emotion code, (48, 48) uint8 or None, Usage)


def read_fer2013(root_or_csv: str | Path) -> FERDataset:
    """Read fer2013.csv (given, or found in the folder) into train / val / test over the 7 basic expressions."""
    path = find_fer2013_csv(root_or_csv)
    splits: dict[str, list[FERSample]] = {split: [] for split in USAGE_SPLITS.values()}
    skipped: Counter = Counter()
    for row, code, pixels, usage in read_fer2013_pixels(path):
        if pixels is None:
            skipped["malformed pixels"] += 1
            continue
        label = EXPRESSIONS.index(CODES[code])
        splits[USAGE_SPLITS[usage]].append(FERSample(image=pixels, label=label, key=f"{path.name}:{row}"))
    if not any(splits.values()):
        raise FraferError(f"{path} holds no usable rows (every pixels field was malformed)")
    splits = {split: samples for split, samples in splits.items() if samples}
    return FERDataset("FER2013", splits, check_classes(EXPRESSIONS[:7]), add_skips({}, skipped))


def find_fer2013_csv(root_or_csv: str | Path) -> Path:
    """The CSV itself, or `fer2013.csv` (also `fer2013/fer2013.csv`, as the archive unpacks) inside a folder."""
    path = Path(root_or_csv)
    if path.is_dir():
        for candidate in (path / "fer2013.csv", path / "fer2013" / "fer2013.csv"):
            if candidate.is_file():
                return candidate
        path = path / "fer2013.csv"
    return require_file(path, "FER2013 CSV")


def read_fer2013_pixels(csv_path: str | Path) -> list[PixelRow]:
    """Every data row of a fer2013.csv as (row, emotion code, pixels, Usage).

    row counts data rows from 0 (the header is not a row), which is how fer2013new.csv aligns with it. pixels is
    a (48, 48) uint8 array, or None when the field is not 2304 integers in 0..255. A bad emotion (not 0–6), a
    bad Usage or a wrong number of fields is a FraferError naming the line.
    """
    path = require_file(csv_path, "FER2013 CSV")
    rows = csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise FraferError(f"{path} is empty; expected the header emotion,pixels,Usage")
    header = [field.lower() for field in first[1]]
    shown = ",".join(first[1])
    if any(column not in header for column in COLUMNS):
        raise FraferError(f"{path} line {first[0]}: expected the header emotion,pixels,Usage, found {shown!r}")
    emotion, pixels, usage = (header.index(column) for column in COLUMNS)
    out: list[PixelRow] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy warns (not raises) on a non-number in older versions
        for row, (line, fields) in enumerate(rows):
            if len(fields) != len(header):
                raise FraferError(f"{path} line {line}: expected {len(header)} fields ({shown}), found {len(fields)}")
            code = parse_int(fields[emotion], path, line, "emotion", range(len(CODES)))
            parse_usage(fields[usage], path, line)
            out.append((row, code, parse_pixels(fields[pixels]), fields[usage]))
    return out


def parse_pixels(text: str) -> np.ndarray | None:
    """2304 space-separated integers 0..255 → a (48, 48) uint8 image; None if the text is anything else."""
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None
    if values.size != SIZE * SIZE or values.min() < 0 or values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(SIZE, SIZE)
