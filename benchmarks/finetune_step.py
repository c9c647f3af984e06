"""One fine-tuning step (the loop's: speed options, forward, cross-entropy, AdamW) at each setting, timed in turn.

The settings are the fine-tuning defaults' levers, one at a time: the NCHW layout with torch's per-parameter AdamW
loop (the plain path), + channels_last, + the fused AdamW kernel (both defaults), + bf16 autocast, and the optimiser
step alone.
Steps alternate between settings so machine noise hits all alike; medians are printed with images/s.

    .venv/bin/python benchmarks/finetune_step.py                  # the FER+ CPU recipe: ResNet-18 width 32, 48 px
    .venv/bin/python benchmarks/finetune_step.py --width 64 --size 112 --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from frafer.config.loader import load_config
from frafer.config.schema import FinetuneConfig
from frafer.engine import speed
from frafer.methods.heads import get_head
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier
from frafer.precision import autocast

SETTINGS = {
    "plain (NCHW, AdamW loop)": ("train.channels_last=false", "optim.fused=false"),
    "channels_last": ("train.channels_last=true", "optim.fused=false"),
    "channels_last + fused AdamW": ("train.channels_last=true", "optim.fused=true"),
    # bf16 autocast: slower than fp32 on CPUs without AMX, 2-3x faster with it (the built-in model's recipe)
    "bf16 + channels_last + fused AdamW": ("train.precision=bf16", "train.channels_last=true", "optim.fused=true"),
}


def step_fn(args, overrides):
    cfg = load_config(None, ["data.root=unused", f"train.precision={args.precision}", *overrides], FinetuneConfig)
    model = FERClassifier(build_trunk("resnet18", width=args.width, remove_maxpool=args.size <= 64), 7)
    model = speed.prepare_model(model, cfg.train)
    optimizer = get_head("finetune").optimizer(cfg, model)
    images = speed.to_device(torch.randn(args.batch, 3, args.size, args.size), torch.device("cpu"), cfg.train)
    labels = torch.randint(0, 7, (args.batch,))

    def step(optimiser_only=False):
        if not optimiser_only:
            with autocast(cfg.train.precision, images.device):
                loss = F.cross_entropy(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    steps = {name: step_fn(args, o) for name, o in SETTINGS.items()}
    runs = dict(steps)
    runs["AdamW loop, optimiser step alone"] = lambda s=steps["channels_last"]: s(optimiser_only=True)
    runs["fused AdamW, optimiser step alone"] = lambda s=steps["channels_last + fused AdamW"]: s(optimiser_only=True)
    for run in runs.values():
        run(), run()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    first = next(iter(SETTINGS))
    print(f"fine-tuning step, ResNet-18 width {args.width}, {args.size} px, batch {args.batch}, {args.precision}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} alternating rounds")
    for name in runs:
        rates = ""
        if name in SETTINGS:
            rates = f"{args.batch / med[name]:7.1f} img/s  ×{med[name] / med[first]:.2f} of plain"
        print(f"  {name:<34} {med[name] * 1000:8.1f} ms  {rates}")


if __name__ == "__main__":
    main()
