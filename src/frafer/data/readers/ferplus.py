"""FERPlus: the FER2013 images re-labelled by 10 annotators each (Barsoum et al. 2016).

Two native sources, which disagree on about 1,600 images, so the dataset name says which one was read:

* "csv": `fer2013new.csv` (`Usage,Image name,<10 vote columns>`), aligned row by row with `fer2013.csv`, which
  holds the pixels. Rows with an empty Image name (not a face) are skipped and counted.
* "folders": the FERPlus repository's `data/FER2013{Train,Valid,Test}/label.csv` (no header: image name, an
  optional face box `(left, top, right, bottom)`, then the 10 votes) with the PNGs beside each label.csv.

Every sample carries its votes; its label is the majority class, or NO_LABEL when no class has a majority (kept in
train for the crowd-label modes, dropped from val / test, which are scored on majority labels). A row whose votes
give no target in any mode (top class unknown / not a face) is dropped and counted.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from frafer.data.fer.crowd import crowd_target, majority_label, votes_from_ferplus
from frafer.data.fer.dataset import NO_LABEL, FERDataset, FERSample, check_classes
from frafer.data.fer.labels import EXPRESSIONS, FERPLUS_COLUMNS
from frafer.data.readers.fer2013 import read_fer2013_pixels
from frafer.data.readers.fer_common import (
    add_skips,
    check_some_found,
    csv_rows,
    parse_count,
    parse_usage,
    require_dir,
    require_file,
)
from frafer.errors import FraferError

NEW_CSV = "fer2013new.csv"
NEW_HEADER = ("Usage", "Image name", *FERPLUS_COLUMNS)
FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
SOURCES = ("auto", "csv", "folders")
TARGET_MODES = ("crossentropy", "multilabel", "majority")  # a row with no target in all of these is useless


def read_ferplus(
    root: str | Path, fer2013_csv: str | Path | None = None, num_classes: int = 8, source: str = "auto"
) -> FERDataset:
    """Read FERPlus from `source` ("csv", "folders", or "auto": the folders when their PNGs exist, else the CSV)."""
    root = require_dir(root, "FERPlus root")
    if num_classes not in (7, 8):
        raise FraferError(f"FERPlus num_classes must be 7 or 8, got {num_classes!r}")
    if source not in SOURCES:
        raise FraferError(f"FERPlus source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "auto":
        source = _detect_source(root)
    skipped: Counter = Counter()
    if source == "csv":
        splits, fer_csv = _read_csv_source(root, fer2013_csv, num_classes, skipped)
        name = f"FERPlus-{num_classes} ({NEW_CSV} + {fer_csv.name})"
    else:
        splits = _read_folder_source(root, num_classes, skipped)
        name = f"FERPlus-{num_classes} (data/FER2013*/label.csv)"
    return FERDataset(name, splits, check_classes(EXPRESSIONS[:num_classes]), add_skips({}, skipped))


def _detect_source(root: Path) -> str:
    """"folders" when data/FER2013Train has label.csv and PNGs, else "csv" when fer2013new.csv exists."""
    train_dir = root / "data" / "FER2013Train"
    has_pngs = train_dir.is_dir() and any(e.name.lower().endswith(".png") for e in os.scandir(train_dir))
    if (train_dir / "label.csv").is_file() and (has_pngs or not (root / NEW_CSV).is_file()):
        return "folders"
    if (root / NEW_CSV).is_file():
        return "csv"
    raise FraferError(
        f"FERPlus root {root} has neither {root / NEW_CSV} nor {train_dir / 'label.csv'}; "
        "point root at the FERPlus folder"
    )


def _sample_label(votes: np.ndarray, split: str, num_classes: int, skipped: Counter) -> int | None:
    """The majority label (NO_LABEL allowed in train only), or None when the row is dropped (and counted)."""
    if all(crowd_target(votes, mode, num_classes) is None for mode in TARGET_MODES):
        skipped["no usable votes (unknown / not a face)"] += 1
        return None
    label = majority_label(votes, num_classes)
    if label == NO_LABEL and split != "train":
        skipped["no majority (val / test)"] += 1
        return None
    return label


def _parse_votes(fields: list[str], path: Path, line: int) -> np.ndarray:
    """10 non-negative integer counts in FERPlus column order → votes in VOTE_COLUMNS order."""
    if len(fields) != len(FERPLUS_COLUMNS):
        raise FraferError(
            f"{path} line {line}: expected {len(FERPLUS_COLUMNS)} vote counts ({','.join(FERPLUS_COLUMNS)}), "
            f"found {len(fields)}"
        )
    counts = [
        parse_count(value, path, line, f"the {column} vote count")
        for column, value in zip(FERPLUS_COLUMNS, fields, strict=True)
    ]
    return votes_from_ferplus(counts)


def find_fer2013_for(root: Path, fer2013_csv: str | Path | None) -> Path:
    """fer2013.csv: as given, else in root (or root/fer2013/), else in root's parent."""
    if fer2013_csv is not None:
        return require_file(fer2013_csv, "fer2013.csv for FERPlus")
    candidates = [root / "fer2013.csv", root / "fer2013" / "fer2013.csv", root.parent / "fer2013.csv"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FraferError(
        f"FERPlus {root / NEW_CSV} needs the pixels of fer2013.csv; not found at {', '.join(map(str, candidates))} "
        "(pass fer2013_csv=...)"
    )


def _read_csv_source(
    root: Path, fer2013_csv: str | Path | None, num_classes: int, skipped: Counter
) -> tuple[dict[str, list[FERSample]], Path]:
    """Samples from fer2013new.csv votes and fer2013.csv pixels, aligned row by row."""
    new_csv = require_file(root / NEW_CSV, "FERPlus vote file")
    fer_csv = find_fer2013_for(root, fer2013_csv)
    rows = list(csv_rows(new_csv))
    if not rows or tuple(rows[0][1]) != NEW_HEADER:
        found = ",".join(rows[0][1]) if rows else "nothing"
        raise FraferError(f"{new_csv} line 1: expected the header {','.join(NEW_HEADER)}, found {found!r}")
    rows = rows[1:]
    pixel_rows = read_fer2013_pixels(fer_csv)
    if len(rows) != len(pixel_rows):
        raise FraferError(
            f"{new_csv} has {len(rows)} rows but {fer_csv} has {len(pixel_rows)}; they must align one to one"
        )
    splits: dict[str, list[FERSample]] = {split: [] for split in FOLDERS.values()}
    for (line, fields), (row, _, pixels, usage) in zip(rows, pixel_rows, strict=True):
        if len(fields) != len(NEW_HEADER):
            raise FraferError(f"{new_csv} line {line}: expected {len(NEW_HEADER)} fields, found {len(fields)}")
        split = parse_usage(fields[0], new_csv, line)
        if fields[0] != usage:
            raise FraferError(
                f"{new_csv} line {line}: Usage {fields[0]} but row {row} of {fer_csv} says {usage}; "
                "the two files are not aligned (is this the original fer2013.csv?)"
            )
        if not fields[1]:
            skipped["no image name (not a face)"] += 1
            continue
        votes = _parse_votes(fields[2:], new_csv, line)
        if pixels is None:
            skipped["malformed pixels"] += 1
            continue
        label = _sample_label(votes, split, num_classes, skipped)
        if label is not None:
            splits[split].append(FERSample(image=pixels, label=label, key=f"{fer_csv.name}:{row}", votes=votes))
    return {split: samples for split, samples in splits.items() if samples}, fer_csv


def _read_folder_source(root: Path, num_classes: int, skipped: Counter) -> dict[str, list[FERSample]]:
    """Samples from data/FER2013{Train,Valid,Test}/label.csv and the PNGs beside them."""
    splits: dict[str, list[FERSample]] = {}
    for folder, split in FOLDERS.items():
        folder_dir = require_dir(root / "data" / folder, "FERPlus image folder")
        label_csv = require_file(folder_dir / "label.csv", "FERPlus label file")
        samples: list[FERSample] = []
        listed: Counter = Counter()
        missing: Counter = Counter()
        for line, fields in csv_rows(label_csv):
            if len(fields) not in (11, 12):
                raise FraferError(
                    f"{label_csv} line {line}: expected image name, optional face box and 10 vote counts, "
                    f"found {len(fields)} fields"
                )
            box = _parse_box(fields[1], label_csv, line) if len(fields) == 12 else None
            votes = _parse_votes(fields[-10:], label_csv, line)
            label = _sample_label(votes, split, num_classes, skipped)
            if label is None:
                continue
            listed[split] += 1
            image = folder_dir / fields[0]
            if not os.path.isfile(image):
                missing[split] += 1
                skipped["missing image"] += 1
                continue
            key = image.relative_to(root).as_posix()
            samples.append(FERSample(image=image, label=label, key=key, votes=votes, box=box))
        check_some_found(listed, missing, label_csv, folder_dir)
        splits[split] = samples
    return splits


def _parse_box(text: str, path: Path, line: int) -> tuple[float, float, float, float]:
    """FERPlus "(left, top, right, bottom)" → (x, y, w, h)."""
    parts = text.strip().removeprefix("(").removesuffix(")").split(",")
    try:
        left, top, right, bottom = (float(p) for p in parts)
    except ValueError:
        raise FraferError(f"{path} line {line}: face box must look like (0, 0, 48, 48), got {text!r}") from None
    if right <= left or bottom <= top:
        raise FraferError(f"{path} line {line}: face box {text!r} is empty (right <= left or bottom <= top)")
    return left, top, right - left, bottom - top
