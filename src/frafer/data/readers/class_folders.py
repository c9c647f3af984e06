"""Expression images sorted into class folders: CK+, JAFFE and the many Kaggle-style copies of FER datasets.

Two layouts: `root/<class>/**/<image>` (one split, "all"), or `root/{train,val,test}/<class>/**/<image>`
("validation" also means val). Folder names map to the canonical vocabulary through EXPRESSION_ALIASES; the
dataset's classes are the folders it has (CK+: no neutral). For subject-disjoint evaluation a subject id per image
comes from a CSV (header `image,subject`, more columns allowed) or a regex on the file name; the same CSV may carry
the dataset's own fold of each image (a fold column such as `fold10_by_subject`).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from frafer.data.fer.dataset import FERDataset, FERSample, check_classes
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.fer_common import csv_rows, require_dir, require_file
from frafer.data.readers.folders import list_images
from frafer.data.readers.images import is_image_file
from frafer.errors import FraferError

# Folder name (lower case) → canonical expression. "calm" is deliberately absent: RAVDESS-style data has calm
# beside neutral, and merging them silently would change the task.
EXPRESSION_ALIASES = {
    "neutral": "neutral",
    "happy": "happy", "happiness": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "fear": "fear", "fearful": "fear", "afraid": "fear",
    "disgust": "disgust", "disgusted": "disgust",
    "anger": "anger", "angry": "anger",
    "contempt": "contempt",
}
SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def expression_id(name: str) -> int | None:
    """Canonical class id of a folder name such as "Angry" or "happiness"; None if the name is not known."""
    canonical = EXPRESSION_ALIASES.get(name.strip().lower())
    return None if canonical is None else EXPRESSIONS.index(canonical)


def unknown_class_error(folder: Path, name: str) -> FraferError:
    """The error for a class folder whose name is not an expression."""
    return FraferError(
        f"{folder}: class folder '{name}' is not an expression name; known names (any case): "
        f"{', '.join(EXPRESSION_ALIASES)}"
    )


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders of `folder` not starting with '.', sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def read_class_folders(
    root: str | Path, subjects: str | Path | None = None, subject_pattern: str | None = None,
    fold_column: str | None = None,
) -> FERDataset:
    """Read `root/<class>/...` (split "all") or `root/<split>/<class>/...` into an FERDataset.

    The classes are those with a folder. `subjects` (a CSV with an `image` column, relative to root, and a
    `subject` column) or `subject_pattern` (regex whose first group, searched in the file name, is the subject)
    fill FERSample.subject; `fold_column` names a column of that CSV giving FERSample.fold. An image they do not
    cover is an error, since a fold with unknown members could leak. Images outside a class folder are skipped
    and counted.
    """
    root = require_dir(root, "class-folder dataset root")
    if subjects is not None and subject_pattern is not None:
        raise FraferError("give either subjects (a CSV) or subject_pattern (a regex), not both")
    if fold_column and subjects is None:
        raise FraferError(f"fold column '{fold_column}' needs the CSV that holds it (data.subjects_csv)")
    subject_of, fold_of = _subject_lookup(root, subjects, subject_pattern, fold_column)
    skipped: Counter = Counter()
    splits: dict[str, list[FERSample]] = {}
    found: set[str] = set()
    for split, folder in _split_folders(root):
        samples: list[FERSample] = []
        skipped["image outside a class folder"] += sum(
            1 for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")
        )
        class_dirs = visible_dirs(folder)
        if not class_dirs:
            raise FraferError(f"{folder} has no class folders; expected {folder}/<expression>/<image>")
        for class_dir in class_dirs:
            label = expression_id(class_dir.name)
            if label is None:
                raise unknown_class_error(folder, class_dir.name)
            found.add(EXPRESSIONS[label])
            for path in list_images(class_dir, allow_empty=True):
                key = path.relative_to(root).as_posix()
                samples.append(FERSample(image=path, label=label, key=key, subject=subject_of(key, path),
                                         fold=fold_of(key)))
        splits[split] = samples
    if not any(splits.values()):
        raise FraferError(f"class-folder dataset root {root} contains no images in its class folders")
    classes = check_classes(found)
    return FERDataset(
        name=f"class folders ({root.name})", splits=splits, classes=classes,
        skipped={reason: count for reason, count in skipped.items() if count},
    )


def _split_folders(root: Path) -> list[tuple[str, Path]]:
    """[(split name, folder)]: the split folders when root has any, else [("all", root)]."""
    top = visible_dirs(root)
    named = [p for p in top if p.name.lower() in SPLIT_FOLDERS]
    if not named:
        return [("all", root)]
    odd = [p.name for p in top if p.name.lower() not in SPLIT_FOLDERS]
    if odd:
        raise FraferError(
            f"{root}: folder '{odd[0]}' sits beside the split folders ({', '.join(p.name for p in named)}); "
            "expected either only class folders or only train/val/test folders"
        )
    seen: dict[str, str] = {}
    for p in named:
        split = SPLIT_FOLDERS[p.name.lower()]
        if split in seen:
            raise FraferError(f"{root}: folders '{seen[split]}' and '{p.name}' are both the '{split}' split")
        seen[split] = p.name
    return [(SPLIT_FOLDERS[p.name.lower()], p) for p in named]


def _subject_lookup(root: Path, subjects: str | Path | None, pattern: str | None, fold_column: str | None = None):
    """(key, path) → subject id or None, and key → fold or None: from the subjects CSV or the file-name regex."""
    no_fold = lambda key: None  # noqa: E731
    if subjects is not None:
        table, csv_path = _read_subjects_csv(root, subjects, fold_column)

        def row(key: str) -> tuple[str | None, str | None]:
            if key not in table:
                raise FraferError(f"{csv_path} has no row for image {key}")
            return table[key]

        return (lambda key, path: row(key)[0]), ((lambda key: row(key)[1]) if fold_column else no_fold)
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise FraferError(f"subject_pattern {pattern!r} is not a valid regular expression ({err})") from None
        if regex.groups < 1:
            raise FraferError(
                f"subject_pattern {pattern!r} needs a group, e.g. '^(S\\d+)_', whose match is the subject"
            )

        def from_name(key: str, path: Path) -> str:
            match = regex.search(path.name)
            if match is None or not match.group(1):
                raise FraferError(f"subject_pattern {pattern!r} does not find a subject in the file name of {path}")
            return match.group(1)

        return from_name, no_fold
    return (lambda key, path: None), no_fold


def _read_subjects_csv(
    root: Path, subjects: str | Path, fold_column: str | None = None
) -> tuple[dict[str, tuple[str | None, str | None]], Path]:
    """{image path relative to root: (subject, fold)} from a CSV whose header has `image` and `subject` (and the
    fold column, when one is named; `subject` may then be absent). Other columns are ignored."""
    path = Path(subjects)
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path
    path = require_file(path, "subjects CSV")
    rows = csv_rows(path)
    first = next(rows, None)
    header = [f.lower() for f in first[1]] if first else []
    found = ",".join(first[1]) if first else "nothing"
    needed = ["image"] + ([] if fold_column else ["subject"])
    if fold_column and fold_column.lower() not in header:
        raise FraferError(f"{path} line 1: no column '{fold_column}' (data.fold_column) in the header {found!r}")
    if any(column not in header for column in needed):
        raise FraferError(f"{path} line 1: expected a header with the columns {','.join(needed)}, found {found!r}")
    image_col = header.index("image")
    subject_col = header.index("subject") if "subject" in header else None
    fold_col = header.index(fold_column.lower()) if fold_column else None
    wanted = [c for c in (image_col, subject_col, fold_col) if c is not None]
    table: dict[str, tuple[str | None, str | None]] = {}
    for line, fields in rows:
        if len(fields) != len(header) or not all(fields[c] for c in wanted):
            shown = ",".join(fields)
            names = ",".join(header[c] for c in wanted)
            raise FraferError(f"{path} line {line}: expected {len(header)} fields with {names} filled, got {shown!r}")
        image = fields[image_col].replace("\\", "/").removeprefix("./")
        entry = (None if subject_col is None else fields[subject_col], None if fold_col is None else fields[fold_col])
        if table.get(image, entry) != entry:
            raise FraferError(f"{path} line {line}: image {image} is listed twice, as {table[image]} and {entry}")
        table[image] = entry
    return table, path
