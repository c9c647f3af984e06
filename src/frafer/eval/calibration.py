"""Probabilities a user can trust: temperature scaling, expected calibration error and reliability diagrams.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar T > 0 fitted on held-out data to minimise
the negative log-likelihood: the argmax (and so accuracy) is unchanged, only how confident the softmax is. A bundle
stores T (`calibration.temperature` in bundle.json); `predict`, `evaluate` and `serve` apply it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from frafer.errors import FraferError

ECE_BINS = 15  # equal-width confidence bins, as Guo et al.


def fit_temperature(logits: torch.Tensor, labels, max_iter: int = 200) -> float:
    """The T > 0 that minimises the mean NLL of softmax(logits / T) on `labels` (N,); logits (N, C).

    Optimised over log T with L-BFGS, so T stays positive; starts at T = 1.
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise FraferError(f"fit_temperature needs (N, C) logits and N labels, got {tuple(logits.shape)} and "
                          f"{len(labels)}")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        raise FraferError(f"temperature fit diverged (T = {t}); are the logits finite?")
    return t


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """(N, C) logits → (N, C) probabilities of softmax(logits / temperature), in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin: its range, count, mean confidence and accuracy of the argmax (empty bins
    have count 0 and NaN means)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lo, hi] bins
    out = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                    "confidence": float(confidence[inside].mean()) if n else math.nan,
                    "accuracy": float(correct[inside].mean()) if n else math.nan})
    return out


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """ECE in %: the count-weighted mean over bins of |accuracy − mean confidence|."""
    table = reliability_bins(probs, labels, bins)
    total = sum(b["count"] for b in table)
    if total == 0:
        raise FraferError("expected_calibration_error needs at least one prediction")
    return 100.0 * sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in table if b["count"]) / total


def calibration_summary(logits, labels, temperature: float) -> dict:
    """ECE and NLL before (T = 1) and after temperature scaling on one split, for reports and bundle.json."""
    labels = np.asarray(labels)
    out = {"temperature": temperature, "count": int(len(labels))}
    for name, t in (("before", 1.0), ("after", temperature)):
        p = softmax(logits, t)
        out[f"ece_{name}"] = expected_calibration_error(p, labels)
        out[f"nll_{name}"] = float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())
    return out


def plot_reliability(logits, labels, temperature: float, path: str | Path, title: str = "") -> Path:
    """A reliability diagram (accuracy against confidence per bin) before and after scaling, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, (name, t) in zip(axes, (("before: T = 1", 1.0), (f"after: T = {temperature:.3f}", temperature)),
                             strict=True):
        p = softmax(logits, t)
        table = reliability_bins(p, labels)
        centres = [(b["lo"] + b["hi"]) / 2 for b in table]
        accuracy = [0.0 if b["count"] == 0 else b["accuracy"] for b in table]
        ax.bar(centres, accuracy, width=1 / len(table), edgecolor="black", color="#4c72b0", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.set_title(f"{name}, ECE {expected_calibration_error(p, labels):.2f} %")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
