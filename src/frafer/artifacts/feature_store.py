"""Frozen-trunk features of a dataset's images, stored once and looked up by sample key.

One folder holds `plain.safetensors` and `flip.safetensors` (features averaged with the mirror image) and
`index.json`: what the features depend on (the trunk's weights file, its layout, the input pipeline, the dataset's
location) and the sample key of every row. Asking for samples that are not stored yet extracts only those; asking
a store made from another trunk, pipeline or dataset is refused, naming what differs. The folds of a k-fold run
share one store, so each image goes through the trunk once whatever the number of folds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from frafer.artifacts.checkpoint import load_weights, save_weights
from frafer.config.schema import FinetuneConfig
from frafer.data.fer.dataset import FERSample
from frafer.errors import FraferError
from frafer.files import atomic_write_text

INDEX = "index.json"
Extract = Callable[[list[FERSample]], tuple[torch.Tensor, torch.Tensor]]  # samples → (features (N, C), readable (N,))


def feature_identity(cfg: FinetuneConfig, init_record: dict) -> dict:
    """What cached features depend on: the trunk (weights file, size, time, layout), the pipeline and the data."""
    source = init_record["source"]
    path = Path(source)
    stat = path.stat() if path.is_file() else None
    trunk = {"source": str(path.resolve()) if stat else source, "layout": init_record["layout"],
             "size": stat.st_size if stat else None, "mtime_ns": stat.st_mtime_ns if stat else None,
             "seed": None if stat else cfg.train.seed}  # a random-init trunk is made from train.seed
    pipeline = {"image_size": cfg.data.image_size, "mean": list(cfg.aug.mean), "std": list(cfg.aug.std),
                "precision": cfg.train.precision}
    d = cfg.data
    data = {"format": d.format, "root": str(Path(d.root).resolve()),
            "extra_roots": [str(Path(r).resolve()) for r in d.extra_roots],
            "fer2013_csv": str(Path(d.fer2013_csv).resolve()) if d.fer2013_csv else "",
            "ferplus_source": d.ferplus_source}
    return {"trunk": trunk, "pipeline": pipeline, "data": data}


def _differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: cached {a!r}, now {b!r}")
    return out


class FeatureStore:
    def __init__(self, folder: str | Path, identity: dict) -> None:
        self.folder, self.identity = Path(folder), identity
        self.keys: dict[str, list[str]] = {"plain": [], "flip": []}
        index = self.folder / INDEX
        if not index.is_file():
            return
        try:
            recorded = json.loads(index.read_text())
        except json.JSONDecodeError as err:
            raise FraferError(f"{index} is not valid JSON ({err}); delete {self.folder} to extract again") from None
        diff = _differences(recorded.get("identity", {}), identity)
        if diff:
            raise FraferError(
                f"{self.folder} holds features of another trunk, pipeline or dataset ({'; '.join(diff[:3])}); "
                f"choose another --run-dir or delete {self.folder}"
            )
        self.keys = {kind: list(recorded.get(kind, [])) for kind in ("plain", "flip")}

    def _load(self, kind: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.keys[kind]:
            return None, None
        tensors = load_weights(self.folder / f"{kind}.safetensors")
        feats, readable = tensors["features"], tensors["readable"].bool()
        if len(feats) != len(self.keys[kind]):
            raise FraferError(f"{self.folder}: {kind}.safetensors and {INDEX} disagree; delete the folder")
        return feats, readable

    def get(self, samples: list[FERSample], flip: bool, name: str, extract: Extract) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        """Features (N, C) and readable mask (N,) of `samples`, in their order; extracts only what is missing."""
        kind = "flip" if flip else "plain"
        feats, readable = self._load(kind)
        row = {key: i for i, key in enumerate(self.keys[kind])}
        missing = list({s.key: s for s in samples if s.key not in row}.values())
        cached = sum(s.key in row for s in samples)
        if cached:
            data = self.identity["data"]
            tqdm.write(f"features {name}: {cached} of {len(samples)} from the cache in {self.folder} (trunk "
                       f"{self.identity['trunk']['source']}, {data['format']} data at {data['root']})")
        if missing:
            new_feats, new_ok = extract(missing)
            feats = new_feats if feats is None else torch.cat([feats, new_feats])
            readable = new_ok if readable is None else torch.cat([readable, new_ok])
            for s in missing:
                row[s.key] = len(self.keys[kind])
                self.keys[kind].append(s.key)
            self._save(kind, feats, readable)
        order = torch.tensor([row[s.key] for s in samples], dtype=torch.long)
        return feats[order], readable[order]

    def _save(self, kind: str, feats: torch.Tensor, readable: torch.Tensor) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.folder / f"{kind}.safetensors", {"features": feats, "readable": readable.to(torch.uint8)})
        atomic_write_text(self.folder / INDEX, json.dumps({"identity": self.identity, **self.keys}))
