"""One FRA, BYOL and MoCo v2 training step against one supervised step of the same trunk, batch and size, in one run.

The ideal ratio is about 2.7 for the trunk alone: FRA runs two views forward and backward through the online network
and two forward through the momentum network, against one view forward and backward for supervised training. The
heads add to that: the method's projectors and predictors (docs/method.md) are 4096 wide whatever the trunk, and
the dense projector runs at every pixel, so on a small trunk they are a real share of the work. The script
therefore also counts each step's matrix-multiply and convolution FLOPs (torch's FlopCounterMode) and prints their
ratio: the floor the timed ratio would reach if every FLOP ran at the same speed. Steps are timed in alternation
(supervised, BYOL, FRA, MoCo v2, supervised, …) so machine noise hits all of them alike; medians are reported.
Each method's step is the one the pre-training loop runs: the method's model, loss, optimiser and momentum update,
from `frafer.methods`.

    python benchmarks/pretrain_step.py                       # ResNet-18, 112 px, batch 32, CPU
    python benchmarks/pretrain_step.py --arch resnet50 --size 224 --batch 64 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from frafer.config import load_config
from frafer.methods import get_method
from frafer.methods.base import update_momentum
from frafer.models.backbones import build_trunk
from frafer.optim import build_pretrain_optimizer, momentum_at


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(precision, device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def supervised_step_fn(args, device):
    trunk = build_trunk(args.arch).to(device)
    head = torch.nn.Linear(trunk.out_channels, 7).to(device)
    opt = torch.optim.SGD(list(trunk.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 7, (args.batch,), device=device)

    def step():
        with _autocast(args.precision, device):
            logits = head(trunk(x).mean(dim=(2, 3)))
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def ssl_step_fn(args, device, method_name: str):
    extra = [f"moco.bn_batch={max(1, args.batch // 2)}"] if method_name == "moco_v2" else []  # shuffle-BN: 2 BN batches
    cfg = load_config(None, [f"method={method_name}", f"model.arch={args.arch}", f"train.batch_size={args.batch}",
                             "data.source=synthetic", *extra])
    method = get_method(method_name)
    model = method.build(cfg).to(device)
    opt = build_pretrain_optimizer(cfg.optim, torch.nn.ModuleList(method.trainable(model)), 0.1)
    pairs = method.momentum_pairs(model)
    v1 = torch.randn(args.batch, 3, args.size, args.size, device=device)
    v2 = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def step():
        with _autocast(args.precision, device):
            out = model(v1, v2)
        loss, _ = method.loss(out, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update_momentum(pairs, momentum_at(1, 100))

    return step

def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (Linux: KiB)


def count_flops(step) -> int:
    """Matrix-multiply and convolution FLOPs of one step, forward and backward (elementwise work is not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    steps, memory, flops = {}, {}, {}
    for name, build in (
        ("supervised", lambda: supervised_step_fn(args, device)),
        ("byol", lambda: ssl_step_fn(args, device, "byol")),
        ("fra", lambda: ssl_step_fn(args, device, "fra")),
        ("moco_v2", lambda: ssl_step_fn(args, device, "moco_v2")),
    ):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps[name] = build()
        for _ in range(args.warmup):
            steps[name]()
        _sync(device)
        memory[name] = peak_memory_mb(device)
        flops[name] = count_flops(steps[name])

    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - t0)

    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{args.arch}, {args.size} px, batch {args.batch}, {args.precision}, {device}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} alternating rounds")
    mem_note = "peak allocated" if device.type == "cuda" else "process peak RSS after building + warm-up"
    for name in steps:
        print(f"  {name:<11} {med[name] * 1000:8.1f} ms/step  {args.batch / med[name]:7.1f} img/s  "
              f"{flops[name] / 1e9:7.1f} GFLOP  {flops[name] / med[name] / 1e9:6.1f} GFLOP/s  "
              f"{memory[name]:8.0f} MB ({mem_note})")
    print("                            time   FLOPs (the time ratio if every FLOP ran at the same speed)")
    label = {"fra": "FRA", "byol": "BYOL", "moco_v2": "MoCo v2", "supervised": "supervised"}
    for a, b, note in (("fra", "supervised", "trunk-only ideal ≈ 2.7, target ≤ 3.2"),
                       ("byol", "supervised", ""), ("moco_v2", "supervised", ""),
                       ("fra", "byol", "cost of the local branch")):
        print(f"  ratio {label[a]:>7} / {label[b]:<10} {med[a] / med[b]:6.2f} {flops[a] / flops[b]:7.2f}  {note}")


if __name__ == "__main__":
    main()
