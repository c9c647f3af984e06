"""VGGFace2: `root/<identity>/<nnnn_nn>.jpg` plus the loose face boxes of `bb_landmark/loose_bb_*.csv`.

The CSV has the header `NAME_ID,X,Y,W,H` and rows like `"n000002/0001_01",161,140,224,324`,
where NAME_ID is the image path relative to root without its extension.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from frafer.data.readers.folders import list_images
from frafer.data.readers.images import IMAGE_EXTENSIONS, Box
from frafer.errors import FraferError

log = logging.getLogger(__name__)

LOOSE_BOX_HEADER = ("NAME_ID", "X", "Y", "W", "H")


@dataclass(frozen=True)
class VGGFace2Index:
    """What list_vggface2 found.

    items: (image path, crop box (x, y, w, h) or None) in a fixed order; ready for UnlabelledImages.
    identities: sorted identity folder names that hold at least one image.
    missing_boxes: images kept uncropped because the CSV had no row for them (0 without a CSV).
    """

    items: list[tuple[Path, Box | None]]
    identities: tuple[str, ...]
    missing_boxes: int


def read_loose_boxes(csv_path: str | Path) -> dict[str, Box]:
    """Read a VGGFace2 loose box CSV into {NAME_ID: (x, y, w, h)}.

    Raises FraferError naming the file and line for a missing file, a wrong header, a row that
    is not a name and four integers, or a NAME_ID listed twice.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FraferError(
            f"VGGFace2 box file {csv_path} does not exist (expected e.g. bb_landmark/loose_bb_train.csv)"
        )
    boxes: dict[str, Box] = {}
    first_line: dict[str, int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        _check_header(next(reader, None), csv_path)
        for row in reader:
            if not row or all(not field.strip() for field in row):
                continue  # blank line
            name, box = _parse_row(row, csv_path, reader.line_num)
            if name in boxes:
                raise FraferError(
                    f"{csv_path} line {reader.line_num}: NAME_ID {name!r} "
                    f"already listed on line {first_line[name]}"
                )
            boxes[name] = box
            first_line[name] = reader.line_num
    return boxes


def list_vggface2(
    root: str | Path, bbox_csv: str | Path | None = None, crop_margin: float = 0.0
) -> VGGFace2Index:
    """List the images in `root/<identity>/`, each with its loose face box when `bbox_csv` is given.

    Each box is enlarged by `crop_margin` times its width/height on every side (0.1 on a 100 px
    wide box adds 10 px left and right); load_rgb clips it to the image. Images with no CSV row
    are kept uncropped and counted in `missing_boxes` (also logged as a warning), so a partial
    CSV costs crop quality, not data. Images lying directly in root (no identity folder) are ignored.
    """
    root = Path(root)
    if crop_margin < 0:
        raise FraferError(f"VGGFace2 crop_margin must be >= 0, got {crop_margin}")
    images = [path for path in list_images(root) if len(path.relative_to(root).parts) >= 2]
    if not images:
        raise FraferError(
            f"VGGFace2 root {root} has no images inside identity folders "
            "(expected root/<identity>/<image>.jpg)"
        )
    boxes = read_loose_boxes(bbox_csv) if bbox_csv is not None else None
    items: list[tuple[Path, Box | None]] = []
    missing = 0
    for path in images:
        box = None
        if boxes is not None:
            box = boxes.get(path.relative_to(root).with_suffix("").as_posix())
            if box is None:
                missing += 1
            else:
                box = enlarge_box(box, crop_margin)
        items.append((path, box))
    if missing:
        log.warning(
            "%d of %d VGGFace2 images under %s have no box in %s; they are used uncropped",
            missing,
            len(items),
            root,
            bbox_csv,
        )
    identities = tuple(sorted({path.relative_to(root).parts[0] for path in images}))
    return VGGFace2Index(items=items, identities=identities, missing_boxes=missing)


def enlarge_box(box: Box, margin: float) -> Box:
    """Grow (x, y, w, h) by `margin` * w (resp. h) on each side, rounded to whole pixels."""
    x, y, w, h = box
    left, top = round(x - margin * w), round(y - margin * h)
    right, bottom = round(x + w + margin * w), round(y + h + margin * h)
    return left, top, right - left, bottom - top


def _check_header(header: list[str] | None, csv_path: Path) -> None:
    """Insist on the NAME_ID,X,Y,W,H header so a wrong file is caught at line 1."""
    found = tuple(field.strip() for field in header) if header else ()
    if found != LOOSE_BOX_HEADER:
        shown = ",".join(found) or "nothing"
        raise FraferError(
            f"{csv_path} line 1: expected the header {','.join(LOOSE_BOX_HEADER)}, found {shown!r}"
        )


def _parse_row(row: list[str], csv_path: Path, line: int) -> tuple[str, Box]:
    """Parse one `NAME_ID,X,Y,W,H` row; NAME_ID is normalised to a relative posix path without extension."""
    if len(row) != len(LOOSE_BOX_HEADER):
        raise FraferError(
            f"{csv_path} line {line}: expected 5 fields NAME_ID,X,Y,W,H, found {len(row)}: {','.join(row)!r}"
        )
    name = row[0].strip().replace("\\", "/").removeprefix("./")
    if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
        name = name[: -len(Path(name).suffix)]
    if not name:
        raise FraferError(f"{csv_path} line {line}: empty NAME_ID")
    try:
        x, y, w, h = (int(field) for field in row[1:])
    except ValueError:
        raise FraferError(
            f"{csv_path} line {line}: X,Y,W,H must be integers, found {','.join(row[1:])!r}"
        ) from None
    return name, (x, y, w, h)
