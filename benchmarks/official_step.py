"""frafer's FRA pre-training step against the official FRA code's, same network and batch, timed in one process.

The official code (github.com/zaczgao/Facial_Region_Awareness, commit 791434b, CC-BY-NC) is read from a scratch
checkout and nothing of it is copied into frafer. Its two imports used only for distributed runs and one weight init
(`classy_vision`, `fvcore`) are stood in for. Its step is its training loop's: `FRAB(im_v1, im_v2)` with the README's
FRA settings (attention masks, 8 queries, teacher temperature 0.04, cluster weight 0.1), LARS over its own parameter
groups, the `.item()` of every logged loss, and its state-dict momentum update. frafer's step is its loop's
(benchmarks/pretrain_step.py: speed options, autocast, finiteness check, LARS, foreach momentum update), at each
setting given. Steps alternate (official, frafer setting 1, setting 2, …) so machine noise hits all alike; medians
are printed with images/s, FLOPs (torch's counter: convolutions and matrix products) and achieved GFLOP/s.
`--precision bf16` runs both under CPU / CUDA bf16 autocast (the official loop autocasts on CUDA only, with fp16).

    git -C <mirror> archive 791434b | tar x -C /tmp/official
    .venv/bin/python benchmarks/official_step.py --official /tmp/official
    .venv/bin/python benchmarks/official_step.py --official /tmp/official --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import torch
from pretrain_step import count_flops, ssl_step_fn

SETTINGS = {  # name → config overrides of frafer's step
    "plain": ("train.channels_last=false",),
    "channels_last": ("train.channels_last=true",),
    "compile": ("train.channels_last=true", "train.compile=true"),
}


def _stand_ins() -> None:
    """Empty modules for the official code's distributed helper and detectron-style weight init."""
    util = types.ModuleType("classy_vision.generic.distributed_util")
    util.is_distributed_training_run = lambda: False
    init = types.ModuleType("fvcore.nn.weight_init")
    init.c2_xavier_fill = lambda m: torch.nn.init.xavier_uniform_(m.weight)
    fvcore, fvcore_nn = types.ModuleType("fvcore"), types.ModuleType("fvcore.nn")
    fvcore.nn, fvcore_nn.weight_init = fvcore_nn, init
    sys.modules.update({"classy_vision": types.ModuleType("classy_vision"),
                        "classy_vision.generic": types.ModuleType("classy_vision.generic"),
                        "classy_vision.generic.distributed_util": util,
                        "fvcore": fvcore, "fvcore.nn": fvcore_nn, "fvcore.nn.weight_init": init})


def official_step_fn(args, device):
    _stand_ins()
    sys.path[:0] = [args.official, f"{args.official}/models"]
    from backbone import resnet
    from models.fra import FRAB
    from utils.LARS import LARS

    model = FRAB(getattr(resnet, f"{args.arch}_encoder"), dim=256, m=0.996, hid_dim=4096, norm_layer=None,
                 num_neck_mlp=2, scale=1.0, l2_norm=True, num_heads=8, loss_weight=0.5, mask_type="attn",
                 num_proto=8, teacher_temp=0.04, loss_w_cluster=0.1).to(device)
    no_decay = [p for n, p in model.named_parameters() if "bn" in n or "downsample.1" in n or "bias" in n]
    decay = [p for n, p in model.named_parameters() if not any(p is q for q in no_decay)]
    opt = LARS([{"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}, {"params": decay}], lr=0.1,
               momentum=0.9, weight_decay=1e-6)
    v1 = torch.randn(args.batch, 3, args.size, args.size, device=device)
    v2 = torch.randn(args.batch, 3, args.size, args.size, device=device)
    done = [0]

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss, pack = model(im_v1=v1, im_v2=v2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        [float(v.detach()) for v in (loss, *pack.values())]  # its loop logs every part every step
        model.momentum_update(done[0], 100)
        done[0] += 1

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="checkout of the official code (holds models/, backbone/)")
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--settings", default="plain,channels_last", help=f"frafer settings, of {', '.join(SETTINGS)}")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    steps = {"official": official_step_fn(args, device)}
    for name in args.settings.split(","):
        steps[f"frafer {name}"] = ssl_step_fn(args, device, "fra", SETTINGS[name])
    flops = {}
    for name, step in steps.items():
        for _ in range(args.warmup):  # a compiled setting compiles here
            step()
        if "compile" not in name:  # the counter sees eager ops only; a setting changes kernels, not FLOPs
            flops[name] = count_flops(step)
    counted = [v for k, v in flops.items() if k != "official"]
    flops |= {name: counted[0] if counted else float("nan") for name in steps if name not in flops}
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)

    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"FRA step, {args.arch}, {args.size} px, batch {args.batch}, {args.precision}, {device}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} alternating rounds")
    for name in steps:
        fl = flops[name]
        print(f"  {name:<22} {med[name] * 1000:8.0f} ms  {args.batch / med[name]:6.1f} img/s  {fl / 1e9:7.1f} GFLOP  "
              f"{fl / med[name] / 1e9:6.1f} GFLOP/s  ×{med[name] / med['official']:.2f} of official")


if __name__ == "__main__":
    main()
