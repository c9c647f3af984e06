"""DMUE fine-tuning against plain fine-tuning of the same trunk, batch and size: step time and memory, in one run.

Each step is the one `frafer finetune` runs (`model.head=finetune` or `dmue`): the head's objective, its AdamW
optimiser and the backward pass, on one fixed batch holding every class at least twice (so DMUE's pairwise terms
run). Steps alternate (plain, DMUE, plain, …) so machine noise hits both alike; medians are reported with their
ratio. Memory is counted, not sampled: parameters, gradients and the two AdamW moments from the tensors
themselves, and the activations autograd keeps for the backward pass from a saved-tensors hook (bytes of every
distinct tensor saved during one forward), plus the CUDA allocator's peak on a GPU.

    python benchmarks/dmue_step.py                                 # ResNet-18, 112 px, batch 72 (DMUE's), CPU
    python benchmarks/dmue_step.py --arch resnet50 --size 224 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from frafer.config.loader import build_config
from frafer.config.schema import FinetuneConfig
from frafer.methods.heads import get_head
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier
from frafer.precision import autocast


def build(head_name: str, args, device):
    cfg = build_config({}, [f"model.head={head_name}", "data.root=unused", f"train.precision={args.precision}"],
                       FinetuneConfig)
    torch.manual_seed(0)
    model = FERClassifier(build_trunk(args.arch, width=args.width), args.classes)
    head = get_head(head_name)
    objective = head.objective(cfg, model, args.classes)
    module = objective.module.to(device).train()
    optimizer = head.optimizer(cfg, module)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"]
    return cfg, objective, module, optimizer


def batch(args, device):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    labels = torch.arange(args.batch) % args.classes  # every class ≥ 2 times at batch ≥ 2C
    return images.to(device), labels.to(device)


def step_fn(head_name: str, args, device):
    cfg, objective, module, optimizer = build(head_name, args, device)
    images, labels = batch(args, device)

    def step():
        with autocast(args.precision, device):
            loss, _ = objective.loss(module, images, labels, 8)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step, module, optimizer, objective


def saved_activation_bytes(objective, module, images, labels, precision, device) -> int:
    """Bytes of the distinct tensors autograd saves for backward during one forward pass."""
    seen: dict[int, int] = {}

    def pack(t):
        seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(precision, device):
        loss, _ = objective.loss(module, images, labels, 8)
    del loss
    return sum(seen.values())


def state_bytes(module, optimizer) -> dict[str, int]:
    params = [p for p in module.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    grads = sum(p.numel() * p.element_size() for p in params)
    moments = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                  if torch.is_tensor(v) and v.dim() > 0)
    return {"weights": weights, "grads": grads, "adam": moments}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=72)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    device = torch.device(args.device)
    heads = ("finetune", "dmue")
    built = {h: step_fn(h, args, device) for h in heads}
    for h in heads:  # warm-up (allocator, lazy optimiser state)
        built[h][0]()
        built[h][0]()
    times = {h: [] for h in heads}
    for _ in range(args.steps):
        for h in heads:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            built[h][0]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[h].append(time.perf_counter() - start)
    images, labels = batch(args, device)
    print(f"{args.arch} width {args.width}, {args.size} px, batch {args.batch}, {args.classes} classes, "
          f"{args.precision}, {device}, {torch.get_num_threads()} threads, {args.steps} alternating steps")
    print("| head | step (median) | weights | grads + AdamW | saved activations | CUDA peak |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = {}
    for h in heads:
        step, module, optimizer, objective = built[h]
        mem = state_bytes(module, optimizer)
        acts = saved_activation_bytes(objective, module, images, labels, args.precision, device)
        peak = "-"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            step()
            torch.cuda.synchronize(device)
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB"
        rows[h] = (statistics.median(times[h]), mem, acts)
        mib = lambda n: f"{n / 2**20:,.0f} MiB"  # noqa: E731
        print(f"| {h} | {rows[h][0] * 1000:,.0f} ms | {mib(mem['weights'])} | {mib(mem['grads'] + mem['adam'])} | "
              f"{mib(acts)} | {peak} |")
    t_ratio = rows["dmue"][0] / rows["finetune"][0]
    total = {h: sum(rows[h][1].values()) + rows[h][2] for h in heads}
    m_ratio = total["dmue"] / total["finetune"]
    print(f"DMUE / plain: step time {t_ratio:.2f}x, counted memory {m_ratio:.2f}x")


if __name__ == "__main__":
    main()
