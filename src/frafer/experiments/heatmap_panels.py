"""The same faces' region heatmaps side by side across a sweep's FRA pre-training runs (e.g. one row per τ).

The user's report chose the heatmap temperature by looking at such panels; here every run draws the same faces
(`first_faces`), each as its argmax region map, and its row is titled with its setting and the mean largest region
probability on those faces (1/N: flat maps; 1: one region per pixel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from frafer.artifacts.regions import region_model_from_pretraining
from frafer.artifacts.trunk_init import resolve_init
from frafer.data.pipelines.transforms import VGGFACE2_MEAN, VGGFACE2_STD, build_eval_transform
from frafer.data.readers.images import first_images
from frafer.data.synthetic.renderer import SyntheticFaces
from frafer.errors import FraferError
from frafer.experiments.sweep_spec import Sweep, stage_runs, stage_status
from frafer.files import atomic_write
from frafer.infer.draw import argmax_map, panel_grid

TILE = 96  # pixels per face in the panel


def first_faces(data: dict, count: int, faces_root: Path | None = None) -> list[Image.Image]:
    """The same `count` faces for every run: the first readable images (sorted paths) of `faces_root` or of the
    run's data.root, or, for built-in synthetic faces, the first ones its generator draws. data: the run's data
    section."""
    if faces_root is None and data.get("source") == "synthetic":
        syn = data.get("synthetic", {})
        faces = SyntheticFaces(count, int(data["image_size"]), int(syn.get("num_identities", 200)),
                               int(syn.get("seed", 0)))
        return [faces[i][0] for i in range(count)]
    root = Path(faces_root or data["root"])
    found = first_images(root, count) if root.is_dir() else []
    if not found:
        raise FraferError(f"no readable image under {root} to draw heatmaps on")
    return found


@torch.no_grad()
def run_heatmaps(run_dir: Path, cfg: dict, images: list[Image.Image]) -> tuple[list[np.ndarray], np.ndarray]:
    """A pre-training run's view of the faces (cfg: its config.yaml): (crops (TILE, TILE, 3) uint8, heatmaps
    (F, N, h, w))."""
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
        configs = {}  # the finished FRA runs (points sharing a run draw it once) → their config
        for run_dir, point in stage_runs(sweep, sweep_dir, stage.name).items():
            config = run_dir / "config.yaml"
            if (stage_status(sweep, sweep_dir, point, stage.name) or {}).get("status") == "ok" and config.is_file():
                tree = yaml.safe_load(config.read_text()) or {}
                if tree.get("method", "fra") == "fra":
                    configs[run_dir] = tree
        if not configs:
            continue
        faces = first_faces(next(iter(configs.values()))["data"], count, faces_root)
        rows = []
        for run_dir, cfg in configs.items():
            crops, maps = run_heatmaps(run_dir, cfg, faces)
            rows.append(panel_row(f"{run_dir.parent.name}   max-prob {maps.max(axis=1).mean():.3f}", crops, maps))
        grid = panel_grid(rows)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stage.name}_heatmaps.png"
        atomic_write(path, lambda tmp, image=grid: image.save(tmp, format="PNG"))
        written.append(path)
    return written
