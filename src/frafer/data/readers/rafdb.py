"""RAF-DB basic: `EmoLabel/list_patition_label.txt` (sic) and `Image/aligned/<name>_aligned.jpg`.

Each line is `train_00001.jpg 5`; the prefix gives the split, the label 1–7 means Surprise, Fear, Disgust,
Happiness, Sadness, Anger, Neutral. The aligned 100 px crops are used as they are (no box).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from frafer.data.fer.dataset import FERDataset, FERSample, check_classes
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.fer_common import add_skips, check_some_found, parse_int, require_dir, require_file
from frafer.errors import FraferError

LABEL_FILE = Path("EmoLabel", "list_patition_label.txt")
ALIGNED_DIR = Path("Image", "aligned")
# RAF-DB label → canonical name.
CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}
SPLIT_PREFIXES = ("train", "test")


def read_rafdb(root: str | Path) -> FERDataset:
    """Read RAF-DB basic into `train` and `test` over the 7 basic expressions."""
    root = require_dir(root, "RAF-DB root")
    list_file = require_file(root / LABEL_FILE, "RAF-DB label list")
    image_dir = require_dir(root / ALIGNED_DIR, "RAF-DB aligned image folder")
    splits: dict[str, list[FERSample]] = {split: [] for split in SPLIT_PREFIXES}
    listed: Counter = Counter()
    missing: Counter = Counter()
    with list_file.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            parts = text.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise FraferError(f"{list_file} line {line}: expected '<image name> <label 1-7>', got {text.strip()!r}")
            name, value = parts
            code = parse_int(value, list_file, line, "the label", range(1, 8))
            stem, suffix = os.path.splitext(name)
            split = stem.split("_", 1)[0]
            if split not in SPLIT_PREFIXES:
                raise FraferError(f"{list_file} line {line}: image name {name!r} must start with train_ or test_")
            listed[split] += 1
            image = image_dir / f"{stem}_aligned{suffix}"
            if not os.path.isfile(image):
                missing[split] += 1
                continue
            key = image.relative_to(root).as_posix()
            splits[split].append(FERSample(image=image, label=EXPRESSIONS.index(CODES[code]), key=key))
    check_some_found(listed, missing, list_file, image_dir)
    if not any(splits.values()):
        raise FraferError(f"{list_file} lists no images")
    skipped = add_skips({}, Counter({"missing image": sum(missing.values())}))
    return FERDataset("RAF-DB basic", splits, check_classes(EXPRESSIONS[:7]), skipped)
