"""Weighted k-nearest-neighbour classification on frozen features: the pre-training monitor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from frafer.data.labelled import LabelledImages, class_folder_items, collate_labelled
from frafer.data.transforms import build_eval_transform


@torch.no_grad()
def extract_features(
    trunk: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """L2-normalised globally pooled trunk features (N, C), labels (N,), and the number of unreadable files."""
    was_training = trunk.training
    trunk.eval()
    feats, labels, skipped = [], [], 0
    for x, y, bad in loader:
        skipped += bad
        if len(x):
            f = trunk(x.to(device, non_blocking=True)).float().mean(dim=(2, 3))
            feats.append(F.normalize(f, dim=1).cpu())
            labels.append(y)
    trunk.train(was_training)
    return torch.cat(feats), torch.cat(labels), skipped


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

    def _loader(self, items) -> DataLoader:
        ds = LabelledImages(items, build_eval_transform(self.image_size, self.mean, self.std))
        return DataLoader(ds, self.batch_size, num_workers=self.num_workers, collate_fn=collate_labelled)

    def evaluate(self, trunk: nn.Module, device: torch.device) -> dict[str, float]:
        bank, bank_y, s1 = extract_features(trunk, self._loader(self.train_items), device)
        val, val_y, s2 = extract_features(trunk, self._loader(self.val_items), device)
        pred = knn_predict(bank, bank_y, val, len(self.classes), self.k, self.temperature)
        return {"knn_top1": 100.0 * (pred == val_y).float().mean().item(), "knn_skipped": s1 + s2}
