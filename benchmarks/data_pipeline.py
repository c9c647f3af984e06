"""Images per second per CPU core of the input pipelines, and of the trunk's inference beside them.

Three measurements, each on one core (one torch thread, no data workers, so a DataLoader with N workers scales it
by about N):

- pre-training: decode a 224 px JPEG face + the two augmented views (`TwoViewTransform`, METHOD's augmentation);
  a GPU step at R images/s needs about R / this many cores feeding it;
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

from frafer.data.fer_dataset import FERSample, load_sample_image
from frafer.data.formats.fer2013 import read_fer2013
from frafer.data.images import load_rgb
from frafer.data.synthetic import SyntheticFaces
from frafer.data.transforms import TwoViewTransform, build_eval_transform
from frafer.eval.features import frozen_pass, pooled_trunk
from frafer.models.backbones import build_trunk


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} img/s"


def pretraining_views(folder: Path, count: int, size: int) -> float:
    faces = SyntheticFaces(count, size, num_identities=50, seed=0)
    paths = []
    for i in range(count):
        paths.append(folder / f"{i:05d}.jpg")
        faces[i][0].save(paths[-1], quality=90)
    transform = TwoViewTransform(size)
    start = time.perf_counter()
    for path in paths:
        transform(load_rgb(path))
    return time.perf_counter() - start


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
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "jpg").mkdir()
        (tmp / "fer").mkdir()
        seconds = pretraining_views(tmp / "jpg", args.count, args.size)
        print(f"one core, {args.count} images per row")
        print(f"  pre-training: {args.size} px JPEG decode + two augmented views  {rate(args.count, seconds)}")

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
