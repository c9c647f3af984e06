"""A trained expression model as one self-describing folder: what `evaluate`, `predict` and `export` load.

    <bundle>/weights.safetensors   the network's state dict (for the `linear` network: trunk.* and head.*)
    <bundle>/bundle.json           network type, classes, input size, normalisation, trunk layout, how the training
                                   faces were framed, provenance
    <bundle>/regions.safetensors   optional: the FRA region model of the pre-training run (see artifacts/regions.py)

Loading needs nothing else: no training config, no code from the file (safetensors holds tensors only).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from frafer.artifacts.checkpoint import WEIGHTS, load_weights, save_weights
from frafer.artifacts.regions import REGIONS_FILE, load_regions, save_regions
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.data.fer.framing import Framing, framing_for_format
from frafer.data.pipelines.transforms import build_eval_transform
from frafer.errors import FraferError
from frafer.files import atomic_write_text
from frafer.methods.heads import BUNDLE_NETWORKS
from frafer.models.backbones import ARCHS
from frafer.models.classifier import FERClassifier
from frafer.models.region_model import RegionModel

BUNDLE_FORMAT = "frafer-fer-bundle"
BUNDLE_VERSION = 1
BUNDLE_FILE = "bundle.json"


@dataclass
class Bundle:
    model: FERClassifier  # in eval mode
    classes: tuple[str, ...]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: TrunkLayout
    info: dict = field(default_factory=dict)  # provenance: init, data, epoch, metrics, config
    framing: Framing = field(default_factory=lambda: framing_for_format("folders"))  # how training faces were cut
    regions: RegionModel | None = None  # eval mode; None when the trunk was not FRA-pre-trained
    regions_spec: dict | None = None
    temperature: float = 1.0  # logits are divided by it before the softmax (eval/calibration.py); 1 = uncalibrated
    calibration: dict | None = None  # how the temperature was fitted: split, ECE and NLL before / after
    source: str = ""  # the folder it was loaded from

    def transform(self):
        """The eval transform the model expects (PIL RGB image → normalised tensor)."""
        return build_eval_transform(self.input_size, self.mean, self.std)


def save_bundle(
    folder: str | Path, model: FERClassifier, classes, input_size: int, mean, std, layout: TrunkLayout,
    info: dict | None = None, framing: Framing | None = None, regions: tuple[RegionModel, dict] | None = None,
    calibration: dict | None = None, half: bool = False, network: str = "linear",
) -> Path:
    """Write the bundle folder (weights first, then bundle.json, each atomically); returns the folder.

    `framing` defaults to the preset of the training data's format; `regions` is (region model, its spec);
    `calibration` holds at least the fitted `temperature`; `half` stores floating-point weights as fp16 (half the
    file; they load back into fp32); `network` names the deployed network (a key of BUNDLE_NETWORKS) that
    `load_bundle` rebuilds.
    """
    if network not in BUNDLE_NETWORKS:
        raise FraferError(f"a bundle cannot hold a '{network}' network (known: {', '.join(BUNDLE_NETWORKS)})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = model.deployable_state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_weights(folder / WEIGHTS, state)
    if framing is None:
        framing = _recorded_format_framing(info or {})
    if regions is not None:
        save_regions(folder, regions[0])
    elif (folder / REGIONS_FILE).exists():
        (folder / REGIONS_FILE).unlink()  # a re-save without regions must not leave stale ones behind
    meta = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "network": network, "classes": list(classes),
        "input_size": input_size,
        "mean": list(mean), "std": list(std), "trunk": layout.to_dict(), "dropout": model.dropout.p,
        "framing": framing.to_dict(), "regions": None if regions is None else regions[1],
        "calibration": calibration, "info": info or {},
    }
    atomic_write_text(folder / BUNDLE_FILE, json.dumps(meta, indent=2))
    return folder


def write_calibration(path: str | Path, calibration: dict) -> Path:
    """Record a fitted temperature (and how it was fitted) in an existing bundle's bundle.json, atomically."""
    folder = find_bundle(path)
    _check_temperature(folder, calibration.get("temperature"))
    meta = json.loads((folder / BUNDLE_FILE).read_text())
    meta["calibration"] = calibration
    atomic_write_text(folder / BUNDLE_FILE, json.dumps(meta, indent=2))
    return folder


def _check_temperature(folder: Path, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1e-3 <= value <= 1e3:
        raise FraferError(f"{folder / BUNDLE_FILE}: calibration.temperature must be a number in [0.001, 1000], got "
                          f"{value!r}")
    return float(value)


def _recorded_format_framing(info: dict) -> Framing:
    """The framing preset of the data format a bundle's provenance records (class folders when none)."""
    return framing_for_format(str(info.get("data", {}).get("format", "folders")))


def find_bundle(path: str | Path) -> Path:
    """A bundle folder, or a fine-tuning run folder (→ its selected `model/` bundle)."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / BUNDLE_FILE).is_file():
            return candidate
    raise FraferError(f"{path} is not a model bundle (no {BUNDLE_FILE}) nor a fine-tuning run with a model/ bundle")


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild the classifier from a bundle (or a run folder holding one), weights loaded, in eval mode."""
    folder = find_bundle(path)
    meta = read_record(folder)
    network = meta.get("network", "linear")  # bundles before the field held the linear network only
    layout = TrunkLayout.from_dict(meta["trunk"])
    classes = tuple(meta["classes"])
    model = BUNDLE_NETWORKS[network](layout.build(), len(classes), float(meta.get("dropout", 0.0)))
    size, mean, std = int(meta["input_size"]), tuple(meta["mean"]), tuple(meta["std"])
    try:  # bundles from before the field: the preset of the data format they record
        framing = (Framing.from_dict(meta["framing"]) if meta.get("framing") else
                   _recorded_format_framing(meta.get("info", {})))
    except (KeyError, TypeError, ValueError) as err:
        raise FraferError(f"{folder / BUNDLE_FILE}: field 'framing' is malformed ({type(err).__name__}: {err})") \
            from None
    try:
        model.load_state_dict(load_weights(folder / WEIGHTS))
    except RuntimeError as err:
        raise FraferError(f"{folder}: weights do not match bundle.json ({str(err).splitlines()[0]})") from None
    calibration = meta.get("calibration")
    temperature = _check_temperature(folder, calibration.get("temperature")) if calibration else 1.0
    spec = meta.get("regions")
    regions = load_regions(folder, spec).to(device) if spec else None
    return Bundle(model.to(device).eval(), classes, size, mean, std, layout, meta.get("info", {}), framing, regions,
                  spec, temperature, calibration, str(folder))


def fingerprint(folder: str | Path) -> str:
    """SHA-256 of a bundle's weights and of everything in bundle.json that changes a prediction (not the
    provenance): what tells two models apart when a predict folder is resumed. Read on demand, not on every load."""
    folder = Path(folder)
    meta = read_record(folder)
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes())
    shaping = {k: meta.get(k) for k in ("network", "classes", "input_size", "mean", "std", "trunk", "framing",
                                        "calibration")}
    digest.update(json.dumps(shaping, sort_keys=True).encode())
    return digest.hexdigest()


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_record(folder: Path) -> dict:
    """bundle.json, checked key by key before anything is built from it: each problem is one named error."""
    path = folder / BUNDLE_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FraferError(f"{path} is not valid JSON ({err})") from None
    except OSError as err:
        raise FraferError(f"{path} cannot be read ({err.strerror or err})") from None

    def bad(key: str, what: str, value) -> FraferError:
        shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
        return FraferError(f"{path}: field '{key}' must be {what}, got {shown}")

    if not isinstance(meta, dict):
        raise bad("<top level>", "a JSON object", meta)
    if meta.get("format") != BUNDLE_FORMAT:
        raise FraferError(f"{path}: format is {meta.get('format')!r}, expected {BUNDLE_FORMAT!r}")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise bad("version", "a whole number", version)
    if version > BUNDLE_VERSION:
        raise FraferError(f"{folder}: bundle version {version} is newer than this frafer reads ({BUNDLE_VERSION}); "
                          f"upgrade frafer")
    network = meta.get("network", "linear")
    if network not in BUNDLE_NETWORKS:
        raise FraferError(f"{path}: the bundle holds a '{network}' network, which this frafer does not know "
                          f"(known: {', '.join(BUNDLE_NETWORKS)}); nothing was loaded from it")
    for key in ("trunk", "classes", "input_size", "mean", "std"):
        if key not in meta:
            raise FraferError(f"{path}: field '{key}' is missing")
    classes = meta["classes"]
    if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise bad("classes", "a list of distinct class names", classes)
    size = meta["input_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        raise bad("input_size", "a whole number of pixels in [16, 4096]", size)
    for key in ("mean", "std"):
        v = meta[key]
        if not isinstance(v, list) or len(v) != 3 or not all(_is_number(x) for x in v):
            raise bad(key, "a list of 3 numbers (one per colour channel)", v)
    if min(meta["std"]) <= 0:
        raise bad("std", "3 positive numbers", meta["std"])
    dropout = meta.get("dropout", 0.0)
    if not _is_number(dropout) or not 0 <= dropout < 1:
        raise bad("dropout", "a number in [0, 1)", dropout)
    trunk = meta["trunk"]
    if not isinstance(trunk, dict):
        raise bad("trunk", "an object (arch, blocks, width, remove_maxpool)", trunk)
    if trunk.get("arch") not in ARCHS:
        raise bad("trunk.arch", f"one of {', '.join(ARCHS)}", trunk.get("arch"))
    blocks = trunk.get("blocks")
    if (not isinstance(blocks, list) or len(blocks) != 4
            or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 64 for b in blocks)):
        raise bad("trunk.blocks", "4 whole numbers in [1, 64]", blocks)
    width = trunk.get("width")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 1024:
        raise bad("trunk.width", "a whole number in [1, 1024]", width)
    if not isinstance(trunk.get("remove_maxpool"), bool):
        raise bad("trunk.remove_maxpool", "true or false", trunk.get("remove_maxpool"))
    for key in ("framing", "regions", "calibration", "info"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise bad(key, "an object", meta[key])
    return meta
