"""The region model of an FRA pre-training run, extracted for inference and kept inside a model bundle.

    <bundle>/regions.safetensors   trunk.*, dense_projector.*, prototypes (or decoder.* for runs without them)
    bundle.json "regions"          how to rebuild it: trunk layout, widths, τ, which masks, where it came from

The trunk stored here is the pre-trained one: the decoder and dense projector were trained on its features, and
fine-tuning moves the classifier's trunk away from them (`benchmarks/region_consistency.py` measures how much).
"""

from __future__ import annotations

from pathlib import Path

import torch

from frafer.artifacts.checkpoint import load_weights, save_weights
from frafer.artifacts.trunk_init import TrunkLayout, infer_layout, records_beside
from frafer.errors import FraferError
from frafer.models.mlp import MLP
from frafer.models.query_decoder import QueryDecoder
from frafer.models.region_model import RegionModel

REGIONS_FILE = "regions.safetensors"
_PREFIX = "online."


def _model_section(weights_path: Path) -> dict:
    for kind, tree in records_beside(weights_path):
        if kind == "config" and isinstance(tree.get("model"), dict):
            return tree["model"]
    raise FraferError(f"{weights_path}: no config.yaml of a pre-training run above it, so its region model's "
                      "widths are unknown")


def _decoder(spec: dict, in_channels: int) -> QueryDecoder:
    return QueryDecoder(in_channels, spec["query_dim"], spec["proj_dim"], spec["num_queries"], spec["decoder_layers"],
                        spec["decoder_heads"], spec["decoder_ffn_dim"], dropout=0.0)


def _build(spec: dict, state: dict[str, torch.Tensor] | None = None) -> RegionModel:
    layout = TrunkLayout.from_dict(spec["trunk"])
    trunk = layout.build()
    c = trunk.out_channels
    projector = MLP(c, spec["proj_hidden_dim"], spec["proj_dim"])
    per_face = spec["masks"] == "per_face"
    prototypes = None if per_face else torch.zeros(spec["num_queries"], spec["proj_dim"])
    model = RegionModel(trunk, projector, _decoder(spec, c) if per_face else None, prototypes, spec["temperature"])
    if state is not None:
        if per_face:
            state = {"prototypes": torch.zeros(0), **state}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise FraferError(f"region weights do not match their description ({str(err).splitlines()[0]})") from None
    return model.eval()


def region_model_from_pretraining(weights_path: str | Path) -> tuple[RegionModel, dict]:
    """The online network's trunk, dense projector and masks from an FRA checkpoint; (model, spec for bundle.json)."""
    weights_path = Path(weights_path)
    state = load_weights(weights_path)
    if f"{_PREFIX}dense_projector.net.0.weight" not in state:
        raise FraferError(f"{weights_path} holds no FRA local branch (no {_PREFIX}dense_projector.*): only FRA "
                          "pre-training has region heatmaps")
    model_cfg = _model_section(weights_path)
    trunk = _sub(state, "trunk.")
    layout = infer_layout(trunk, bool(model_cfg.get("remove_maxpool", False)))
    has_prototypes = int(state.get(f"{_PREFIX}prototype_updates", torch.zeros(())).item()) > 0
    shared = bool(model_cfg.get("shared_masks", True))
    spec = {
        "trunk": layout.to_dict(), "source": str(weights_path), "trunk_from": "pre-training",
        "masks": "prototypes" if shared and has_prototypes else "per_face",
        "temperature": float(model_cfg.get("heatmap_temperature", 1.0)),
        **{k: int(model_cfg[k]) for k in ("num_queries", "proj_dim", "proj_hidden_dim", "query_dim", "decoder_layers",
                                          "decoder_heads", "decoder_ffn_dim")},
    }
    local = {"trunk": trunk, "dense_projector": _sub(state, "dense_projector.")}
    if spec["masks"] == "prototypes":
        local["prototypes"] = {"": state[f"{_PREFIX}mask_prototypes"]}
    else:
        local["decoder"] = _sub(state, "decoder.")
    flat = {(f"{group}.{k}" if k else group): v for group, tensors in local.items() for k, v in tensors.items()}
    return _build(spec, flat), spec


def _sub(state: dict, name: str) -> dict:
    return {k[len(_PREFIX + name):]: v for k, v in state.items() if k.startswith(_PREFIX + name)}


def save_regions(folder: Path, model: RegionModel) -> None:
    save_weights(folder / REGIONS_FILE, {k: v.contiguous() for k, v in model.state_dict().items()
                                         if not (k == "prototypes" and v.numel() == 0)})


def load_regions(folder: Path, spec: dict) -> RegionModel:
    path = folder / REGIONS_FILE
    if not path.is_file():
        raise FraferError(f"{folder}: bundle.json describes a region model but {REGIONS_FILE} is missing")
    try:
        return _build(spec, load_weights(path))
    except KeyError as err:
        raise FraferError(f"{folder}: the region model's description lacks {err}") from None
