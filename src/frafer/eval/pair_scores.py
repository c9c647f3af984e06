"""Face verification (LFW / CFP protocol): cosine similarity of embeddings, k-fold threshold accuracy and ROC AUC.

The model is only a callable here: `embed_fn` maps a (B, 3, H, W) float batch to (B, D) embeddings, so this module
never imports model code and any trunk (pooled features, projector output, a baseline) can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from frafer.data.readers.images import load_rgb
from frafer.data.readers.pairs import Pair
from frafer.errors import FraferError
from frafer.eval.features import frozen_pass

EmbedFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) -> (B, D)


def roc_auc(scores, same) -> float:
    """Area under the ROC curve in [0, 1]: the chance a same pair scores above a different pair, ties counting half.

    Computed from ranks (Mann-Whitney U) with tied scores given their average rank.
    """
    scores, same = _check_scores(scores, same)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise FraferError(f"ROC AUC needs both same and different pairs, got {n_pos} same and {n_neg} different")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = average_rank[inverse][same].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def kfold_accuracy(scores, same, folds) -> dict:
    """Verification accuracy by the k-fold protocol: each fold is judged with the threshold best on the others.

    A pair is called "same" when its score is above the threshold. Candidate thresholds are the midpoints between
    consecutive distinct training scores, plus one unit below the lowest and above the highest; the first (lowest)
    candidate of highest training accuracy wins. Returns accuracy (mean over folds, %), std (population std over
    folds, %), per_fold (%), thresholds, folds (the fold ids, in order) and auc (% over all pairs).
    """
    scores, same = _check_scores(scores, same)
    folds = np.asarray(folds).reshape(-1)
    if len(folds) != len(scores):
        raise FraferError(f"kfold_accuracy got {len(scores)} scores but {len(folds)} fold ids")
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise FraferError(f"k-fold verification needs at least 2 folds, got {len(fold_ids)}")
    per_fold, thresholds = [], []
    for fold in fold_ids:
        test = folds == fold
        threshold = best_threshold(scores[~test], same[~test])
        per_fold.append(100.0 * float(np.mean((scores[test] > threshold) == same[test])))
        thresholds.append(threshold)
    return {
        "accuracy": float(np.mean(per_fold)),
        "std": float(np.std(per_fold)),
        "per_fold": per_fold,
        "thresholds": thresholds,
        "folds": [_plain(f) for f in fold_ids],
        "auc": 100.0 * roc_auc(scores, same),
    }


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold t maximising the accuracy of "same iff score > t" on these pairs (first of any ties)."""
    values = np.unique(scores)  # sorted
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2.0, [values[-1] + 1.0]])
    pos, neg = np.sort(scores[same]), np.sort(scores[~same])
    # correct = same pairs above t + different pairs at or below t, for every candidate at once
    correct = (len(pos) - np.searchsorted(pos, candidates, side="right")) + np.searchsorted(neg, candidates, "right")
    return float(candidates[int(np.argmax(correct))])


@torch.no_grad()
def embed_images(
    embed_fn: EmbedFn, paths: Sequence[Hashable], transform: Callable, batch_size: int = 64,
    num_workers: int = 0, progress: bool = False,
) -> tuple[dict, int]:
    """Embed every distinct image once: ({path: (D,) L2-normalised CPU float tensor}, number of unreadable files).

    `transform` turns an RGB PIL image into a (3, H, W) tensor; batches go to embed_fn on the CPU (move them to
    the model's device inside embed_fn). Unreadable files are left out of the dict and counted, not fatal.
    """
    unique = list(dict.fromkeys(paths))
    out = frozen_pass(embed_fn, unique, load_rgb, transform, "cpu", batch_size, num_workers,
                      desc="embedding" if progress else "")
    vectors = F.normalize(out.values, dim=1)
    return {path: vectors[i] for i, path in enumerate(unique) if out.readable[i]}, out.unreadable


def evaluate_pairs(
    embed_fn: EmbedFn, pairs: Sequence[Pair], transform: Callable, batch_size: int = 64,
    num_workers: int = 0, progress: bool = False,
) -> dict:
    """Cosine similarity of each pair's embeddings, scored by `kfold_accuracy` over the pairs' folds.

    Pairs with an unreadable image are skipped. Adds to kfold_accuracy's dict: pairs (evaluated), skipped_pairs
    and unreadable_images.
    """
    if not pairs:
        raise FraferError("evaluate_pairs got an empty pair list")
    paths = [p for pair in pairs for p in (pair.path_a, pair.path_b)]
    embeddings, unreadable = embed_images(embed_fn, paths, transform, batch_size, num_workers, progress)
    kept = [pair for pair in pairs if pair.path_a in embeddings and pair.path_b in embeddings]
    if not kept:
        raise FraferError(
            f"none of the {len(pairs)} verification pairs could be evaluated: every pair has an unreadable image "
            f"(e.g. {pairs[0].path_a})"
        )
    a = torch.stack([embeddings[pair.path_a] for pair in kept])  # (P, D)
    b = torch.stack([embeddings[pair.path_b] for pair in kept])  # (P, D)
    scores = (a.double() * b.double()).sum(dim=1).numpy()  # cosine: both are unit vectors
    result = kfold_accuracy(scores, [pair.same for pair in kept], [pair.fold for pair in kept])
    result.update(pairs=len(kept), skipped_pairs=len(pairs) - len(kept), unreadable_images=unreadable)
    return result


def _check_scores(scores, same) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    same = np.asarray(same).reshape(-1).astype(bool)
    if len(scores) != len(same):
        raise FraferError(f"got {len(scores)} scores but {len(same)} same/different labels")
    if len(scores) == 0:
        raise FraferError("verification needs at least one scored pair, got none")
    if not np.isfinite(scores).all():
        raise FraferError(f"{int((~np.isfinite(scores)).sum())} verification scores are NaN or infinite")
    return scores, same


def _plain(value):
    """A numpy scalar as the matching Python number (JSON-ready)."""
    return value.item() if isinstance(value, np.generic) else value
