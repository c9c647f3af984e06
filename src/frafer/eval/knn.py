"""Weighted k-nearest-neighbour classification on frozen features: the pre-training monitor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frafer.data.pipelines.transforms import build_eval_transform
from frafer.data.readers.images import load_rgb
from frafer.data.readers.labelled import class_folder_items
from frafer.eval.features import frozen_pass, pooled_trunk


def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07, chunk: int = 1024,
) -> torch.Tensor:
    """Class of each query by the k most cosine-similar bank items, each voting exp(similarity / T)."""
    k = min(k, len(bank))
    preds = []
    for q in queries.split(chunk):
        sim, idx = (q @ bank.t()).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(q), num_classes).scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


@dataclass
class KNNMonitor:
    """kNN top-1 of the online trunk: class folders `train_root` are the memory bank, `val_root` is classified."""

    train_root: str
    val_root: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    k: int = 20
    temperature: float = 0.07
    batch_size: int = 128
    num_workers: int = 0

    def __post_init__(self) -> None:
        # Listing both folders here means a bad monitor path fails before any model is built.
        self.train_items, self.classes = class_folder_items(self.train_root)
        self.val_items, _ = class_folder_items(self.val_root, self.classes)

    def _features(self, trunk: nn.Module, items, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
        """L2-normalised pooled features (N', C) and labels (N',) of the readable items, and how many were not."""
        out = frozen_pass(pooled_trunk(trunk), [path for path, _ in items], load_rgb,
                          build_eval_transform(self.image_size, self.mean, self.std), device, self.batch_size,
                          self.num_workers, modules=[trunk])
        labels = torch.tensor([label for _, label in items])
        return F.normalize(out.values[out.readable], dim=1), labels[out.readable], out.unreadable

    def evaluate(self, trunk: nn.Module, device: torch.device) -> dict[str, float]:
        bank, bank_y, s1 = self._features(trunk, self.train_items, device)
        val, val_y, s2 = self._features(trunk, self.val_items, device)
        pred = knn_predict(bank, bank_y, val, len(self.classes), self.k, self.temperature)
        return {"knn_top1": 100.0 * (pred == val_y).float().mean().item(), "knn_skipped": s1 + s2}
