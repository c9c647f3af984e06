"""The labelled expression readers by the name `data.format` gives them (FER_FORMATS), and `read_fer_dataset`.

Every FER reader takes the dataset root first and returns an FERDataset whose labels index EXPRESSIONS.
"""


from __future__ import annotations

import inspect
from pathlib import Path

from frafer.data.fer.dataset import FERDataset
from frafer.data.readers.affectnet import read_affectnet
from frafer.data.readers.class_folders import read_class_folders
from frafer.data.readers.fer2013 import read_fer2013
from frafer.data.readers.ferplus import read_ferplus
from frafer.data.readers.rafdb import read_rafdb
from frafer.data.readers.synthetic_faces import read_synthetic, read_synthetic_roots
from frafer.errors import FraferError

FER_FORMATS = {
    "affectnet": read_affectnet,
    "rafdb": read_rafdb,
    "fer2013": read_fer2013,
    "ferplus": read_ferplus,
    "folders": read_class_folders,
    "synthetic": read_synthetic,
}


def read_fer_dataset(fmt: str, root: str | Path | list, **options) -> FERDataset:
    """Read a labelled expression dataset of format `fmt` (a key of FER_FORMATS) with that reader's options.

    For "synthetic", `root` may be a list of folders, merged by read_synthetic_roots.
    """
    if fmt not in FER_FORMATS:
        raise FraferError(f"unknown FER dataset format '{fmt}'; choose one of {', '.join(FER_FORMATS)}")
    reader = FER_FORMATS[fmt]
    if isinstance(root, (list, tuple)):
        if fmt != "synthetic":
            raise FraferError(f"format '{fmt}' reads one root folder, got a list of {len(root)}")
        reader = read_synthetic_roots
    accepted = list(inspect.signature(reader).parameters)[1:]
    for name in options:
        if name not in accepted:
            raise FraferError(
                f"unknown option '{name}' for FER format '{fmt}'; it accepts {', '.join(accepted) or 'no options'}"
            )
    return reader(root, **options)
