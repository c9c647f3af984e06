"""The same faces' region heatmaps side by side across a sweep's FRA pre-training runs (e.g. one row per τ).

The user's report chose the heatmap temperature by looking at such panels; here every run draws the same faces
(`first_faces`), each as its argmax region map, and its row is titled with its setting and the mean largest region
probability on those faces (1/N: flat maps; 1: one region per pixel).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from frafer.artifacts.regions import region_model_from_pretraining
from frafer.artifacts.trunk_init import resolve_init
from frafer.data.images import is_image_file, load_rgb
from frafer.data.synthetic import SyntheticFaces
from frafer.data.transforms import VGGFACE2_MEAN, VGGFACE2_STD, build_eval_transform
from frafer.errors import FraferError
from frafer.experiments.sweep_spec import Sweep, stage_dir
from frafer.files import atomic_write
from frafer.infer.draw import argmax_map, panel_grid

TILE = 96  # pixels per face in the panel


def first_faces(data: dict, count: int, faces_root: Path | None = None) -> list[Image.Image]:
    """The same `count` faces for every run: the first images (sorted paths) of `faces_root` or of the run's
    data.root, or, for built-in synthetic faces, the first ones its generator draws. data: the run's data section."""
    if faces_root is None and data.get("source") == "synthetic":
        syn = data.get("synthetic", {})
        faces = SyntheticFaces(count, int(data["image_size"]), int(syn.get("num_identities", 200)),
                               int(syn.get("seed", 0)))
        return [faces[i][0] for i in range(count)]
    root = Path(faces_root or data["root"])
    found = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p)) if root.is_dir() else []
    if not found:
        raise FraferError(f"no image under {root} to draw heatmaps on")
    return [load_rgb(p).convert("RGB") for p in found[:count]]


@torch.no_grad()
def run_heatmaps(run_dir: Path, images: list[Image.Image]) -> tuple[list[np.ndarray], np.ndarray]:
    """A pre-training run's view of the faces: (crops (TILE, TILE, 3) uint8, heatmaps (F, N, h, w))."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    size, aug = int(cfg["data"]["image_size"]), cfg.get("aug", {})
    model, _ = region_model_from_pretraining(resolve_init(str(run_dir)))
    model.eval()
    transform = build_eval_transform(size, aug.get("mean", VGGFACE2_MEAN), aug.get("std", VGGFACE2_STD))
    maps = model(torch.stack([transform(im) for im in images])).numpy()  # (F, N, h, w)
    crops = [np.asarray(im.resize((TILE, TILE), Image.BILINEAR)) for im in images]
    return crops, maps


def panel_row(title: str, crops: list[np.ndarray], maps: np.ndarray) -> Image.Image:
    """[title band] over [face 1's argmax regions | face 2's | …]."""
    tiles = np.concatenate([argmax_map(c, m) for c, m in zip(crops, maps, strict=True)], axis=1)
    band = 16
    row = Image.new("RGB", (tiles.shape[1], tiles.shape[0] + band), (255, 255, 255))
    row.paste(Image.fromarray(tiles), (0, band))
    ImageDraw.Draw(row).text((3, 2), title, fill=(0, 0, 0))
    return row


def sweep_heatmap_panels(sweep: Sweep, sweep_dir: Path, folder: Path, count: int = 6,
                         faces_root: Path | None = None) -> list[Path]:
    """For every pre-training stage with FRA runs: one PNG, a row per run (shared runs once), the same faces."""
    written = []
    for stage in (s for s in sweep.stages if s.command == "pretrain"):
        runs = {}  # run folder → its setting; points sharing a run draw it once
        for point in sweep.points:
            run_dir = stage_dir(sweep, sweep_dir, point, stage.name)
            if _finished_fra_run(run_dir):
                runs.setdefault(run_dir, run_dir.parent.name)
        if not runs:
            continue
        first = next(iter(runs))
        faces = first_faces(yaml.safe_load((first / "config.yaml").read_text())["data"], count, faces_root)
        rows = []
        for run_dir, name in runs.items():
            crops, maps = run_heatmaps(run_dir, faces)
            rows.append(panel_row(f"{name}   max-prob {maps.max(axis=1).mean():.3f}", crops, maps))
        grid = panel_grid(rows)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage.name}_heatmaps.png"
        atomic_write(path, lambda tmp, image=grid: image.save(tmp, format="PNG"))
        written.append(path)
    return written


def _finished_fra_run(run_dir: Path) -> bool:
    status, config = run_dir.with_suffix(".json"), run_dir / "config.yaml"
    return (status.is_file() and json.loads(status.read_text()).get("status") == "ok" and config.is_file()
            and (yaml.safe_load(config.read_text()) or {}).get("method", "fra") == "fra")
