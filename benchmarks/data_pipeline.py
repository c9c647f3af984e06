"""Images per second per CPU core of the input pipelines, and of the trunk's inference beside them.

The measurements, each on one core (one torch thread, no data workers, so a DataLoader with N workers scales it
by about N):

- pre-training: decode a 224 px JPEG face + the two augmented views (`TwoViewTransform`, METHOD's augmentation);
  a GPU step at R images/s needs about R / this many cores feeding it. Then the same with `aug.on_device`: the
  loader's half (decode + the two uint8 crops and flips) per core, and the colour half (`BatchedViewColour`) on a
  batch of `--batch` on `--device` (on a GPU, the cores it needs are then set by the loader's half alone);
- evaluation / cached probe: `frozen_pass` (the one frozen-network pass of `evaluate`, the probe's feature cache,
  kNN) over a FER2013 csv and over the same faces as 48 px PNGs, with the FER+ CPU recipe's trunk (ResNet-18 of
  width 32, 48 px), and that trunk alone on ready tensors: the pass's ceiling.

    .venv/bin/python benchmarks/data_pipeline.py
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from frafer.data.fer.dataset import FERSample, load_sample_image
from frafer.data.pipelines.batch_augment import BatchedViewColour
from frafer.data.pipelines.transforms import TwoViewTransform, build_eval_transform
from frafer.data.readers.fer2013 import read_fer2013
from frafer.data.readers.images import load_rgb
from frafer.data.synthetic.renderer import SyntheticFaces
from frafer.eval.features import frozen_pass, pooled_trunk
from frafer.models.backbones import build_trunk


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} img/s"


def face_jpegs(folder: Path, count: int, size: int) -> list[Path]:
    faces = SyntheticFaces(count, size, num_identities=50, seed=0)
    paths = []
    for i in range(count):
        paths.append(folder / f"{i:05d}.jpg")
        faces[i][0].save(paths[-1], quality=90)
    return paths


def loader_views(paths: list[Path], transform: TwoViewTransform, keep: bool = False) -> tuple[float, list]:
    """Seconds to decode every JPEG and make its two views on this core, and the views if `keep` (else [])."""
    views = []
    start = time.perf_counter()
    for path in paths:
        pair = transform(load_rgb(path))
        if keep:
            views.append(pair)
    return time.perf_counter() - start, views


def batched_colour(crops: list, size: int, batch: int, device: torch.device, rounds: int = 3) -> float:
    """Seconds per image of the colour half on the device, best of `rounds` passes over the crops in batches."""
    colour = BatchedViewColour(size)
    first = torch.stack([a for a, _ in crops]).to(device)  # (N, 3, size, size) uint8
    second = torch.stack([b for _, b in crops]).to(device)
    colour(first[:batch], second[:batch], step=0)  # first-call set-up kept out of the timing
    best = float("inf")
    for r in range(rounds):
        _sync(device)
        start = time.perf_counter()
        for step, (a, b) in enumerate(zip(first.split(batch), second.split(batch), strict=True)):
            colour(a, b, step=r * len(first) + step)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best / len(first)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fer_faces(folder: Path, count: int) -> tuple[list[FERSample], list[FERSample]]:
    """The same `count` 48 px faces as FER2013 csv rows and as PNG files."""
    rng = np.random.default_rng(0)
    faces = SyntheticFaces(count, 48, num_identities=50, seed=1)
    pngs, rows = [], []
    for i in range(count):
        grey = np.asarray(faces[i][0].convert("L"))
        path = folder / f"{i:05d}.png"
        Image.fromarray(grey).save(path)
        pngs.append(FERSample(image=path, label=int(rng.integers(7)), key=path.name))
        rows.append([pngs[-1].label, " ".join(map(str, grey.ravel())), "PrivateTest"])
    with open(folder / "fer2013.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(rows)
    return read_fer2013(folder / "fer2013.csv").split("test"), pngs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=512, help="images per measurement")
    p.add_argument("--size", type=int, default=224, help="pre-training image side")
    p.add_argument("--batch", type=int, default=128, help="batch of the on-device colour half")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the on-device colour half runs (on cpu: one thread)")
    args = p.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "jpg").mkdir()
        (tmp / "fer").mkdir()
        jpegs = face_jpegs(tmp / "jpg", args.count, args.size)
        full, _ = loader_views(jpegs, TwoViewTransform(args.size))
        crops_only, crops = loader_views(jpegs, TwoViewTransform(args.size, crops_only=True), keep=True)
        colour = batched_colour(crops, args.size, args.batch, device)
        print(f"one core, {args.count} images per row")
        print(f"  pre-training at {args.size} px, JPEG decode + two views:")
        print(f"    in the loader (the default)              {rate(args.count, full)}   "
              f"{1000 * full / args.count:6.1f} core·s per 1,000 images")
        print(f"    aug.on_device, the loader's crops+flips  {rate(args.count, crops_only)}   "
              f"{1000 * crops_only / args.count:6.1f} core·s per 1,000 images")
        print(f"    aug.on_device, the colour half on {device.type}, batch {args.batch}  {rate(1, colour)}")

        csv_samples, png_samples = fer_faces(tmp / "fer", args.count)
        trunk = build_trunk("resnet18", width=32, remove_maxpool=True).eval()
        network, transform = pooled_trunk(trunk), build_eval_transform(48)
        ready = torch.randn(args.count, 3, 48, 48)
        with torch.no_grad():
            network(ready[:256])  # first-call set-up kept out of the timing
            start = time.perf_counter()
            for batch in ready.split(256):
                network(batch)
            trunk_seconds = time.perf_counter() - start
        print(f"  evaluation at 48 px, ResNet-18 width 32, batch 256: trunk alone on ready tensors "
              f"{rate(args.count, trunk_seconds)}")
        for sample in csv_samples[:16] + png_samples[:16]:  # first-call set-up of the transforms kept out
            transform(load_sample_image(sample))
        for name, samples in (("FER2013 csv rows", csv_samples), ("PNG files", png_samples)):
            start = time.perf_counter()
            for sample in samples:
                transform(load_sample_image(sample))
            decode = time.perf_counter() - start
            start = time.perf_counter()
            frozen_pass(network, samples, load_sample_image, transform, modules=[trunk])
            full = time.perf_counter() - start
            print(f"    {name:<17} decode + eval transform {rate(args.count, decode)}   whole pass (frozen_pass) "
                  f"{rate(args.count, full)}")


if __name__ == "__main__":
    main()
