"""How a pre-training run changed its trunk, checkpoint by checkpoint: weight norms, weight ranks, feature spread.

For the fine-tuning question (README): a pre-trained trunk that fine-tunes worse than a random one. Per residual
stage, against a freshly initialised trunk of the same layout (torchvision's initialisation, as every run starts):
- norm×: the stage's conv weights' Frobenius norm over the fresh trunk's (weight growth);
- rank×: the mean effective rank of its conv weights (exp of the entropy of the normalised singular values of each
  weight as an out × (in·k·k) matrix) over the fresh trunk's;
and, on images (`--faces`, global-average-pooled features, batch-norm in training mode as fine-tuning sees them):
- top-2: the share of the feature variance in its two largest principal directions;
- eff. dim: the participation ratio (Σλ)² / Σλ² of that spectrum.

    python benchmarks/trunk_health.py RUN_DIR [RUN_DIR …] --faces FOLDER [--count 512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from frafer.artifacts.checkpoint import WEIGHTS
from frafer.artifacts.trunk_init import TrunkLayout, load_trunk
from frafer.data.pipelines.transforms import build_eval_transform
from frafer.data.readers.images import first_images

STAGES = ("layer1", "layer2", "layer3", "layer4")


def effective_rank(weight: torch.Tensor) -> float:
    s = torch.linalg.svdvals(weight.flatten(1).double())
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum()))


def stage_stats(trunk) -> dict[str, tuple[float, float]]:
    """{stage: (Frobenius norm of its conv weights, mean effective rank of them)}."""
    out = {}
    for name in STAGES:
        convs = [m.weight.detach() for m in getattr(trunk, name).modules() if isinstance(m, torch.nn.Conv2d)]
        norm = float(torch.sqrt(sum((w.double() ** 2).sum() for w in convs)))
        out[name] = (norm, sum(effective_rank(w) for w in convs) / len(convs))
    return out


@torch.no_grad()
def feature_spread(trunk, images: torch.Tensor) -> tuple[float, float]:
    """(share of variance in the top 2 principal directions, participation ratio) of pooled features, batch-norm on
    batch statistics (batches of 128) as fine-tuning starts: the running statistics of a fresh trunk mean nothing."""
    trunk.train()
    feats = torch.cat([trunk(images[i:i + 128]).mean(dim=(2, 3)) for i in range(0, len(images), 128)]).double()
    eig = torch.linalg.eigvalsh(torch.cov(feats.T)).clamp_min(0).flip(0)
    return float(eig[:2].sum() / eig.sum()), float(eig.sum() ** 2 / (eig ** 2).sum())


def checkpoints(run_dir: Path) -> list[Path]:
    found = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if (p / WEIGHTS).is_file())
    if not found:
        raise SystemExit(f"{run_dir}: no checkpoints")
    return found


def load_faces(folder: Path, count: int, size: int) -> torch.Tensor:
    images = first_images(folder, count)
    if not images:
        raise SystemExit(f"no readable images under {folder}")
    transform = build_eval_transform(size)
    return torch.stack([transform(image) for image in images])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--faces", type=Path, required=True, help="a folder of face images (e.g. the labelled val split)")
    ap.add_argument("--count", type=int, default=512)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    images = load_faces(args.faces, args.count, args.size)
    print(f"{len(images)} faces from {args.faces} at {args.size} px")
    print("| run | step | " + " | ".join(f"{s} norm× | {s} rank×" for s in STAGES[2:]) + " | top-2 | eff. dim |")
    print("|---|---:|" + "---:|" * (2 * len(STAGES[2:]) + 2))
    for run in args.runs:
        trunks = [(str(int(c.name.split("_")[1])), load_trunk(str(c / WEIGHTS), "", [], 0, False)) for c in
                  checkpoints(run)]
        torch.manual_seed(0)
        fresh = TrunkLayout.from_dict(trunks[0][1][1]["layout"]).build()  # a fresh init of the same layout
        base = stage_stats(fresh)
        rows = [("init", fresh)] + [(step, trunk) for step, (trunk, _) in trunks]
        for step, trunk in rows:
            stats = stage_stats(trunk)
            cells = [f"{stats[s][0] / base[s][0]:.2f} | {stats[s][1] / base[s][1]:.2f}" for s in STAGES[2:]]
            top2, dim = feature_spread(trunk, images)
            print(f"| {run.parent.name}/{run.name} | {step} | " + " | ".join(cells) + f" | {top2:.3f} | {dim:.1f} |")


if __name__ == "__main__":
    main()
