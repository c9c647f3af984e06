"""AffectNet: `training.csv` / `validation.csv` with face boxes, or the common pre-split class-folder copies.

Native layout: `root/training.csv` and `root/validation.csv` (header `subDirectory_filePath,face_x,face_y,
face_width,face_height,facial_landmarks,expression,valence,arousal`; the released validation.csv may lack the
header), images under `root/Manually_Annotated_Images/<subDirectory_filePath>` or directly under root. The field
tests on the official validation set, so it becomes the `test` split. Alternative layout (auto-detected):
`root/{train,val}/<class>/*`, class folders named by AffectNet code (0–10) or expression name.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from frafer.data.fer.dataset import FERDataset, FERSample, check_classes
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.class_folders import expression_id, unknown_class_error, visible_dirs
from frafer.data.readers.fer_common import add_skips, check_some_found, csv_rows, parse_int, require_dir
from frafer.data.readers.folders import list_images
from frafer.errors import FraferError

HEADER = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks", "expression",
    "valence", "arousal",
)
# AffectNet expression code → canonical name; 8–10 are not expressions and are dropped.
CODES = {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt"}
DROPPED = {8: "none (code 8)", 9: "uncertain (code 9)", 10: "no face (code 10)"}
IMAGE_DIR = "Manually_Annotated_Images"
CSV_SPLITS = {"training.csv": "train", "validation.csv": "test"}


def read_affectnet(root: str | Path, num_classes: int = 7) -> FERDataset:
    """Read AffectNet-7 (contempt dropped and counted) or AffectNet-8; `train` and `test` (official validation)."""
    root = require_dir(root, "AffectNet root")
    if num_classes not in (7, 8):
        raise FraferError(f"AffectNet num_classes must be 7 or 8, got {num_classes!r}")
    classes = check_classes(EXPRESSIONS[:num_classes])
    skipped: Counter = Counter()
    if any((root / name).exists() for name in CSV_SPLITS):
        splits = {split: _read_csv(root, name, num_classes, skipped) for name, split in CSV_SPLITS.items()}
        layout = "training.csv / validation.csv"
    elif (root / "train").is_dir():
        splits = _read_class_folders(root, num_classes, skipped)
        layout = "class folders"
    else:
        raise FraferError(
            f"AffectNet root {root} has neither {root / 'training.csv'} and validation.csv "
            f"nor pre-split class folders {root / 'train'}/<class>/ and {root / 'val'}/<class>/"
        )
    return FERDataset(f"AffectNet-{num_classes} ({layout})", splits, classes, add_skips({}, skipped))


def _read_csv(root: Path, name: str, num_classes: int, skipped: Counter) -> list[FERSample]:
    """The samples of one AffectNet CSV; rows with code 8–10 (and 7 in 7-class mode) are dropped and counted."""
    path = root / name
    if not path.is_file():
        raise FraferError(f"AffectNet CSV {path} does not exist (the layout needs training.csv and validation.csv)")
    columns = {column: i for i, column in enumerate(HEADER)}
    width = len(HEADER)
    samples: list[FERSample] = []
    listed: Counter = Counter()
    missing: Counter = Counter()
    split = CSV_SPLITS[name]
    for row_index, (line, fields) in enumerate(csv_rows(path)):
        if row_index == 0 and ("expression" in fields or HEADER[0] in fields):
            columns, width = _header_columns(fields, path, line), len(fields)
            continue  # (the released validation.csv has no header line: then the defaults above hold)
        if len(fields) != width:
            raise FraferError(f"{path} line {line}: expected {width} fields ({','.join(HEADER)}), found {len(fields)}")
        code = parse_int(fields[columns["expression"]], path, line, "expression", range(11))
        if code in DROPPED:
            skipped[DROPPED[code]] += 1
            continue
        label = EXPRESSIONS.index(CODES[code])
        if label >= num_classes:
            skipped["contempt (7-class mode)"] += 1
            continue
        box = _parse_box(fields, columns, path, line)
        if box is None:
            skipped["empty face box"] += 1
            continue
        relative = fields[columns["subDirectory_filePath"]].replace("\\", "/").removeprefix("./")
        if not relative:
            raise FraferError(f"{path} line {line}: empty subDirectory_filePath")
        listed[split] += 1
        image = _find_image(root, relative)
        if image is None:
            skipped["missing image"] += 1
            missing[split] += 1
            continue
        key = image.relative_to(root).as_posix()
        samples.append(FERSample(image=image, label=label, key=key, box=box))
    check_some_found(listed, missing, path, root / IMAGE_DIR)
    return samples


def _header_columns(fields: list[str], path: Path, line: int) -> dict[str, int]:
    """Column index of each HEADER name in a header row; FraferError naming the columns it lacks."""
    absent = [column for column in HEADER if column not in fields]
    if absent:
        raise FraferError(f"{path} line {line}: header lacks {', '.join(absent)}; expected {','.join(HEADER)}")
    return {column: fields.index(column) for column in HEADER}


def _parse_box(fields: list[str], columns: dict[str, int], path: Path, line: int):
    """(x, y, w, h) from the face_* columns; None for a zero-size box; FraferError for a non-number."""
    names = ("face_x", "face_y", "face_width", "face_height")
    try:
        x, y, w, h = (float(fields[columns[n]]) for n in names)
    except ValueError:
        shown = ",".join(fields[columns[n]] for n in names)
        raise FraferError(f"{path} line {line}: {','.join(names)} must be numbers, got {shown!r}") from None
    return None if w <= 0 or h <= 0 else (x, y, w, h)


def _find_image(root: Path, relative: str) -> Path | None:
    """The image under Manually_Annotated_Images/ or directly under root, whichever exists."""
    for candidate in (root / IMAGE_DIR / relative, root / relative):
        if os.path.isfile(candidate):
            return candidate
    return None


def _read_class_folders(root: Path, num_classes: int, skipped: Counter) -> dict[str, list[FERSample]]:
    """`root/train/<class>/*` and `root/val/<class>/*` (→ test; → val when a `test` folder exists too)."""
    val_dir = next((root / n for n in ("val", "validation") if (root / n).is_dir()), None)
    if val_dir is None:
        raise FraferError(f"AffectNet root {root} has {root / 'train'} but no {root / 'val'} folder")
    folders = {"train": root / "train"}
    if (root / "test").is_dir():
        folders.update(val=val_dir, test=root / "test")
    else:
        folders["test"] = val_dir
    splits: dict[str, list[FERSample]] = {}
    for split, folder in folders.items():
        samples: list[FERSample] = []
        for class_dir in visible_dirs(folder):
            label, reason = _folder_label(folder, class_dir.name, num_classes)
            images = list_images(class_dir, allow_empty=True)
            if label is None:
                skipped[reason] += len(images)
            else:
                samples += [FERSample(image=p, label=label, key=p.relative_to(root).as_posix()) for p in images]
        if not samples:
            raise FraferError(f"AffectNet folder {folder} holds no usable images in <class>/ sub-folders")
        splits[split] = samples
    return splits


def _folder_label(folder: Path, name: str, num_classes: int) -> tuple[int | None, str]:
    """(canonical id, "") of a class folder named by AffectNet code ("0".."10") or expression name,
    or (None, skip reason) for a folder whose images are dropped (codes 8-10; contempt in 7-class mode)."""
    if name.isdigit() and int(name) in DROPPED:
        return None, DROPPED[int(name)]
    if name.isdigit():
        if int(name) not in CODES:
            raise FraferError(f"{folder}: class folder '{name}' is not an AffectNet code 0-10")
        label = EXPRESSIONS.index(CODES[int(name)])
    else:
        label = expression_id(name)
        if label is None:
            raise unknown_class_error(folder, name)
    if label >= num_classes:
        return None, "contempt (7-class mode)"
    return label, ""
