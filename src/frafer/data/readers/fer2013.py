"""FER2013: one CSV, `emotion,pixels,Usage`, each image 2304 space-separated grey values (48×48).

emotion 0–6 = Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral; Usage Training / PublicTest / PrivateTest →
train / val / test. A row whose pixels do not make a 48×48 image is skipped and counted. The pixel parser is
shared with FERPlus, whose votes are aligned row by row with this file.

The 295 MB text is parsed once: the decoded rows are kept in `<csv>.frafer-cache.npz` beside it (or, where that
folder is read-only, under $XDG_CACHE_HOME/frafer), keyed by the CSV's size, modification time and a digest of its
first and last MiB, and every later command loads them in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from frafer.data.fer.dataset import FERDataset, FERSample, check_classes
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.fer_common import USAGE_SPLITS, add_skips, csv_rows, parse_int, parse_usage, require_file
from frafer.errors import FraferError
from frafer.files import atomic_write

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


CACHE_VERSION = 1
USAGES = ("Training", "PublicTest", "PrivateTest")


def read_fer2013_pixels(csv_path: str | Path) -> list[PixelRow]:
    """Every data row of a fer2013.csv as (row, emotion code, pixels, Usage).

    row counts data rows from 0 (the header is not a row), which is how fer2013new.csv aligns with it. pixels is
    a (48, 48) uint8 array, or None when the field is not 2304 integers in 0..255. A bad emotion (not 0–6), a
    bad Usage or a wrong number of fields is a FraferError naming the line. A parse cache of the same file is
    used when there is one, and written after a full parse.
    """
    path = require_file(csv_path, "FER2013 CSV")
    key = _cache_key(path)
    for candidate in cache_paths(path):
        rows = _load_cache(candidate, key)
        if rows is not None:
            tqdm.write(f"{path.name}: {len(rows)} rows from the parse cache {candidate}")
            return rows
    rows = _parse_fer2013(path)
    for candidate in cache_paths(path):
        if _save_cache(candidate, key, rows):
            tqdm.write(f"{path.name}: parsed {len(rows)} rows; cached in {candidate} for later commands")
            break
    return rows


def _cache_key(path: Path) -> np.ndarray:
    """Format version, size, modification time and a digest of the first and last MiB of the CSV."""
    stat = path.stat()
    with path.open("rb") as f:
        head = f.read(1 << 20)
        f.seek(max(0, stat.st_size - (1 << 20)))
        digest = hashlib.sha256(head + f.read()).digest()
    return np.array([CACHE_VERSION, stat.st_size, stat.st_mtime_ns, int.from_bytes(digest[:7], "little")],
                    dtype=np.int64)


def cache_paths(csv_path: Path) -> list[Path]:
    """Where a CSV's parse cache may live: beside it, else in the user's cache folder (named by its full path)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "frafer"
    digest = hashlib.sha256(str(csv_path.resolve()).encode()).hexdigest()[:16]
    return [csv_path.with_name(csv_path.name + ".frafer-cache.npz"), home / f"{csv_path.stem}-{digest}.npz"]


def _load_cache(path: Path, key: np.ndarray) -> list[PixelRow] | None:
    """The rows of a cache file made from the same CSV (size and time); None if absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if z["key"].shape != key.shape or not (z["key"] == key).all():
                return None
            rows, codes, usage, ok, pixels = z["rows"], z["codes"], z["usage"], z["ok"], z["pixels"]
    except (OSError, ValueError, KeyError):
        return None
    return [(int(r), int(c), pixels[i] if ok[i] else None, USAGES[u])
            for i, (r, c, u) in enumerate(zip(rows.tolist(), codes.tolist(), usage.tolist(), strict=True))]


def _save_cache(path: Path, key: np.ndarray, rows: list[PixelRow]) -> bool:
    """Write the cache atomically; False where the folder cannot be written."""
    ok = np.array([p is not None for _, _, p, _ in rows], dtype=bool)
    pixels = np.zeros((len(rows), SIZE, SIZE), dtype=np.uint8)
    for i, (_, _, p, _) in enumerate(rows):
        if p is not None:
            pixels[i] = p
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=key, rows=np.array([r for r, _, _, _ in rows], dtype=np.int64),
                     codes=np.array([c for _, c, _, _ in rows], dtype=np.int8),
                     usage=np.array([USAGES.index(u) for _, _, _, u in rows], dtype=np.int8), ok=ok, pixels=pixels)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
        return True
    except OSError:
        return False


def _parse_fer2013(path: Path) -> list[PixelRow]:
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
