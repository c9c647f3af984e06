"""The built-in model machinery: the registry, damaged installs, `frafer models`, Grad-CAM panels, small datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import frafer.pretrained as pretrained
from frafer.artifacts.bundle import save_bundle
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.cli import main
from frafer.data.pipelines.sampling import fit_batch
from frafer.errors import FraferError
from frafer.infer.cam import ClassActivationMaps, default_cam_layer
from frafer.infer.draw import face_panel, region_sharpness, regions_formed
from frafer.infer.predictor import FacePrediction, Predictor
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier

CLASSES = ["neutral", "happy", "sad"]


def tiny_classifier(seed: int = 0) -> FERClassifier:
    torch.manual_seed(seed)
    model = FERClassifier(build_trunk("resnet18", width=4, remove_maxpool=True), len(CLASSES), head_init_std=0.5)
    return model.eval()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A built-in model folder holding one tiny model under the default name."""
    model = tiny_classifier()
    source = save_bundle(tmp_path / "src", model, CLASSES, 32, (0.5,) * 3, (0.25,) * 3,
                         TrunkLayout("resnet18", (2, 2, 2, 2), 4, True), {"data": {"format": "ferplus"}},
                         calibration={"temperature": 1.5, "ece_before": 8.0, "ece_after": 2.0, "fitted_on": "val"})
    root = tmp_path / "pretrained"
    card = {"summary": "tiny test model", "data": "none", "licence": "MIT", "benchmark": "nowhere",
            "metrics": {"test": {"top1": 50.0, "macro_f1": 40.0, "mean_class_acc": 45.0, "count": 10,
                                 "recall": {c: 50.0 for c in CLASSES}, "confusion": [[1, 0, 0]] * 3}}}
    pretrained.write_builtin(source, root / pretrained.DEFAULT_MODEL, card)
    monkeypatch.setattr(pretrained, "ROOT", root)
    return root / pretrained.DEFAULT_MODEL


def test_the_default_built_in_model_loads_with_fp16_weights_and_its_temperature(registry):
    predictor = Predictor.from_pretrained(detector="none")
    assert predictor.classes == tuple(CLASSES) and predictor.bundle.temperature == 1.5
    crops = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    probs, _ = predictor.classify_crops(crops)
    logits = predictor.backend(predictor.normalise(crops))
    e = np.exp(logits / 1.5 - (logits / 1.5).max(1, keepdims=True))
    assert np.allclose(probs, e / e.sum(1, keepdims=True), atol=1e-6)  # the temperature is applied


def test_models_lists_and_describes(registry, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert pretrained.DEFAULT_MODEL in out and "(default)" in out and "50.00 %" in out
    assert main(["models", pretrained.DEFAULT_MODEL, "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "top-1 50.00 %" in out and "T = 1.500" in out and "recall: neutral 50.0" in out


def test_an_unknown_name_lists_the_known_ones(registry, capsys):
    assert main(["models", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown built-in model 'nosuch'" in err and pretrained.DEFAULT_MODEL in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "json", "mismatch"])
def test_a_damaged_built_in_model_is_refused_in_one_line(registry, tmp_path, capsys, damage):
    weights, meta_file = registry / "weights.safetensors", registry / "bundle.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete":
        weights.unlink()
    elif damage == "json":
        meta_file.write_text(meta_file.read_text()[:50])
    else:  # bundle.json for another network than the weights hold
        meta = json.loads(meta_file.read_text())
        meta["trunk"]["width"] = 8
        meta_file.write_text(json.dumps(meta))
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reinstall frafer" in err and str(registry.name) in err
    assert not (tmp_path / "o").exists()


def test_predict_without_a_bundle_uses_the_built_in_model(registry, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "face.png")
    assert main(["predict", str(tmp_path / "face.png"), "--no-detect", "--out", str(tmp_path / "o")]) == 0
    line = json.loads((tmp_path / "o" / "predictions.jsonl").read_text())
    assert line["faces"][0]["label"] in CLASSES
    # the same with the bundle named first, and with --model
    source = registry
    assert main(["predict", str(source), str(tmp_path / "face.png"), "--no-detect", "--out", str(tmp_path / "a")]) == 0
    assert main(["predict", "--model", str(source), str(tmp_path / "face.png"), "--no-detect", "--out",
                 str(tmp_path / "b")]) == 0
    for out in ("a", "b"):
        other = json.loads((tmp_path / out / "predictions.jsonl").read_text())
        assert other["faces"][0]["probabilities"] == line["faces"][0]["probabilities"]


def test_a_bundle_alone_is_not_taken_for_an_input(registry, capsys):
    assert main(["predict", str(registry)]) == 2
    assert "give the images" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_is_batch_independent_and_normalised():
    model = tiny_classifier()
    assert default_cam_layer(model, 48) == "layer3"  # 6×6 at 48 px; layer4 would be 3×3
    assert default_cam_layer(model, 96) == "layer4"
    cam = ClassActivationMaps(model, 48)
    x = torch.randn(5, 3, 48, 48)
    targets = np.array([0, 1, 2, 1, 0])
    together = cam(x, targets)
    alone = np.concatenate([cam(x[i:i + 1], targets[i:i + 1]) for i in range(5)])
    assert together.shape == (5, 6, 6)
    assert np.allclose(together, alone, atol=1e-5)
    assert together.min() >= 0 and np.allclose(together.max(axis=(1, 2))[together.max(axis=(1, 2)) > 0], 1)
    with pytest.raises(FraferError, match="layer"):
        ClassActivationMaps(model, 48, "layer9")


def test_grad_cam_lies_on_the_evidence_a_trained_classifier_uses():
    """Trained to tell a bright square in the top-left corner (class 0) from one in the bottom-right (class 1) and
    from none (class 2, so that neither square class can be told by the other's absence), the classifier's Grad-CAM
    of each square image peaks in the quadrant of its square."""
    g = torch.Generator().manual_seed(0)

    def images(n):
        x = torch.randn(n, 3, 48, 48, generator=g) * 0.3
        y = torch.arange(n) % 3
        for i in range(n):
            if y[i] == 2:
                continue
            dy, dx = torch.randint(0, 10, (2,), generator=g).tolist()
            top = 2 + dy if y[i] == 0 else 26 + dy
            left = 2 + dx if y[i] == 0 else 26 + dx
            x[i, :, top:top + 12, left:left + 12] += 2.0
        return x, y

    model = tiny_classifier().train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(80):
        x, y = images(30)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = images(24)
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    maps = ClassActivationMaps(model, 48)(x, y.numpy())  # (16, 6, 6)
    top_left = maps[:, :3, :3].mean(axis=(1, 2))
    bottom_right = maps[:, 3:, 3:].mean(axis=(1, 2))
    y = y.numpy()
    assert (top_left[y == 0] > bottom_right[y == 0]).mean() >= 0.75
    assert (bottom_right[y == 1] > top_left[y == 1]).mean() >= 0.75


def test_face_panels_say_whether_regions_formed():
    flat = np.full((4, 3, 3), 0.25, np.float32)
    formed = np.zeros((4, 3, 3), np.float32)
    formed[0] = 1.0
    assert region_sharpness(flat) == pytest.approx(0.25) and not regions_formed(flat)
    assert region_sharpness(formed) == 1.0 and regions_formed(formed)
    crop = np.zeros((48, 48, 3), np.uint8)
    face = FacePrediction(0, (0, 0, 48, 48), None, 1.0, "happy", 0.9, np.ones(3) / 3, crop, flat,
                          np.ones((6, 6), np.float32))
    panel = face_panel(face, "layer3", "pretrained")
    assert panel.width == 6 * 48 * 4 and panel.height > 2 * 48 * 4  # CAM row above the region row, at 4×
    cam_only = face_panel(FacePrediction(0, (0, 0, 48, 48), None, 1.0, "happy", 0.9, np.ones(3) / 3, crop, None,
                                         np.ones((6, 6), np.float32)), "layer3")
    assert cam_only.width >= 2 * 48 * 4 and cam_only.height < panel.height


# ----------------------------------------------------------------------------------------------- small datasets


def test_a_dataset_smaller_than_a_batch_trains_in_one_smaller_batch():
    assert fit_batch(256, 1000) == 256
    assert fit_batch(256, 120) == 120
    assert fit_batch(256, 121, world_size=2) == 120
    with pytest.raises(FraferError, match="too few"):
        fit_batch(256, 3, world_size=2)


# ----------------------------------------------------------------------------------------------- int8 ONNX


def test_int8_export_is_checked_by_top1_agreement_and_shipped_with_a_checksum(registry, tmp_path):
    from frafer.artifacts.bundle import load_bundle
    from frafer.artifacts.onnx_export import export_onnx, quantize_int8

    bundle = load_bundle(registry)
    faces = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    export_onnx(bundle, tmp_path / "m.onnx", check_inputs=faces[:8])
    with pytest.raises(FraferError, match="int8 quantisation changes the top-1"):
        quantize_int8(tmp_path / "m.onnx", tmp_path / "refused.onnx", faces, min_agreement=1.01)
    assert not (tmp_path / "refused.onnx").exists()
    q = quantize_int8(tmp_path / "m.onnx", registry / pretrained.INT8_FILE, faces, min_agreement=0.0)
    assert 0 <= q["agreement"] <= 1
    card = json.loads((registry / "bundle.json").read_text())["card"]
    pretrained.write_builtin(registry, registry, card)  # records the int8 file's checksum
    predictor = Predictor.from_pretrained(detector="none", backend="onnx")
    assert predictor.backend.path == registry / pretrained.INT8_FILE
    probs, _ = predictor.classify_crops(np.zeros((2, 32, 32, 3), np.uint8))
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    (registry / pretrained.INT8_FILE).write_bytes(b"damaged")
    with pytest.raises(FraferError, match="missing or damaged"):
        Predictor.from_pretrained(detector="none", backend="onnx")


# ----------------------------------------------------------------------------------------------- the shipped model


def test_the_shipped_model_is_whole_and_labels_the_astronaut_happy(tmp_path, capsys):
    """The real built-in model, as a user meets it: `frafer predict photo.png` with no bundle."""
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency")
    assert pretrained.DEFAULT_MODEL in pretrained.builtin_names()
    folder = pretrained.builtin_path()  # checks every file against the checksums in its card
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 12_000_000
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astronaut.png")
    assert main(["predict", str(tmp_path / "astronaut.png"), "--out", str(tmp_path / "o"), "--heatmaps"]) == 0
    line = json.loads((tmp_path / "o" / "predictions.jsonl").read_text())
    assert len(line["faces"]) == 1 and line["faces"][0]["label"] == "happy"
    assert (tmp_path / "o" / "heatmaps" / "astronaut_face0.png").is_file()
    assert main(["models"]) == 0 and pretrained.DEFAULT_MODEL in capsys.readouterr().out
