"""Model bundles and run reports: the bundle rebuilds the selected model, evaluation reproduces the test report,
damaged bundles are refused, and a bundle names its network, head and pre-training method."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frafer.artifacts.bundle import load_bundle
from frafer.artifacts.checkpoint import load_weights
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.data.fer.dataset import FERImages, collate_fer
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.fer.splits import prepare_splits
from frafer.errors import FraferError
from frafer.eval.evaluate import evaluate_bundle
from frafer.models.classifier import FERClassifier
from frafer.train.finetune import finetune
from frafer.train.linear_probe import linear_probe
from tests.conftest import equal_weights, ft_with_init, metrics_lines
from tests.conftest import finetune_cfg as cfg_for

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- bundle and reports


def test_bundle_rebuilds_the_selected_model(data, ft_run):
    run_dir, result = ft_run
    best_epoch = int(result.results["best_val"]["epoch"])
    ckpt = run_dir / "checkpoints" / f"step_{best_epoch * 4:08d}"
    layout = TrunkLayout.from_dict(json.loads((run_dir / "init.json").read_text())["layout"])
    trained = FERClassifier(layout.build(), 7)
    trained.load_state_dict(load_weights(ckpt / "weights.safetensors"))
    trained.eval()
    bundle = load_bundle(run_dir)
    assert bundle.classes == EXPRESSIONS[:7] and bundle.input_size == 32 and bundle.layout == layout
    assert bundle.info["epoch"] == best_epoch and bundle.info["init"] == "none (random init)"
    splits = prepare_splits(cfg_for(data).data, 0)
    images, _, _, _ = collate_fer([FERImages(splits.test, bundle.transform())[i] for i in range(6)])
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(images), trained(images), rtol=0, atol=0)
    last = load_bundle(run_dir / "model_last")
    assert last.info["epoch"] == 2
    assert equal_weights(last.model.state_dict(), load_weights(run_dir / "checkpoints" / "step_00000008"
                                                                / "weights.safetensors"))


def test_evaluate_bundle_reproduces_the_test_report(data, ft_run):
    run_dir, _ = ft_run
    results = json.loads((run_dir / "results.json").read_text())
    report, files = evaluate_bundle(run_dir, None, None, "test")
    expected = results["best_val"]["test"]
    assert report["confusion"] == expected["confusion"] and report["top1"] == pytest.approx(expected["top1"])
    assert report["count"] == 12 and files["md"].is_file() and files["png"].is_file()
    # the same numbers when the dataset is named explicitly (here: only its test folder)
    again, _ = evaluate_bundle(run_dir, "synthetic", str(data["test"]), "test", out_dir=run_dir / "again")
    assert again["confusion"] == expected["confusion"]


def test_evaluate_rebuilds_a_validation_split_carved_from_train(data, tmp_path, quick_figures):
    # like RAF-DB: no validation folder, so training held out 25 % of the training identities
    cfg = cfg_for(data, "train.epochs=1", "data.val_fraction=0.25", "train.seed=3", extra=("test",))
    result = finetune(cfg, tmp_path / "run")
    expected = result.results["best_val"]["val"]
    assert 0 < expected["count"] < 32
    report, _ = evaluate_bundle(tmp_path / "run", None, None, "val")
    assert report["count"] == expected["count"] and report["confusion"] == expected["confusion"]


def test_run_folder_reports(data, ft_run):
    run_dir, _ = ft_run
    results = json.loads((run_dir / "results.json").read_text())
    splits = prepare_splits(cfg_for(data).data, 0)
    for which in ("last", "best_val"):
        for split, samples in (("val", splits.val), ("test", splits.test)):
            assert np.asarray(results[which][split]["confusion"]).sum() == len(samples)
            stem = run_dir / "reports" / f"{which}_{split}"
            png = Path(f"{stem}_confusion.png")
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[0] > 100
            rows = Path(f"{stem}_confusion.csv").read_text().splitlines()
            assert rows[0].split(",")[1:] == list(EXPRESSIONS[:7]) and len(rows) == 8
    md = (run_dir / "results.md").read_text()
    assert md.startswith("# finetune on synthetic") and md.count("| test |") == 2
    history = [x for x in metrics_lines(run_dir) if x["kind"] == "val"]
    assert [x["epoch"] for x in history] == [1, 2]


def test_damaged_bundles_are_refused(ft_run, tmp_path):
    run_dir, _ = ft_run
    wrong = shutil.copytree(run_dir / "model", tmp_path / "wrong")
    meta = json.loads((wrong / "bundle.json").read_text())
    (wrong / "bundle.json").write_text(json.dumps(meta | {"format": "something-else"}))
    with pytest.raises(FraferError, match="format is 'something-else', expected 'frafer-fer-bundle'"):
        load_bundle(wrong)
    cut = shutil.copytree(run_dir / "model", tmp_path / "cut")
    weights = (cut / "weights.safetensors").read_bytes()
    (cut / "weights.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(FraferError, match="not a readable safetensors file"):
        load_bundle(cut)
    with pytest.raises(FraferError, match="is not a model bundle"):
        load_bundle(tmp_path)
    unknown = shutil.copytree(run_dir / "model", tmp_path / "unknown")
    (unknown / "bundle.json").write_text(json.dumps(meta | {"network": "dmue_branches"}))
    with pytest.raises(FraferError, match="holds a 'dmue_branches' network.*known: linear.*nothing was loaded"):
        load_bundle(unknown)
    older = shutil.copytree(run_dir / "model", tmp_path / "older")  # written before bundles named their network
    (older / "bundle.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "network"}))
    assert load_bundle(older).classes == load_bundle(run_dir).classes


def test_bundles_name_their_network_head_and_pretraining_method(data, ft_run, fra_run, tmp_path, quick_figures):
    run_dir, _ = ft_run
    meta = json.loads((run_dir / "model" / "bundle.json").read_text())
    assert meta["network"] == "linear" and meta["info"]["head"] == "finetune"
    assert meta["info"]["pretrain_method"] == "none"  # random init
    result = linear_probe(ft_with_init(data, fra_run[0], "probe.epochs=1"), tmp_path / "lp")
    info = json.loads((result.run_dir / "model" / "bundle.json").read_text())["info"]
    assert info["head"] == "linear" and info["pretrain_method"] == "fra"
