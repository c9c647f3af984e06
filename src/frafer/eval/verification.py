"""Face verification of a trunk (LFW / CFP-FP / CFP-FF, 10-fold): standalone and as a pre-training monitor.

The embedding is the globally pooled trunk feature (what every downstream use of the trunk sees); the score of a
pair is the cosine of the two embeddings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from frafer.data.pipelines.transforms import VGGFACE2_MEAN, VGGFACE2_STD, build_eval_transform
from frafer.data.readers.pairs import Pair, read_pairs
from frafer.eval.features import pooled_trunk
from frafer.eval.pair_scores import evaluate_pairs
from frafer.files import atomic_write_text


def trunk_embedder(trunk: nn.Module, device: torch.device):
    """(B, 3, H, W) CPU batch → (B, C) pooled trunk features, computed on `device` in eval mode."""

    @torch.no_grad()
    def embed(images: torch.Tensor) -> torch.Tensor:
        return pooled_trunk(trunk)(images.to(device, non_blocking=True)).float().cpu()

    return embed


def verify_trunk(
    trunk: nn.Module, pairs: list[Pair], image_size: int, device: torch.device, mean=VGGFACE2_MEAN, std=VGGFACE2_STD,
    batch_size: int = 128, num_workers: int = 0, progress: bool = False,
) -> dict:
    """10-fold verification accuracy (threshold from the other folds), ROC AUC and skipped-pair counts."""
    was_training = trunk.training
    trunk.eval()
    try:
        return evaluate_pairs(trunk_embedder(trunk, device), pairs, build_eval_transform(image_size, mean, std),
                              batch_size, num_workers, progress)
    finally:
        trunk.train(was_training)


def _recorded_input(weights_source: str) -> tuple[int, tuple, tuple] | None:
    """Image size and normalisation recorded beside the weights (pre-training run config or bundle), if any."""
    from frafer.artifacts.trunk_init import records_beside

    for kind, tree in records_beside(weights_source):
        if kind == "bundle" and isinstance(tree.get("input_size"), int):
            return tree["input_size"], tuple(tree["mean"]), tuple(tree["std"])
        data, aug = tree.get("data"), tree.get("aug")
        if kind == "config" and isinstance(data, dict) and isinstance(data.get("image_size"), int):
            aug = aug if isinstance(aug, dict) else {}
            return data["image_size"], tuple(aug.get("mean", VGGFACE2_MEAN)), tuple(aug.get("std", VGGFACE2_STD))
    return None


@dataclass(frozen=True)
class RandomTrunk:
    """The trunk `verify none` builds: the random baseline of a verification table, seeded."""

    arch: str = "resnet50"
    blocks: list[int] | None = None
    width: int = 64
    remove_maxpool: bool = False
    seed: int = 0

    def describe(self) -> str:
        pool = "-nomaxpool" if self.remove_maxpool else ""
        return f"random-{self.arch}-w{self.width}{pool}-seed{self.seed}"


def default_result_path(kind: str, root: str | Path, weights: str | None) -> Path:
    """verification_<protocol>_<root folder>.json beside the weights, or in the current folder for a random trunk."""
    name = re.sub(r"[^\w.-]+", "_", Path(root).resolve().name) or "root"
    folder = Path(weights).parent if weights else Path(".")
    return folder / f"verification_{kind}_{name}.json"


def verify_checkpoint(
    checkpoint: str, kind: str, root: str, image_size: int = 0, device: str = "cpu", batch_size: int = 128,
    num_workers: int = 0, out: str | None = None, random_trunk: RandomTrunk | None = None,
) -> tuple[dict, Path]:
    """Load any trunk `model.init` accepts, run the protocol `kind` on `root`, write the result as JSON to `out`.

    `checkpoint` 'none' verifies the random-init trunk `random_trunk` describes (seeded by its seed).
    """
    from frafer.artifacts.trunk_init import is_random_init, load_trunk

    pairs = read_pairs(kind, root)
    r = random_trunk or RandomTrunk()
    random = is_random_init(checkpoint)
    if random:
        torch.manual_seed(r.seed)
    trunk, record = load_trunk(checkpoint, r.arch, list(r.blocks or []), r.width, r.remove_maxpool)
    recorded = None if random else _recorded_input(record["source"])
    size, mean, std = recorded or (224, VGGFACE2_MEAN, VGGFACE2_STD)
    size = image_size or size
    dev = torch.device(device)
    result = verify_trunk(trunk.to(dev), pairs, size, dev, mean, std, batch_size, num_workers, progress=True)
    result.update(protocol=kind, root=str(root), weights=r.describe() if random else record["source"],
                  layout=record["layout"], image_size=size)
    path = Path(out) if out else default_result_path(kind, root, None if random else record["source"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result, path
