"""The built-in expression models: bundles shipped inside the package, found through package data, never downloaded.

Each model is a folder `frafer/pretrained/<name>/` holding a normal bundle (weights.safetensors + bundle.json) whose
bundle.json also has a `card`: what it was trained on and under which terms, the recipe and commit, and its
measured figures (docs/model_card.md). `frafer models` lists them; `frafer predict` and `Predictor.from_pretrained()`
use DEFAULT_MODEL when no bundle is given. The weights' SHA-256 is recorded in the card and checked on load, so a
damaged install is refused with one line instead of predicting garbage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from frafer.errors import FraferError

DEFAULT_MODEL = "ferplus-r18w24-v2"
INT8_FILE = "model.int8.onnx"  # optional: the classifier quantised to int8, what `--backend onnx` runs
ROOT = Path(__file__).parent
REINSTALL = "reinstall frafer (pip install --force-reinstall --no-deps frafer, or pip install -e . in a checkout)"


def builtin_names() -> list[str]:
    """Names of the built-in models present in this install, sorted."""
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "bundle.json").exists())


def builtin_path(name: str = "", verify: bool = True) -> Path:
    """The folder of built-in model `name` ('' = DEFAULT_MODEL), its files checked against its card."""
    name = name or DEFAULT_MODEL
    folder = ROOT / name
    if not folder.is_dir():
        known = ", ".join(builtin_names()) or "none: this install holds no built-in model"
        if name == DEFAULT_MODEL:
            raise FraferError(f"the built-in model {name} is missing from {ROOT}; {REINSTALL}")
        raise FraferError(f"unknown built-in model '{name}' (known: {known})")
    if verify:
        check_builtin(folder)
    return folder


def read_card(folder: Path) -> dict:
    """The bundle.json of a built-in model, read as JSON; a missing or unreadable file is a damaged install."""
    path = folder / "bundle.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FraferError(f"built-in model file {path} is unreadable ({type(err).__name__}); {REINSTALL}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("card"), dict):
        raise FraferError(f"built-in model file {path} has no model card; {REINSTALL}")
    return meta


def check_builtin(folder: Path) -> dict:
    """Refuse a damaged built-in model: a missing weights file or one whose SHA-256 differs from its card's."""
    meta = read_card(folder)
    weights = folder / "weights.safetensors"
    if not weights.is_file():
        raise FraferError(f"built-in model file {weights} is missing; {REINSTALL}")
    expected = meta["card"].get("weights_sha256")
    if expected != sha256_of(weights):
        raise FraferError(f"built-in model file {weights} is damaged (its SHA-256 differs from the one its "
                          f"bundle.json records); {REINSTALL}")
    int8 = folder / INT8_FILE
    if meta["card"].get("int8_sha256") and (not int8.is_file() or sha256_of(int8) != meta["card"]["int8_sha256"]):
        raise FraferError(f"built-in model file {int8} is missing or damaged; {REINSTALL}")
    return meta


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_builtin(name: str = "", device="cpu"):
    """The built-in model as a loaded Bundle (artifacts/bundle.py), checked first; errors name the file."""
    from frafer.artifacts.bundle import load_bundle

    folder = builtin_path(name)
    try:
        return load_bundle(folder, device)
    except FraferError as err:
        raise FraferError(f"built-in model {folder.name} is damaged: {err}; {REINSTALL}") from None


def write_builtin(bundle_path: str | Path, folder: Path, card: dict, half: bool = True) -> Path:
    """Write a bundle as a built-in model at `folder`: fp16 weights (by default), its calibration and framing kept,
    and `card` (plus the weights' SHA-256) in its bundle.json."""
    from frafer.artifacts.bundle import BUNDLE_FILE, load_bundle, save_bundle
    from frafer.files import atomic_write_text

    bundle = load_bundle(bundle_path)
    regions = (bundle.regions, bundle.regions_spec) if bundle.regions is not None else None
    save_bundle(folder, bundle.model, bundle.classes, bundle.input_size, bundle.mean, bundle.std, bundle.layout,
                bundle.info, bundle.framing, regions, bundle.calibration, half=half)
    meta = json.loads((folder / BUNDLE_FILE).read_text())
    meta["card"] = card | {"weights_sha256": sha256_of(folder / "weights.safetensors")}
    if (folder / INT8_FILE).is_file():
        meta["card"]["int8_sha256"] = sha256_of(folder / INT8_FILE)
    atomic_write_text(folder / BUNDLE_FILE, json.dumps(meta, indent=2))
    return folder


def onnx_path(name: str = "") -> Path:
    """The ONNX file `--backend onnx` runs for a built-in model: the int8 export it ships when it has one (checked
    with the model), else an fp32 export kept in a user cache, since the package folder may be read-only."""
    import os

    shipped = builtin_path(name) / INT8_FILE
    if shipped.is_file():
        return shipped

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "frafer" / (name or DEFAULT_MODEL) / "model.onnx"  # exported on first use


def summary_rows() -> list[dict]:
    """One row per built-in model for `frafer models`: name, classes, input, accuracy, size, data and licence."""
    rows = []
    for name in builtin_names():
        folder = ROOT / name
        meta = read_card(folder)
        card = meta["card"]
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        test = card.get("metrics", {}).get("test", {})
        rows.append({
            "name": name + (" (default)" if name == DEFAULT_MODEL else ""),
            "classes": len(meta.get("classes", [])),
            "input": f"{meta.get('input_size')} px {meta.get('framing', {}).get('name', '')}".strip(),
            "top-1": f"{test.get('top1', float('nan')):.2f} % {card.get('benchmark', '')}".strip(),
            "size": f"{size / 1e6:.1f} MB",
            "data": card.get("dataset", card.get("data", "")),
            "licence": card.get("licence", ""),
        })
    return rows


def describe(name: str = "") -> str:
    """The full card of one built-in model as text: `frafer models NAME --verbose`."""
    folder = builtin_path(name, verify=False)
    meta = read_card(folder)
    card = meta["card"]
    lines = [f"{folder.name}: {card.get('summary', '')}",
             f"  classes: {', '.join(meta.get('classes', []))}",
             f"  input: {meta.get('input_size')} px, framing {meta.get('framing', {}).get('name', '?')}",
             f"  data: {card.get('data', '')}", f"  terms: {card.get('terms', '')}",
             f"  licence of the weights: {card.get('licence', '')}",
             f"  recipe: {card.get('recipe', '')} at commit {card.get('commit', '?')}",
             f"  command: {card.get('command', '')}",
             f"  training time: {card.get('training_time', '?')}"]
    for split, m in card.get("metrics", {}).items():
        lines.append(f"  {card.get('benchmark', '')} {split}: top-1 {m['top1']:.2f} %, macro-F1 {m['macro_f1']:.2f} %, "
                     f"mean class accuracy {m['mean_class_acc']:.2f} % on {m['count']} faces")
        if "recall" in m:
            lines.append("    recall: " + ", ".join(f"{c} {r:.1f}" for c, r in m["recall"].items()))
        if "confusion" in m:
            lines.append("    confusion (rows true, columns predicted, order as classes):")
            lines += [f"      {' '.join(f'{v:5d}' for v in row)}" for row in m["confusion"]]
    cal = meta.get("calibration") or {}
    if cal:
        lines.append(f"  calibration: T = {cal['temperature']:.3f} fitted on {cal.get('fitted_on', '?')}; "
                     f"ECE there {cal['ece_before']:.2f} % → {cal['ece_after']:.2f} %")
    for key, text in card.get("calibration_test", {}).items():
        lines.append(f"  calibration on test, {key}: {text}")
    for key, value in card.get("speed", {}).items():
        lines.append(f"  speed, {key}: {value}")
    for line in card.get("limits", []):
        lines.append(f"  known limit: {line}")
    return "\n".join(lines)
