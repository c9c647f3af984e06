"""Where a downstream trunk's weights come from: an FRA run, a checkpoint, a bundle, a torchvision state dict, or none.

Nothing is unpickled: safetensors files load as tensors only, `.pth` / `.pt` files through
`torch.load(weights_only=True)`. The trunk's layout (block type, blocks per stage, width) is read from the weights
themselves, so a user never has to restate the architecture of what they pre-trained.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from frafer.artifacts.checkpoint import WEIGHTS, latest_checkpoint, load_weights, safe_torch_load
from frafer.errors import FraferError
from frafer.models.backbones import ResNetTrunk, build_trunk

# Prefixes under which a trunk sits in the state dicts frafer (and common tools) write, most specific first.
_TRUNK_PREFIXES = ("online.trunk.", "module.trunk.", "trunk.", "module.encoder.", "module.", "encoder.", "backbone.")


@dataclass(frozen=True)
class TrunkLayout:
    """Everything needed to rebuild a trunk: recorded in bundles so they load without any training config."""

    arch: str  # resnet18 / resnet34 / resnet50 / resnet50_slim, or resnet18 / resnet50 with custom blocks
    blocks: tuple[int, int, int, int]
    width: int
    remove_maxpool: bool

    def build(self) -> ResNetTrunk:
        return build_trunk(self.arch, self.blocks, self.width, self.remove_maxpool)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "blocks": list(self.blocks), "width": self.width,
                "remove_maxpool": self.remove_maxpool}

    @classmethod
    def from_dict(cls, d: dict) -> TrunkLayout:
        return cls(d["arch"], tuple(d["blocks"]), int(d["width"]), bool(d["remove_maxpool"]))


def infer_layout(state: dict[str, torch.Tensor], remove_maxpool: bool) -> TrunkLayout:
    """Block type, blocks per stage and width from the parameter names and shapes of a ResNet trunk state dict."""
    if "conv1.weight" not in state:
        raise FraferError("the weights hold no ResNet trunk (no 'conv1.weight' key after removing known prefixes)")
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        if not ids:
            raise FraferError(f"the weights hold no 'layer{stage}' blocks: not a four-stage ResNet trunk")
        blocks.append(max(ids) + 1)
    bottleneck = "layer1.0.conv3.weight" in state
    known = {(3, 4, 6, 3): "resnet50", (3, 4, 4, 2): "resnet50_slim"} if bottleneck else {
        (2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}
    arch = known.get(tuple(blocks), "resnet50" if bottleneck else "resnet18")
    return TrunkLayout(arch, tuple(blocks), int(state["conv1.weight"].shape[0]), remove_maxpool)


def _strip_to_trunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only trunk parameters, named as in torchvision (conv1, bn1, layer1…4); drop fc and any heads."""
    for prefix in _TRUNK_PREFIXES:
        inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if "conv1.weight" in inner:
            state = inner
            break
    keep = re.compile(r"^(conv1|bn1|layer[1-4])\.")
    return {k: v for k, v in state.items() if keep.match(k)}


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    obj = safe_torch_load(path, "weights file")
    for key in ("state_dict", "model", "online"):  # common wrappers around the state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FraferError(f"{path} does not hold a state dict of tensors")
    return obj


def records_beside(weights_path: str | Path) -> Iterator[tuple[str, dict]]:
    """("bundle", bundle.json) or ("config", a run's config.yaml) for each folder above the weights, nearest first.

    Files that do not parse to a mapping (another tool's YAML beside a downloaded .pth) are passed over.
    """
    for folder in Path(weights_path).parents:
        for kind, name, parse in (("bundle", "bundle.json", json.loads), ("config", "config.yaml", yaml.safe_load)):
            if (folder / name).is_file():
                try:
                    tree = parse((folder / name).read_text())
                except (json.JSONDecodeError, yaml.YAMLError):
                    continue
                if isinstance(tree, dict):
                    yield kind, tree


def _recorded_maxpool(weights_path: Path) -> bool | None:
    """The remove_maxpool of the run or bundle the weights came from, when it is written down."""
    for kind, tree in records_beside(weights_path):
        section = tree.get("trunk" if kind == "bundle" else "model")
        value = section.get("remove_maxpool") if isinstance(section, dict) else None
        if isinstance(value, bool):
            return value
    if weights_path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights_path), "pt") as f:
            recorded = (f.metadata() or {}).get("model")
        if recorded:
            return bool(json.loads(recorded).get("remove_maxpool", False))
    return None


def pretrain_method(weights_path: str | Path) -> str:
    """The pre-training method the weights come from, as their run or bundle records it ('unknown' otherwise).

    Runs from before the `method:` key name theirs by their loss weights: λ_c = 1 with λ_r = 0 was BYOL.
    """
    for kind, tree in records_beside(weights_path):
        if kind == "bundle":
            return str(tree.get("info", {}).get("pretrain_method", "unknown"))
        if "method" in tree:
            return str(tree["method"])
        loss = tree.get("loss")
        if isinstance(loss, dict) and "lambda_c" in loss:
            return "byol" if loss.get("lambda_c") == 1 and loss.get("lambda_r") == 0 else "fra"
    return "unknown"


def resolve_init(init: str) -> Path:
    """The weights file an init string names (run folder → latest checkpoint; bundle folder → its weights)."""
    path = Path(init)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / WEIGHTS).is_file():
            return path / WEIGHTS
        if (path / "model" / WEIGHTS).is_file():  # a fine-tuning run folder: its selected model bundle
            return path / "model" / WEIGHTS
        ckpt = latest_checkpoint(path)
        if ckpt is not None:
            return ckpt / WEIGHTS
        raise FraferError(f"model.init {path}: a folder without checkpoints, weights.safetensors or a model bundle")
    raise FraferError(f"model.init {path}: no such file or folder (or use 'none' for random init)")


@torch.no_grad()
def rescale_to_init_norms(trunk: ResNetTrunk) -> list[float]:
    """Scale every conv weight to the Frobenius norm torchvision's initialisation gives it in expectation.

    Kaiming-normal (fan_out) draws each of out·in·k² entries with variance 2 / (out·k²), so E‖W‖² = 2·in. Returns the
    factors applied (above 1: the weights had shrunk; below: grown).
    """
    factors = []
    for m in trunk.modules():
        if isinstance(m, torch.nn.Conv2d):
            factor = math.sqrt(2.0 * m.in_channels / m.groups) / float(m.weight.norm().clamp_min(1e-12))
            m.weight.mul_(factor)
            factors.append(factor)
    return factors


def is_random_init(init: str) -> bool:
    """'none' (or 'random', or empty): a randomly initialised trunk, the baseline of every table."""
    return init.strip().lower() in ("", "none", "random")


def load_trunk(init: str, arch: str, blocks: list[int], width: int, remove_maxpool: bool) -> tuple[ResNetTrunk, dict]:
    """The trunk `init` describes, with its weights loaded, and a record {source, layout} for the run folder."""
    if is_random_init(init):
        trunk = build_trunk(arch, blocks, width, remove_maxpool)
        layout = infer_layout(trunk.state_dict(), remove_maxpool)
        return trunk, {"source": "none (random init)", "layout": layout.to_dict(), "method": "none"}
    path = resolve_init(init)
    state = _load_pth(path) if path.suffix in (".pth", ".pt", ".bin") else load_weights(path)
    state = _strip_to_trunk(state)
    recorded = _recorded_maxpool(path)
    layout = infer_layout(state, remove_maxpool if recorded is None else recorded)
    trunk = layout.build()
    try:
        missing, unexpected = trunk.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise FraferError(f"model.init {path}: {str(err).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise FraferError(
            f"model.init {path}: the weights do not fit a {layout.arch} trunk "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return trunk, {"source": str(path), "layout": layout.to_dict(), "method": pretrain_method(path)}
