"""Face verification pair lists in their native layouts: LFW `pairs.txt` and the CFP protocol folders.

Each reader returns `Pair`s in file order with a 0-based fold number, ready for the 10-fold protocol of
`frafer.eval.pair_scores`. Whether the image files exist is not checked here: the evaluator counts unreadable ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from frafer.errors import FraferError

PAIR_KINDS = ("lfw", "cfp-fp", "cfp-ff")


@dataclass(frozen=True)
class Pair:
    """Two face images, whether they show the same person, and the fold the pair belongs to (0-based)."""

    path_a: Path
    path_b: Path
    same: bool
    fold: int


def read_pairs(kind: str, root: str | Path) -> list[Pair]:
    """Pairs of a named benchmark: "lfw" (root = the image folder), "cfp-fp" or "cfp-ff" (root = cfp-dataset)."""
    key = str(kind).lower()
    if key == "lfw":
        return read_lfw_pairs(root)
    if key in ("cfp-fp", "cfp-ff"):
        return read_cfp_pairs(root, protocol=key[-2:].upper())
    raise FraferError(f"unknown verification pair list '{kind}', expected one of {', '.join(PAIR_KINDS)}")


# --- LFW -----------------------------------------------------------------------------------------------------------


def read_lfw_pairs(root: str | Path, pairs_file: str | Path | None = None) -> list[Pair]:
    """LFW pairs: `root/<name>/<name>_<n:04d>.jpg`, listed in pairs.txt (default root/pairs.txt or root/../pairs.txt).

    pairs.txt starts with `<folds> <n>` (`10 300`), then per fold n matched lines `name n1 n2` followed by n
    mismatched lines `name1 n1 name2 n2` (tabs or spaces). The development lists (pairsDevTrain.txt) start with a
    single count `n` and hold one fold. Without a header line, each run of matched lines followed by a run of
    mismatched lines is taken as one fold.
    """
    root = Path(root)
    path = Path(pairs_file) if pairs_file is not None else _default_lfw_pairs_file(root)
    lines = _read_lines(path, "LFW pairs file")
    if not lines:
        raise FraferError(f"LFW pairs file {path} is empty, expected a header line `10 300` and pair lines")
    header = _lfw_header(lines[0], path)
    body = lines[1:] if header else lines
    parsed = [(number, _lfw_pair(fields, root, path, number)) for number, fields in body]
    if header:
        folds = _lfw_folds_from_header(parsed, *header, path)
    else:
        folds = _lfw_folds_from_runs([pair for _, pair in parsed])
    return [Pair(a, b, same, fold) for fold, (_, (a, b, same)) in zip(folds, parsed, strict=True)]


def _default_lfw_pairs_file(root: Path) -> Path:
    candidates = [root / "pairs.txt", root.parent / "pairs.txt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FraferError(f"LFW pairs file not found: looked for {candidates[0]} and {candidates[1]}")


def _lfw_header(first: tuple[int, list[str]], path: Path) -> tuple[int, int] | None:
    """(folds, pairs per class per fold) from a `10 300` or `1100` first line; None when the file has no header."""
    number, fields = first
    if not all(f.isdigit() for f in fields) or len(fields) not in (1, 2):
        return None
    folds, per_class = (1, int(fields[0])) if len(fields) == 1 else (int(fields[0]), int(fields[1]))
    if folds < 1 or per_class < 1:
        raise FraferError(f"{path} line {number}: header {' '.join(fields)!r} must give positive counts, e.g. `10 300`")
    return folds, per_class


def _lfw_pair(fields: list[str], root: Path, path: Path, number: int) -> tuple[Path, Path, bool]:
    """One pair line: `name n1 n2` (same person) or `name1 n1 name2 n2` (different people)."""
    if len(fields) == 3:
        name, n1, n2 = fields
        return _lfw_image(root, name, n1, path, number), _lfw_image(root, name, n2, path, number), True
    if len(fields) == 4:
        name1, n1, name2, n2 = fields
        return _lfw_image(root, name1, n1, path, number), _lfw_image(root, name2, n2, path, number), False
    raise FraferError(
        f"{path} line {number}: {' '.join(fields)!r} has {len(fields)} fields, "
        "expected `name n1 n2` (matched) or `name1 n1 name2 n2` (mismatched)"
    )


def _lfw_image(root: Path, name: str, n: str, path: Path, number: int) -> Path:
    if not n.isdigit() or int(n) < 1:
        raise FraferError(f"{path} line {number}: image number {n!r} for {name} is not a positive integer")
    return root / name / f"{name}_{int(n):04d}.jpg"


def _lfw_folds_from_header(parsed: list, folds: int, per_class: int, path: Path) -> list[int]:
    """Fold of each line, checking the file holds exactly `folds` blocks of per_class matched + per_class mismatched."""
    expected = 2 * folds * per_class
    if len(parsed) != expected:
        raise FraferError(
            f"{path}: header says {folds} folds of {per_class} matched + {per_class} mismatched pairs "
            f"({expected} lines) but the file has {len(parsed)} pair lines"
        )
    out = []
    for i, (number, (_, _, same)) in enumerate(parsed):
        fold, within = divmod(i, 2 * per_class)
        should_match = within < per_class
        if same != should_match:
            want = "a matched line `name n1 n2`" if should_match else "a mismatched line `name1 n1 name2 n2`"
            raise FraferError(
                f"{path} line {number}: expected {want} (fold {fold + 1} lists {per_class} matched "
                f"then {per_class} mismatched pairs)"
            )
        out.append(fold)
    return out


def _lfw_folds_from_runs(pairs: list[tuple[Path, Path, bool]]) -> list[int]:
    """Headerless files: a new fold starts wherever a matched line follows a mismatched one."""
    folds, fold = [], 0
    for i, (_, _, same) in enumerate(pairs):
        if i and same and not pairs[i - 1][2]:
            fold += 1
        folds.append(fold)
    return folds


# --- CFP -----------------------------------------------------------------------------------------------------------


def read_cfp_pairs(root: str | Path, protocol: str = "FP") -> list[Pair]:
    """CFP pairs of protocol "FP" (frontal–profile) or "FF" (frontal–frontal) from `root/Protocol`.

    Pair_list_F.txt / Pair_list_P.txt map an index to an image path relative to root/Protocol
    (`1 ../Data/Images/001/frontal/01.jpg`); Split/<protocol>/01..10/same.txt and diff.txt list `i,j` per line,
    i into the frontal list and j into the profile list (FP) or the frontal list again (FF). Fold 01 is fold 0.
    """
    root = Path(root)
    protocol = str(protocol).upper()
    if protocol not in ("FP", "FF"):
        raise FraferError(f"unknown CFP protocol '{protocol}', expected FP or FF")
    proto_dir = root / "Protocol"
    frontal = _cfp_image_list(proto_dir / "Pair_list_F.txt")
    second = _cfp_image_list(proto_dir / "Pair_list_P.txt") if protocol == "FP" else frontal
    second_name = "Pair_list_P.txt" if protocol == "FP" else "Pair_list_F.txt"
    split_dir = proto_dir / "Split" / protocol
    if not split_dir.is_dir():
        raise FraferError(f"CFP split folder {split_dir} does not exist (expected folders 01..10 in it)")
    fold_dirs = sorted((d for d in split_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if not fold_dirs:
        raise FraferError(f"CFP split folder {split_dir} has no numbered fold folders (expected 01..10)")
    pairs = []
    for fold, fold_dir in enumerate(fold_dirs):
        for file_name, same in (("same.txt", True), ("diff.txt", False)):
            for i, j in _cfp_split_file(fold_dir / file_name, frontal, second, second_name):
                pairs.append(Pair(frontal[i], second[j], same, fold))
    return pairs


def _cfp_image_list(path: Path) -> dict[int, Path]:
    """{index: image path} from a Pair_list file; its paths are relative to the file's folder (root/Protocol)."""
    images: dict[int, Path] = {}
    for number, fields in _read_lines(path, "CFP pair list", maxsplit=1):  # a path may hold spaces
        if len(fields) != 2 or not fields[0].isdigit():
            raise FraferError(
                f"{path} line {number}: {' '.join(fields)!r} is not `<index> <image path>` "
                "(e.g. `1 ../Data/Images/001/frontal/01.jpg`)"
            )
        index = int(fields[0])
        if index in images:
            raise FraferError(f"{path} line {number}: index {index} is listed twice")
        images[index] = Path(os.path.normpath(path.parent / fields[1]))
    if not images:
        raise FraferError(f"CFP pair list {path} lists no images")
    return images


def _cfp_split_file(
    path: Path, first: dict[int, Path], second: dict[int, Path], second_name: str
) -> list[tuple[int, int]]:
    """(i, j) index pairs from a same.txt / diff.txt, each checked against the image lists' indices."""
    out = []
    for number, fields in _read_lines(path, "CFP split file", sep=","):
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise FraferError(f"{path} line {number}: {','.join(fields)!r} is not two indices `i,j` (e.g. `1,2`)")
        i, j = int(fields[0]), int(fields[1])
        for index, images, name in ((i, first, "Pair_list_F.txt"), (j, second, second_name)):
            if index not in images:
                raise FraferError(
                    f"{path} line {number}: index {index} is not listed in {name} "
                    f"(it lists {min(images)}..{max(images)})"
                )
        out.append((i, j))
    return out


# --- shared --------------------------------------------------------------------------------------------------------


def _read_lines(path: Path, what: str, sep: str | None = None, maxsplit: int = -1) -> list[tuple[int, list[str]]]:
    """Non-blank lines as (1-based line number, stripped fields split on whitespace or `sep`)."""
    if not path.is_file():
        raise FraferError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise FraferError(f"{what} {path} is not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            fields = line.split(sep, maxsplit) if sep else line.split(maxsplit=maxsplit)
            out.append((number, [f.strip() for f in fields]))
    return out
