"""Temperature scaling, ECE and reliability bins against hand-computed values; bundles carrying a temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frafer.artifacts.bundle import load_bundle, save_bundle, write_calibration
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.errors import FraferError
from frafer.eval.calibration import (
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    plot_reliability,
    reliability_bins,
    softmax,
)
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.55 (wrong): bins (0.8667, 0.9333] and (0.5333, 0.6]
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 1])
    # bin of 0.9: accuracy 0.5, confidence 0.9 → 0.4 × 2; bin of 0.55 and 0.6: accuracy 0.5, confidence 0.575
    expected = 100 * (2 * 0.4 + 2 * abs(0.5 - 0.575)) / 4
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    table = reliability_bins(probs, labels)
    assert sum(b["count"] for b in table) == 4 and len(table) == 15


def test_a_known_temperature_is_recovered():
    # labels drawn from softmax(z / 2.5): the NLL-optimal temperature of logits z is 2.5
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 5, generator=g) * 4
    labels = torch.multinomial(torch.softmax(z / 2.5, dim=1), 1, generator=g)[:, 0]
    assert fit_temperature(z, labels) == pytest.approx(2.5, rel=0.05)
    summary = calibration_summary(z.numpy(), labels.numpy(), 2.5)
    assert summary["ece_after"] < summary["ece_before"] and summary["nll_after"] < summary["nll_before"]


def test_temperature_keeps_the_argmax():
    z = np.random.default_rng(0).normal(size=(50, 7))
    assert (softmax(z, 3.0).argmax(1) == z.argmax(1)).all()
    assert np.allclose(softmax(z, 3.0).sum(1), 1)


def test_bad_fit_inputs_are_refused():
    with pytest.raises(FraferError, match="needs"):
        fit_temperature(torch.zeros(3, 2), [0, 1])


def test_reliability_diagram_is_drawn(tmp_path):
    z = np.random.default_rng(1).normal(size=(200, 3)) * 3
    labels = z.argmax(1)
    path = plot_reliability(z, labels, 1.5, tmp_path / "r.png", "title")
    assert path.stat().st_size > 1000


def _bundle(tmp_path):
    model = FERClassifier(build_trunk("resnet18", width=4, remove_maxpool=True), 3).eval()
    layout = TrunkLayout("resnet18", (2, 2, 2, 2), 4, True)
    return model, save_bundle(tmp_path / "b", model, ["neutral", "happy", "sad"], 32, (0.5,) * 3, (0.25,) * 3,
                              layout)


def test_a_bundle_stores_its_temperature_and_refuses_a_bad_one(tmp_path):
    _, folder = _bundle(tmp_path)
    assert load_bundle(folder).temperature == 1.0
    write_calibration(folder, {"temperature": 1.7, "ece_before": 9.0, "ece_after": 2.0})
    assert load_bundle(folder).temperature == pytest.approx(1.7)
    meta = json.loads((folder / "bundle.json").read_text())
    for bad in (-1, 0, "2", None, 1e9):
        meta["calibration"] = {"temperature": bad}
        (folder / "bundle.json").write_text(json.dumps(meta))
        with pytest.raises(FraferError, match="calibration.temperature"):
            load_bundle(folder)
    meta["calibration"] = [1.0]
    (folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(FraferError, match="field 'calibration' must be an object"):
        load_bundle(folder)


def test_fp16_weights_load_back_into_the_fp32_network(tmp_path):
    model = FERClassifier(build_trunk("resnet18", width=4, remove_maxpool=True), 3).eval()
    layout = TrunkLayout("resnet18", (2, 2, 2, 2), 4, True)
    save_bundle(tmp_path / "h", model, ["a", "b", "c"], 32, (0.5,) * 3, (0.25,) * 3, layout, half=True)
    loaded = load_bundle(tmp_path / "h").model
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)
    full = (tmp_path / "h" / "weights.safetensors").stat().st_size
    save_bundle(tmp_path / "f", model, ["a", "b", "c"], 32, (0.5,) * 3, (0.25,) * 3, layout)
    assert full < 0.6 * (tmp_path / "f" / "weights.safetensors").stat().st_size
