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
    python benchmarks/pretrain_step.py --arch resnet50 --size 224 --batch 128 --device cuda --precision bf16 \
        --set train.channels_last=true --peak-tflops 989     # the issue's GPU figure (H100/H200 bf16 dense peak)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from frafer.config.loader import load_config
from frafer.engine import speed
from frafer.engine.common import check_finite
from frafer.methods import get_method
from frafer.methods.base import update_momentum
from frafer.models.backbones import build_trunk
from frafer.optim import build_pretrain_optimizer, momentum_at
from frafer.precision import autocast


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def supervised_step_fn(args, device, overrides: tuple[str, ...] = ()):
    """One supervised step of the same trunk, with the same layout options as the SSL steps."""
    run = load_config(None, ["data.source=synthetic", *overrides]).train
    trunk = speed.prepare_model(build_trunk(args.arch).to(device), run)
    head = torch.nn.Linear(trunk.out_channels, 7).to(device)
    opt = torch.optim.SGD(list(trunk.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
    x = speed.to_device(torch.randn(args.batch, 3, args.size, args.size), device, run)
    y = torch.randint(0, 7, (args.batch,), device=device)

    def step():
        with autocast(args.precision, device):
            logits = head(trunk(x).mean(dim=(2, 3)))
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def ssl_step_fn(args, device, method_name: str, overrides: tuple[str, ...] = ()):
    """The pre-training loop's step: speed options (train.channels_last, train.compile) applied as the loop does,
    the method's forward under autocast, its loss, the finiteness check, LARS and the momentum update."""
    extra = [f"moco.bn_batch={max(1, args.batch // 2)}"] if method_name == "moco_v2" else []  # shuffle-BN: 2 BN batches
    cfg = load_config(None, [f"method={method_name}", f"model.arch={args.arch}", f"train.batch_size={args.batch}",
                             "data.source=synthetic", f"train.precision={args.precision}", *extra, *overrides])
    method = get_method(method_name)
    model = speed.prepare_model(method.build(cfg).to(device), cfg.train)
    opt = build_pretrain_optimizer(cfg.optim, torch.nn.ModuleList(method.trainable(model)), 0.1,
                                   trunk=model.online.trunk)
    pairs = method.momentum_pairs(model)
    v1 = speed.to_device(torch.randn(args.batch, 3, args.size, args.size), device, cfg.train)
    v2 = speed.to_device(torch.randn(args.batch, 3, args.size, args.size), device, cfg.train)

    def step():
        with autocast(cfg.train.precision, device):
            out = model(v1, v2)
        loss, parts = method.loss(out, cfg)
        check_finite(0, parts, "")
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
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides of every step, e.g. train.channels_last=true train.compile=true")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the chip's dense peak at --precision (e.g. 989 for an H100/H200 at bf16): prints each "
                        "step's MFU, counted FLOPs / step time / peak")
    args = p.parse_args()
    overrides = tuple(args.set)
    device = torch.device(args.device)
    torch.manual_seed(0)

    steps, memory, flops = {}, {}, {}
    for name, build in (
        ("supervised", lambda: supervised_step_fn(args, device, overrides)),
        ("byol", lambda: ssl_step_fn(args, device, "byol", overrides)),
        ("fra", lambda: ssl_step_fn(args, device, "fra", overrides)),
        ("moco_v2", lambda: ssl_step_fn(args, device, "moco_v2", overrides)),
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
    print(f"{args.arch}, {args.size} px, batch {args.batch}, {args.precision}, {device}, {' '.join(overrides)} "
          f"{torch.get_num_threads()} threads, median of {args.rounds} alternating rounds")
    mem_note = "peak allocated" if device.type == "cuda" else "process peak RSS after building + warm-up"
    for name in steps:
        mfu = "" if args.peak_tflops is None else f"  MFU {flops[name] / med[name] / (args.peak_tflops * 1e12):6.1%}"
        print(f"  {name:<11} {med[name] * 1000:8.1f} ms/step  {args.batch / med[name]:7.1f} img/s  "
              f"{flops[name] / 1e9:7.1f} GFLOP  {flops[name] / med[name] / 1e9:6.1f} GFLOP/s  "
              f"{memory[name]:8.0f} MB ({mem_note}){mfu}")
    print("                            time   FLOPs (the time ratio if every FLOP ran at the same speed)")
    label = {"fra": "FRA", "byol": "BYOL", "moco_v2": "MoCo v2", "supervised": "supervised"}
    for a, b, note in (("fra", "supervised", "trunk-only ideal ≈ 2.7, target ≤ 3.2"),
                       ("byol", "supervised", ""), ("moco_v2", "supervised", ""),
                       ("fra", "byol", "cost of the local branch")):
        print(f"  ratio {label[a]:>7} / {label[b]:<10} {med[a] / med[b]:6.2f} {flops[a] / flops[b]:7.2f}  {note}")


if __name__ == "__main__":
    main()
