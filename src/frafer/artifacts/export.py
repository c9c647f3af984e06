"""Export the online trunk of a pre-training run as a torchvision-layout safetensors file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from frafer.artifacts.checkpoint import load_weights, resolve_weights, save_weights
from frafer.errors import FraferError

TRUNK_PREFIX = "online.trunk."


def trunk_state_dict(weights: dict) -> dict:
    """FRA checkpoint weights → the online trunk's state dict, keys as in torchvision.models.resnet*."""
    trunk = {k[len(TRUNK_PREFIX):]: v for k, v in weights.items() if k.startswith(TRUNK_PREFIX)}
    if not trunk:
        raise FraferError("the checkpoint holds no online trunk (keys 'online.trunk.*'): is it an FRA run?")
    return trunk


def _run_dir_of(weights_path: Path) -> Path | None:
    for parent in weights_path.parents:
        if (parent / "config.yaml").is_file():
            return parent
    return None


def export_backbone(run: str | Path, out: str | Path | None = None) -> Path:
    """Write `RUN/backbone.safetensors` (or `out`); it loads into torchvision's ResNet with strict=False missing fc."""
    weights_path = resolve_weights(run)
    trunk = trunk_state_dict(load_weights(weights_path))
    run_dir = _run_dir_of(weights_path)
    metadata = {"format": "torchvision-resnet-trunk", "source": str(weights_path)}
    if run_dir is not None:
        model_cfg = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("model", {})
        metadata["model"] = json.dumps({k: model_cfg.get(k) for k in ("arch", "blocks", "width", "remove_maxpool")})
    out = Path(out) if out else (run_dir or weights_path.parent) / "backbone.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, trunk, metadata)
    return out
