"""Folders written by `frafer.data.synthetic.renderer.write_synthetic_dataset`, read back as an FERDataset.

Layout: `<root>/<expression>/<i:06d>.png`, `votes.csv` (`Usage,Image name,<10 FERPlus vote columns>`) and
`meta.csv` (`Image name,identity,label,intensity`). The label is the generated expression (the class folder), the
split comes from Usage, the subject is the identity (one shared population, so ids match across roots). Several
roots written with different `usage` values merge into one dataset with `read_synthetic_roots`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from frafer.data.fer.crowd import votes_from_ferplus
from frafer.data.fer.dataset import FERDataset, FERSample, check_classes
from frafer.data.fer.labels import BASIC_EXPRESSIONS, EXPRESSIONS, FERPLUS_COLUMNS
from frafer.data.readers.fer_common import (
    add_skips,
    check_some_found,
    csv_rows,
    parse_count,
    parse_int,
    parse_usage,
    require_dir,
    require_file,
)
from frafer.errors import FraferError

VOTES_HEADER = ("Usage", "Image name", *FERPLUS_COLUMNS)
META_HEADER = ("Image name", "identity", "label", "intensity")


def read_synthetic(root: str | Path) -> FERDataset:
    """Read one synthetic-faces folder: 7 classes, votes, identities as subjects, splits from Usage."""
    root = require_dir(root, "synthetic dataset root")
    identities = _read_meta(require_file(root / "meta.csv", "synthetic meta file"))
    votes_csv = require_file(root / "votes.csv", "synthetic vote file")
    rows = csv_rows(votes_csv)
    _check_header(next(rows, None), VOTES_HEADER, votes_csv)
    splits: dict[str, list[FERSample]] = {}
    listed: Counter = Counter()
    missing: Counter = Counter()
    for line, fields in rows:
        if len(fields) != len(VOTES_HEADER):
            raise FraferError(f"{votes_csv} line {line}: expected {len(VOTES_HEADER)} fields, found {len(fields)}")
        split = parse_usage(fields[0], votes_csv, line)
        name = fields[1].replace("\\", "/")
        folder = name.split("/", 1)[0]
        if "/" not in name or folder not in BASIC_EXPRESSIONS:
            raise FraferError(
                f"{votes_csv} line {line}: Image name {name!r} must be <expression>/<file> with the expression one "
                f"of {', '.join(BASIC_EXPRESSIONS)}"
            )
        label = EXPRESSIONS.index(folder)
        if name not in identities:
            raise FraferError(f"{root / 'meta.csv'} has no row for {name} (listed in {votes_csv} line {line})")
        identity, meta_label = identities[name]
        if meta_label != label:
            raise FraferError(
                f"{root / 'meta.csv'}: {name} has label {meta_label} but lies in the {folder} folder (label {label})"
            )
        counts = [parse_count(v, votes_csv, line, "a vote count") for v in fields[2:]]
        listed[split] += 1
        image = root / name
        if not os.path.isfile(image):
            missing[split] += 1
            continue
        sample = FERSample(image=image, label=label, key=name, votes=votes_from_ferplus(counts), subject=identity)
        splits.setdefault(split, []).append(sample)
    check_some_found(listed, missing, votes_csv, root)
    if not splits:
        raise FraferError(f"{votes_csv} lists no images")
    skipped = add_skips({}, Counter({"missing image": sum(missing.values())}))
    return FERDataset(f"synthetic ({root.name})", splits, check_classes(BASIC_EXPRESSIONS), skipped)


def read_synthetic_roots(roots: list[str | Path]) -> FERDataset:
    """Merge several synthetic folders (e.g. one written with usage="Training", one with "PrivateTest").

    Keys are prefixed with the folder name (or the full path when two folders share a name) so they stay unique.
    """
    roots = [Path(root) for root in roots]
    if not roots:
        raise FraferError("read_synthetic_roots needs at least one folder")
    unique_names = len({root.name for root in roots}) == len(roots)
    splits: dict[str, list[FERSample]] = {}
    skipped: dict[str, int] = {}
    for root in roots:
        dataset = read_synthetic(root)
        prefix = root.name if unique_names else root.as_posix()
        for split, samples in dataset.splits.items():
            splits.setdefault(split, []).extend(
                FERSample(s.image, s.label, f"{prefix}/{s.key}", s.votes, s.subject, s.box) for s in samples
            )
        add_skips(skipped, Counter(dataset.skipped))
    return FERDataset(f"synthetic ({len(roots)} folders)", splits, check_classes(BASIC_EXPRESSIONS), skipped)


def _read_meta(meta_csv: Path) -> dict[str, tuple[str, int]]:
    """{Image name: (identity as a subject id, label)} from meta.csv."""
    rows = csv_rows(meta_csv)
    _check_header(next(rows, None), META_HEADER, meta_csv)
    table: dict[str, tuple[str, int]] = {}
    for line, fields in rows:
        if len(fields) != len(META_HEADER):
            raise FraferError(f"{meta_csv} line {line}: expected {len(META_HEADER)} fields, found {len(fields)}")
        identity = parse_count(fields[1], meta_csv, line, "identity")
        label = parse_int(fields[2], meta_csv, line, "label", range(len(BASIC_EXPRESSIONS)))
        table[fields[0].replace("\\", "/")] = (str(identity), label)
    return table


def _check_header(first: tuple[int, list[str]] | None, expected: tuple[str, ...], path: Path) -> None:
    """FraferError unless the first row is exactly `expected`."""
    if first is None or tuple(first[1]) != expected:
        found = ",".join(first[1]) if first else "nothing"
        raise FraferError(f"{path} line 1: expected the header {','.join(expected)}, found {found!r}")
