"""Seconds per epoch of the cached linear probe's head, alone or beside a second CPU-heavy process.

The trunk is not what this measures: features are random (the extraction is replaced), so only the head's
training loop on the cached tensor is timed, over a FER2013-sized training split (28,709 rows, 48 px, written as a
fer2013.csv in a temporary folder): the probe's own epoch loop is timed epoch by epoch, and the median printed.
`--busy` starts a process that multiplies matrices on every core meanwhile, as another job on a shared machine
would.

    .venv/bin/python benchmarks/probe_epoch.py            # quiet machine
    .venv/bin/python benchmarks/probe_epoch.py --busy     # beside a CPU-heavy process
"""

from __future__ import annotations

import argparse
import inspect
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from frafer.config.loader import build_config
from frafer.config.schema import FinetuneConfig
from frafer.train import cached_probe as probe_module
from frafer.train.linear_probe import linear_probe


def _write_fer2013(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    pixels = " ".join(["128"] * 48 * 48)
    with path.open("w") as f:
        f.write("emotion,pixels,Usage\n")
        for code in rng.integers(0, 7, rows):
            f.write(f"{code},{pixels},Training\n")
        for code in rng.integers(0, 7, 64):
            f.write(f"{code},{pixels},PublicTest\n")


def _busy() -> None:
    a = torch.randn(1024, 1024)
    while True:
        a @ a


class _EpochClock(probe_module.tqdm):
    """The probe's tqdm, recording when each epoch of its head-training loop ends."""

    ticks: list[float] = []

    def __iter__(self):
        timed = self.desc.startswith("linear probe")
        for item in super().__iter__():
            if timed:
                _EpochClock.ticks.append(time.perf_counter())
            yield item
        if timed:
            _EpochClock.ticks.append(time.perf_counter())


def _time_probe(root: Path, run_dir: Path, epochs: int, dim: int, threads: int) -> list[float]:
    def random_features(model, samples, *args, **kwargs):
        g = torch.Generator().manual_seed(len(samples))
        return torch.randn(len(samples), dim, generator=g), torch.ones(len(samples), dtype=torch.bool)

    probe_module.extract_features = random_features
    probe_module.tqdm = _EpochClock
    _EpochClock.ticks = []
    overrides = ["data.format=fer2013", f"data.root={root}", "data.image_size=48", "data.num_workers=0",
                 "model.arch=resnet18", "model.width=64", "train.device=cpu", "train.precision=fp32",
                 "train.tensorboard=false", f"probe.epochs={epochs}", "probe.batch_size=256"]
    known = {key for key, *_ in __import__("frafer.config.loader", fromlist=["describe"]).describe(FinetuneConfig)}
    if "train.threads" in known:
        overrides.append(f"train.threads={threads}")
    cfg = build_config({}, overrides, FinetuneConfig)
    kwargs = {"overwrite": True} if "overwrite" in inspect.signature(linear_probe).parameters else {}
    linear_probe(cfg, run_dir, **kwargs)
    return np.diff(_EpochClock.ticks).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=28709)
    parser.add_argument("--dim", type=int, default=512, help="feature width (ResNet-18: 512, ResNet-50: 2048)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs timed")
    parser.add_argument("--threads", type=int, default=0, help="train.threads (0 = the default), where it exists")
    parser.add_argument("--busy", action="store_true", help="run a CPU-heavy process beside it")
    args = parser.parse_args()
    busy = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_fer2013(root / "fer2013.csv", args.rows)
        if args.busy:
            busy = mp.get_context("spawn").Process(target=_busy, daemon=True)
            busy.start()
        try:
            epochs = _time_probe(root, root / "run", args.epochs, args.dim, args.threads)
        finally:
            if busy is not None:
                busy.terminate()
    per_epoch = float(np.median(epochs))
    steps = args.rows // 256
    print(f"{'busy' if args.busy else 'quiet'} machine, torch threads at start {torch.get_num_threads()}: "
          f"{per_epoch:.2f} s an epoch ({steps} steps of 256, {1000 * per_epoch / steps:.1f} ms a step); "
          f"100 epochs ≈ {100 * per_epoch:.0f} s")


if __name__ == "__main__":
    main()
