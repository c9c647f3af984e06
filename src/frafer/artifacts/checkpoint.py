"""Checkpoints: weights as safetensors, resumable state beside them, every file written atomically.

A run folder holds `checkpoints/step_XXXXXXXX/{weights.safetensors, state.pt, meta.json}` and a `latest` pointer.
A checkpoint directory is assembled under a temporary name and renamed into place, and `latest` is replaced
atomically after it, so an interrupted save never leaves a half checkpoint behind the pointer.
Nothing is ever unpickled: weights load through safetensors, state through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from frafer.errors import FraferError
from frafer.files import atomic_write, atomic_write_text

WEIGHTS = "weights.safetensors"
STATE = "state.pt"
META = "meta.json"


def save_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """State dict → safetensors file, atomically."""
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FraferError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise FraferError(f"weights file {path} is not a readable safetensors file ({err})") from None


def safe_torch_load(path: str | Path, what: str):
    """torch.load(weights_only=True), with frafer's own line for whatever it refuses (and no library warning).

    A file holding pickled objects beyond tensors is never unpickled: that could run code from the file. The
    message says so and how to convert a trusted file, never to retry without weights_only.
    """
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": noise above the real message
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FraferError(f"{what} {path} does not exist") from None
    except pickle.UnpicklingError:
        raise FraferError(
            f"{what} {path} cannot be loaded safely: it holds pickled Python objects besides tensors, and frafer "
            "never unpickles objects (that could run code from the file). If you trust its source, load it once "
            "yourself and save its tensors with safetensors.torch.save_file, then give frafer the .safetensors file"
        ) from None
    except Exception as err:  # a truncated zip, not a torch file at all, …
        raise FraferError(f"{what} {path} cannot be loaded safely: it is not a readable torch file "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None


def load_state(path: str | Path) -> dict:
    """Resumable state; refuses anything that is not plain tensors / numbers / strings (no code is run)."""
    return safe_torch_load(path, "checkpoint state")


def save_checkpoint(
    checkpoint_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict, meta: dict, keep: int = 2
) -> Path:
    """Write checkpoint `step`, point `latest` at it, and keep only the newest `keep` checkpoints."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = checkpoint_dir / name
    tmp = checkpoint_dir / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
    torch.save(state, tmp / STATE)
    (tmp / META).write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(checkpoint_dir / "latest", name + "\n")
    for old in sorted(p for p in checkpoint_dir.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint `latest` points to, or None when the run has none yet."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / WEIGHTS).is_file():
        raise FraferError(f"{pointer} points to {path.name}, which has no {WEIGHTS}")
    return path


def resume_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of a run whose weights, state and meta all load, and why newer ones were skipped.

    (None, []) for a run without checkpoints; a run whose every checkpoint is damaged is an error listing why.
    """
    folder = Path(run_dir) / "checkpoints"
    candidates = sorted((p for p in folder.glob("step_*") if p.is_dir()), reverse=True) if folder.is_dir() else []
    skipped = []
    for ckpt in candidates:
        try:
            load_weights(ckpt / WEIGHTS)
            load_state(ckpt / STATE)
            json.loads((ckpt / META).read_text())
        except (FraferError, OSError, json.JSONDecodeError) as err:
            skipped.append(f"{ckpt.name} ({str(err).splitlines()[0]})")
            continue
        return ckpt, skipped
    if candidates:
        raise FraferError(f"no intact checkpoint to resume in {folder}: {'; '.join(skipped)}")
    return None, []


def resolve_weights(path: str | Path) -> Path:
    """A run folder, a checkpoint folder or a .safetensors file → the weights file it means."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / WEIGHTS).is_file():
        return path / WEIGHTS
    if path.is_dir():
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            return ckpt / WEIGHTS
    raise FraferError(f"{path} is not a run folder, a checkpoint folder or a weights file")
