"""Expression accuracy of a classifier on labelled samples, and `frafer evaluate` on a saved bundle."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frafer.data.fer.dataset import FERSample, load_sample_image
from frafer.errors import FraferError
from frafer.eval.features import frozen_pass
from frafer.eval.reports import classification_report, write_report


@torch.no_grad()
def predict_logits(
    model: nn.Module, samples: list[FERSample], transform, device: torch.device, batch_size: int = 256,
    num_workers: int = 0, desc: str = "",
) -> tuple[torch.Tensor, np.ndarray, int]:
    """Logits (N', C) and labels (N',) of the readable samples, and how many were unreadable."""
    out = frozen_pass(model, samples, load_sample_image, transform, device, batch_size, num_workers,
                      desc=desc or "evaluating", modules=[model])
    if not out.readable.any():
        raise FraferError("no readable image to evaluate")
    labels = np.array([s.label for s, ok in zip(samples, out.readable.tolist(), strict=True) if ok])
    return out.values[out.readable], labels, out.unreadable


def evaluate_samples(
    model: nn.Module, samples: list[FERSample], classes, transform, device: torch.device, batch_size: int = 256,
    num_workers: int = 0, desc: str = "",
) -> dict:
    """classification_report of the model's argmax on the samples, plus the count of unreadable images."""
    return report_of(*predict_logits(model, samples, transform, device, batch_size, num_workers, desc), classes)


def report_of(logits: torch.Tensor, labels: np.ndarray, unreadable: int, classes) -> dict:
    """classification_report of the argmax of `logits`, plus the count of unreadable images."""
    report = classification_report(labels, logits.argmax(1).numpy(), list(classes))
    report["unreadable"] = unreadable
    return report


def bundle_split(bundle, data_format: str | None, root: str | None, split: str, options: list[str] = ()):
    """The labelled samples of one split for a loaded bundle: (samples, dataset name, notes, data format).

    Without `data_format` / `root`, the dataset the bundle was trained on (as recorded in it) is used; `options`
    are `key=value` data settings (e.g. `folds=10 fold=3`). Labels are mapped onto the bundle's classes.
    """
    from frafer.config.loader import build_config
    from frafer.config.schema import FinetuneConfig
    from frafer.data.fer.splits import CONTEMPT_CHOICE, prepare_splits, read_configured_dataset, relabel, uses_folds

    recorded = dict(bundle.info.get("data", {}))
    data = {k: v for k, v in recorded.items() if k in _DATASET_KEYS}
    if data_format or root:
        data = {"format": data_format or recorded.get("format"), "root": root or recorded.get("root")}
    if not data.get("format") or not data.get("root"):
        raise FraferError("give --format and --data: the bundle does not record the dataset it was trained on")
    data["classes"] = list(bundle.classes)  # the model's classes, whatever the dataset has beside them
    data["num_classes"] = (8 if "contempt" in bundle.classes else 7) if data["format"] in CONTEMPT_CHOICE else 0
    data.setdefault("fold", 0)
    cfg = build_config({"data": data}, [f"data.{o}" for o in options], FinetuneConfig)
    dataset = None if uses_folds(cfg.data) else read_configured_dataset(cfg.data)
    if dataset is None or (split == "val" and split not in dataset.splits):
        # a subject fold, or a validation split carved from train: rebuilt with the seed training used
        splits = prepare_splits(cfg.data, seed=int(bundle.info.get("config", {}).get("train", {}).get("seed", 0)))
        samples, name, notes = {"train": splits.train, "val": splits.val, "test": splits.test}.get(split), \
            splits.name, splits.notes
    else:
        notes = Counter()
        samples = relabel(dataset.split(split), bundle.classes, notes, split)
        name, notes = dataset.name, dict(notes)
    if samples is None:
        raise FraferError(f"--split must be train, val or test, got {split!r}")
    if not samples:
        raise FraferError(f"{name} has no labelled '{split}' samples among {', '.join(bundle.classes)}")
    return samples, name, notes, cfg.data.format


def evaluate_bundle(
    bundle_path: str | Path, data_format: str | None, root: str | None, split: str = "test",
    out_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 256, num_workers: int = 0,
    options: list[str] = (),
) -> tuple[dict, dict]:
    """Evaluate a bundle (or a fine-tuning run's selected model) on one split of a dataset in its native layout.

    The dataset is chosen as `bundle_split` says. Besides accuracy, the report gives the calibration of the
    bundle's probabilities (its stored temperature applied) and without it. Returns (report, written file paths).
    """
    from frafer.artifacts.bundle import find_bundle, load_bundle
    from frafer.eval.calibration import calibration_summary

    bundle = load_bundle(bundle_path, device)
    samples, name, notes, data_format = bundle_split(bundle, data_format, root, split, options)
    logits, labels, unreadable = predict_logits(bundle.model, samples, bundle.transform(), torch.device(device),
                                                batch_size, num_workers, desc=f"evaluating {split}")
    report = report_of(logits, labels, unreadable, bundle.classes)
    report["calibration"] = calibration_summary(logits.numpy(), labels, bundle.temperature)
    report["dataset"], report["split"], report["notes"] = name, split, notes
    out = Path(out_dir) if out_dir else find_bundle(bundle_path) / f"eval-{data_format}-{split}"
    return report, write_report(report, out, f"{data_format}_{split}")


def calibrate_bundle(
    bundle_path: str | Path, data_format: str | None, root: str | None, split: str = "val",
    device: str = "cpu", batch_size: int = 256, num_workers: int = 0, options: list[str] = (),
) -> dict:
    """Fit the bundle's temperature on one split (validation: never the test split you report), write it into
    bundle.json with its ECE / NLL before and after, and draw the reliability diagram beside it."""
    from frafer.artifacts.bundle import load_bundle, write_calibration
    from frafer.eval.calibration import calibration_summary, fit_temperature, plot_reliability

    bundle = load_bundle(bundle_path, device)
    samples, name, _, data_format = bundle_split(bundle, data_format, root, split, options)
    logits, labels, _ = predict_logits(bundle.model, samples, bundle.transform(), torch.device(device), batch_size,
                                       num_workers, desc=f"calibrating on {split}")
    temperature = fit_temperature(logits, labels)
    record = calibration_summary(logits.numpy(), labels, temperature) | {"fitted_on": f"{name} {split}"}
    folder = write_calibration(bundle_path, record)
    plot_reliability(logits.numpy(), labels, temperature, folder / f"reliability-{data_format}-{split}.png",
                     f"{name} {split}")
    return record


# What identifies the dataset (and its split) in a bundle's record; training-only settings are left behind.
_DATASET_KEYS = ("format", "root", "extra_roots", "fer2013_csv", "ferplus_source", "subjects_csv", "subject_pattern",
                 "train_split", "val_split", "test_split", "val_fraction", "folds", "fold_column", "fold",
                 "image_size")
