"""Downstream training: fine-tune, linear probe (cached = faithful), resume, crowd modes, balanced sampling, bad
input, subject folds, class sets and the CLI around them. Init sources and bundles are in tests/artifacts/."""

from __future__ import annotations

import json
import math
import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from frafer.artifacts.bundle import load_bundle
from frafer.artifacts.checkpoint import latest_checkpoint, load_state, load_weights
from frafer.cli import main
from frafer.config.loader import build_config
from frafer.config.schema import FinetuneConfig
from frafer.data.fer.dataset import FERSample
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.fer.splits import class_balanced_weights, make_targets, prepare_splits, training_targets
from frafer.data.pipelines.sampling import EpochBatchSampler, sample_seed
from frafer.errors import FraferError
from frafer.eval.evaluate import evaluate_bundle
from frafer.methods import heads as heads_module
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier
from frafer.train import cached_probe as cached_probe_module
from frafer.train import classifier_loop as finetune_module
from frafer.train.finetune import finetune
from frafer.train.linear_probe import linear_probe
from tests.conftest import AUG_OFF, equal_weights, metrics_lines
from tests.conftest import TINY_FINETUNE as TINY
from tests.conftest import finetune_cfg as cfg_for

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- linear probe


def test_cached_linear_probe_equals_faithful_without_augmentation(data, lp_faithful, tmp_path, quick_figures):
    faithful_dir, faithful = lp_faithful
    cached = linear_probe(cfg_for(data, "probe.path=cached", "probe.flip_average=false", "probe.epochs=2"),
                          tmp_path / "cached")
    assert cached.step == faithful.step == 8
    assert (tmp_path / "cached" / "features" / "plain.safetensors").is_file()
    for folder in ("model", "model_last"):
        a = load_weights(faithful_dir / folder / "weights.safetensors")
        b = load_weights(tmp_path / "cached" / folder / "weights.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("trunk."))  # the trunk is never trained
        for k in ("head.weight", "head.bias"):
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
        assert (a["head.weight"] != 0).any() and not torch.allclose(a["head.bias"], torch.zeros(7))  # it did learn
    fa = json.loads((faithful_dir / "results.json").read_text())
    ca = json.loads((tmp_path / "cached" / "results.json").read_text())
    assert fa.keys() == ca.keys()
    for which in fa:
        assert fa[which]["epoch"] == ca[which]["epoch"]
        for split in ("val", "test"):
            assert fa[which][split]["confusion"] == ca[which][split]["confusion"]
            assert fa[which][split]["top1"] == pytest.approx(ca[which][split]["top1"])


def test_cached_probe_reuses_its_feature_cache(data, tmp_path, quick_figures, monkeypatch, capsys):
    cfg = cfg_for(data, "probe.path=cached", "probe.epochs=1")
    linear_probe(cfg, tmp_path / "run")
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    with pytest.raises(FraferError, match="already holds a run .*--overwrite"):  # results are never replaced silently
        linear_probe(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == first

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted again although the cache matches")

    monkeypatch.setattr(cached_probe_module, "extract_features", no_extraction)
    capsys.readouterr()
    linear_probe(cfg, tmp_path / "run", overwrite=True)
    assert f"from the cache in {tmp_path / 'run' / 'features'}" in capsys.readouterr().out  # and it says so
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == first
    linear_probe(cfg, tmp_path / "run", resume=True)  # --resume of a cached probe: the head again, on the cache
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == first


def test_cached_probe_refuses_a_cache_of_another_trunk_or_dataset(data, tmp_path, quick_figures):
    linear_probe(cfg_for(data, "probe.path=cached", "probe.epochs=1"), tmp_path / "run")
    before = (tmp_path / "run" / "results.json").read_text()
    with pytest.raises(FraferError, match="another trunk, pipeline or dataset .*trunk.seed: cached 0, now 1"):
        linear_probe(cfg_for(data, "probe.path=cached", "probe.epochs=1", "train.seed=1"), tmp_path / "run",
                     overwrite=True)
    assert (tmp_path / "run" / "results.json").read_text() == before  # refused before anything was cleared
    assert load_bundle(tmp_path / "run").classes == tuple(EXPRESSIONS[:7])
    with pytest.raises(FraferError, match="data.root: cached .*, now "):
        linear_probe(cfg_for(data, "probe.path=cached", "probe.epochs=1", train_root=data["val"],
                             extra=("train", "test")), tmp_path / "run", overwrite=True)


def test_fresh_runs_refuse_a_used_run_folder(data, ft_run, tmp_path, quick_figures):
    run_dir, _ = ft_run
    before = (run_dir / "results.json").read_text()
    with pytest.raises(FraferError, match="already holds a run"):
        finetune(cfg_for(data, "train.epochs=1"), run_dir)
    assert (run_dir / "results.json").read_text() == before
    shutil.copytree(run_dir, tmp_path / "copy")
    (tmp_path / "copy" / "notes.txt").write_text("mine")
    with pytest.raises(FraferError, match="nowhere does not exist"):  # a failed run leaves the old one as it was
        finetune(cfg_for(data, "train.epochs=1", train_root=tmp_path / "nowhere"), tmp_path / "copy", overwrite=True)
    assert (tmp_path / "copy" / "results.json").read_text() == before
    finetune(cfg_for(data, "train.epochs=1"), tmp_path / "copy", overwrite=True)
    results = json.loads((tmp_path / "copy" / "results.json").read_text())
    assert results["last"]["epoch"] == 1 and (tmp_path / "copy" / "notes.txt").read_text() == "mine"
    assert [p.name for p in (tmp_path / "copy" / "checkpoints").glob("step_*")] == ["step_00000004"]


def test_probe_head_trains_on_one_thread_whatever_the_setting(data, tmp_path, quick_figures, monkeypatch):
    seen = []
    real = cached_probe_module.schedule_lr

    def recording(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(cached_probe_module, "schedule_lr", recording)
    linear_probe(cfg_for(data, "probe.path=cached", "probe.epochs=1", "train.threads=2"), tmp_path / "run")
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2  # restored after the head
    assert json.loads((tmp_path / "run" / "run.json").read_text())["machine"]["threads"] == 2


def test_a_fine_tune_in_steps_validates_its_partial_last_epoch(data, tmp_path, quick_figures):
    # 32 images / batch 8 = 4 steps an epoch: 6 steps end half-way through epoch 2, which is validated and reported
    result = finetune(cfg_for(data, "train.steps=6", "optim.warmup_steps=2"), tmp_path / "run")
    assert result.step == 6 and result.stopped == "completed"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["last"]["epoch"] == 1.5
    meta = json.loads((latest_checkpoint(tmp_path / "run") / "meta.json").read_text())
    assert [h["epoch"] for h in meta["history"]] == [1, 1.5] and meta["total_steps"] == 6
    lrs = [x["lr"] for x in metrics_lines(tmp_path / "run") if x["kind"] == "train"]
    assert len(lrs) == 6 and lrs[1] == pytest.approx(2e-4) and lrs[-1] < lrs[2]  # warm-up, then the cosine


# ----------------------------------------------------------------------------------------------- resume


def test_finetune_resume_is_bit_exact(data, ft_run, tmp_path, quick_figures):
    straight_dir, straight = ft_run
    assert straight.step == 8 and straight.stopped == "completed" and math.isfinite(straight.last_loss)
    first = finetune(cfg_for(data, "train.epochs=2", "train.max_steps=3"), tmp_path / "run")
    assert first.step == 3 and first.stopped == "max_steps"
    resumed = finetune(cfg_for(data, "train.epochs=2"), tmp_path / "run", resume=True)
    assert resumed.step == 8 and resumed.stopped == "completed"
    a = load_weights(latest_checkpoint(straight_dir) / "weights.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors")
    assert equal_weights(a, b), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert resumed.last_loss == straight.last_loss
    assert resumed.results["best_val"]["epoch"] == straight.results["best_val"]["epoch"]
    assert resumed.results["last"]["test"]["confusion"] == straight.results["last"]["test"]["confusion"]
    # the bundle of a resumed run still names where its trunk came from, not "resumed"
    info = json.loads((tmp_path / "run" / "model" / "bundle.json").read_text())["info"]
    assert info["init"] == "none (random init)"


def test_faithful_linear_probe_resumes(data, lp_faithful, tmp_path, quick_figures):
    straight_dir, straight = lp_faithful
    cfg = [*AUG_OFF, "probe.path=faithful", "probe.epochs=2"]
    assert linear_probe(cfg_for(data, *cfg, "train.max_steps=5"), tmp_path / "run").step == 5
    resumed = linear_probe(cfg_for(data, *cfg), tmp_path / "run", resume=True)
    assert resumed.step == 8
    a = load_weights(latest_checkpoint(straight_dir) / "weights.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors")
    assert equal_weights(a, b)


def test_ctrl_c_checkpoints_and_the_resume_is_exact(data, ft_run, tmp_path, quick_figures, monkeypatch, ctrl_c):
    real, calls = heads_module.loss_fn, {"n": 0}

    def interrupting(cfg):
        criterion = real(cfg)

        def loss(logits, target):
            calls["n"] += 1
            if calls["n"] == 6:  # Ctrl-C in the middle of step 6, after its forward pass
                signal.raise_signal(signal.SIGINT)
            return criterion(logits, target)

        return loss

    monkeypatch.setattr(heads_module, "loss_fn", interrupting)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg_for(data, "train.epochs=2"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_00000006" and json.loads((ckpt / "meta.json").read_text())["reason"] == "interrupted"
    monkeypatch.undo()
    assert finetune(cfg_for(data, "train.epochs=2"), tmp_path / "run", resume=True).step == 8
    a = load_weights(latest_checkpoint(ft_run[0]) / "weights.safetensors")
    assert equal_weights(a, load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors"))


def test_ctrl_c_while_validating_is_validated_on_resume(data, ft_run, tmp_path, quick_figures, monkeypatch,
                                                        ctrl_c):
    real = finetune_module.evaluate_samples

    def interrupting(*args, **kwargs):
        if "validating" in args:  # Ctrl-C during the first end-of-epoch validation
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "evaluate_samples", interrupting)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg_for(data, "train.epochs=2"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    meta = json.loads((ckpt / "meta.json").read_text())
    assert ckpt.name == "step_00000004" and meta["reason"] == "interrupted" and meta["history"] == []
    monkeypatch.undo()
    resumed = finetune(cfg_for(data, "train.epochs=2"), tmp_path / "run", resume=True)
    # epoch 1 was validated on resume, so selection saw both epochs, as in the uninterrupted run
    vals = [(x["epoch"], x["val_top1"]) for x in metrics_lines(tmp_path / "run") if x["kind"] == "val"]
    straight = [(x["epoch"], x["val_top1"]) for x in metrics_lines(ft_run[0]) if x["kind"] == "val"]
    assert vals == straight and [e for e, _ in vals] == [1, 2]
    assert resumed.results["best_val"] == ft_run[1].results["best_val"]


def test_the_weights_moving_average_is_what_ships_and_resumes_exactly(data, tmp_path, quick_figures):
    ema = ["train.epochs=2", "optim.weight_ema=0.5", "train.select=last"]
    straight = finetune(cfg_for(data, *ema), tmp_path / "straight")
    ckpt = latest_checkpoint(tmp_path / "straight")
    raw = load_weights(ckpt / "weights.safetensors")
    average = {k.removeprefix("module."): v for k, v in load_state(ckpt / "state.pt")["ema"].items()
               if k.startswith("module.")}
    shipped = load_bundle(tmp_path / "straight" / "model").model.state_dict()
    assert set(average) == set(shipped) == set(raw)
    assert all(torch.equal(shipped[k], average[k].to(shipped[k].dtype)) for k in shipped)
    assert not torch.equal(shipped["head.weight"], raw["head.weight"])  # the average, not the last step's weights
    # an interrupted run resumes its average exactly
    finetune(cfg_for(data, *ema, "train.max_steps=3"), tmp_path / "run")
    resumed = finetune(cfg_for(data, *ema), tmp_path / "run", resume=True)
    assert resumed.step == straight.step == 8
    again = load_state(latest_checkpoint(tmp_path / "run") / "state.pt")["ema"]
    assert all(torch.equal(again["module." + k], average[k]) for k in average)
    # a run started without the average cannot silently grow one on resume
    finetune(cfg_for(data, "train.epochs=2", "train.max_steps=3"), tmp_path / "plain")
    with pytest.raises(FraferError, match="without a moving average"):
        finetune(cfg_for(data, *ema), tmp_path / "plain", resume=True)


def test_cutmix_trains_on_one_hot_crowd_draws_and_resumes_exactly(data, tmp_path, quick_figures):
    mix = ["train.epochs=2", "aug.mix=cutmix", "data.crowd_mode=probability", "train.select=last"]
    straight = finetune(cfg_for(data, *mix), tmp_path / "straight")
    finetune(cfg_for(data, *mix, "train.max_steps=3"), tmp_path / "run")
    resumed = finetune(cfg_for(data, *mix), tmp_path / "run", resume=True)
    assert resumed.step == straight.step == 8
    weights = {name: load_weights(latest_checkpoint(tmp_path / name) / "weights.safetensors")
               for name in ("straight", "run")}
    assert all(torch.equal(weights["straight"][k], weights["run"][k]) for k in weights["straight"])
    finetune(cfg_for(data, "train.epochs=2", "data.crowd_mode=probability", "train.select=last"), tmp_path / "unmixed")
    unmixed = load_weights(latest_checkpoint(tmp_path / "unmixed") / "weights.safetensors")
    assert not torch.equal(unmixed["head.weight"], weights["straight"]["head.weight"])  # the mix was applied


def test_resume_refuses_another_batch_size(data, ft_run, tmp_path, quick_figures):
    finetune(cfg_for(data, "train.epochs=2", "train.max_steps=2"), tmp_path / "run")
    with pytest.raises(FraferError, match="4 steps per epoch, the data and batch size now give 2"):
        finetune(cfg_for(data, "train.epochs=2", "train.batch_size=16"), tmp_path / "run", resume=True)


# ----------------------------------------------------------------------------------------------- crowd labels


@pytest.mark.parametrize("mode", ["majority", "multilabel", "probability", "crossentropy"])
def test_crowd_modes_train(data, tmp_path, quick_figures, mode):
    result = finetune(cfg_for(data, f"data.crowd_mode={mode}", "train.epochs=1", "train.select=last"),
                      tmp_path / mode)
    assert result.step >= 1 and result.stopped == "completed" and math.isfinite(result.last_loss)
    losses = [x["loss"] for x in metrics_lines(tmp_path / mode) if x["kind"] == "train"]
    assert len(losses) == result.step and all(math.isfinite(x) for x in losses)


def test_probability_mode_draws_per_epoch_and_reproducibly(data):
    splits = prepare_splits(cfg_for(data, "data.crowd_mode=probability").data, 0)
    kept, target_fn = make_targets(splits.train, "probability", 7)
    assert kept

    def draws(seed, epoch):
        return [int(torch.as_tensor(target_fn(s, i, sample_seed(seed, epoch, i))).argmax()) for i, s in
                enumerate(kept)]

    for i, s in enumerate(kept):
        target = target_fn(s, i, 0)
        assert target.shape == (7,) and target.sum() == 1 and set(target.tolist()) <= {0.0, 1.0}
    epochs = [draws(0, e) for e in range(6)]
    assert epochs[0] == draws(0, 0) and epochs[3] == draws(0, 3)
    assert any(len({e[i] for e in epochs}) > 1 for i in range(len(kept)))  # some ambiguous face changes label
    # an image whose votes are unanimous is drawn the same every epoch
    _, table_fn = make_targets(kept, "crossentropy", 7)
    sure = [i for i in range(len(kept)) if table_fn(kept[i], i, 0).max() == 1]
    assert sure and all(len({e[i] for e in epochs}) == 1 for i in sure)


def test_training_faces_a_crowd_mode_leaves_out_are_counted_in_the_summary(data):
    splits = prepare_splits(cfg_for(data, "data.crowd_mode=majority").data, 0)
    kept, _ = training_targets(splits, "majority")
    left_out = len(splits.train) - len(kept)
    assert left_out > 0  # the fixture's votes include ties, which have no majority label
    assert splits.notes["train: no 'majority' target from the votes"] == left_out
    assert f"train: no 'majority' target from the votes: {left_out}" in splits.summary()
    everyone = prepare_splits(cfg_for(data, "data.crowd_mode=crossentropy").data, 0)
    assert len(training_targets(everyone, "crossentropy")[0]) == len(everyone.train)  # a distribution for all
    assert not any(k.startswith("train: no ") for k in everyone.notes)


# ----------------------------------------------------------------------------------------------- balanced sampling


def test_a_label_fraction_trains_on_a_fixed_share_and_leaves_val_and_test_whole(data):
    full = prepare_splits(cfg_for(data).data, 0)
    part = prepare_splits(cfg_for(data, "data.label_fraction=0.25", "data.label_seed=1").data, 7)
    assert {s.key for s in part.train} < {s.key for s in full.train}
    assert len(part.train) == sum(max(1, round(0.25 * sum(s.label == c for s in full.train)))
                                  for c in {s.label for s in full.train})
    assert [s.key for s in part.val] == [s.key for s in full.val] and len(part.test) == len(full.test)
    assert part.notes["train: labels left out (data.label_fraction=0.25, label_seed=1)"] == len(full.train) - len(
        part.train)
    again = prepare_splits(cfg_for(data, "data.label_fraction=0.25", "data.label_seed=1").data, 0)
    assert [s.key for s in again.train] == [s.key for s in part.train]  # the training seed does not move it


def test_class_balanced_sampler_draws_classes_evenly():
    samples = [FERSample(Path(f"{i}.png"), label, f"{i}") for i, label in enumerate([0] * 80 + [1] * 15 + [2] * 5)]
    weights = class_balanced_weights(samples, 7)
    assert weights.sum().item() == pytest.approx(3.0)
    sampler = EpochBatchSampler(len(samples), 10, seed=3, weights=weights)
    counts: Counter = Counter()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        counts.update(samples[i].label for batch in sampler for i, _ in batch)
    total = sum(counts.values())
    assert total == 2000 and all(abs(counts[c] / total - 1 / 3) < 0.05 for c in (0, 1, 2))
    plain = EpochBatchSampler(len(samples), 10, seed=3)
    assert Counter(samples[i].label for batch in plain for i, _ in batch)[0] == 80  # a permutation otherwise


# ----------------------------------------------------------------------------------------------- bad input


def test_corrupt_training_image_is_skipped_and_counted(data, tmp_path, quick_figures, capsys):
    root = shutil.copytree(data["train"], tmp_path / "train_copy")
    broken = sorted(root.glob("*/*.png"))[5]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    result = finetune(cfg_for(data, "train.epochs=1", "train.select=last", train_root=root), tmp_path / "run")
    assert result.step == 4 and result.stopped == "completed" and math.isfinite(result.last_loss)
    assert "skipped 1 unreadable image(s) in epoch 1" in capsys.readouterr().out
    assert [x["unreadable"] for x in metrics_lines(tmp_path / "run") if x["kind"] == "data"] == [1]


def test_missing_root_fails_before_any_model(data, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(finetune_module, "build_classifier", no_model)
    monkeypatch.setattr(cached_probe_module, "build_classifier", no_model)
    missing = tmp_path / "nowhere"
    cfg = build_config({}, [*TINY, f"data.root={missing}"], FinetuneConfig)
    with pytest.raises(FraferError, match=str(missing)):
        finetune(cfg, tmp_path / "run")
    with pytest.raises(FraferError, match=str(missing)):
        linear_probe(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(FraferError, match=r"'data.crowd_mode': majority needs annotator votes.*data.format=folders"):
        build_config({}, ["data.format=folders", f"data.root={tmp_path}", "data.crowd_mode=majority"],
                     FinetuneConfig)
    with pytest.raises(FraferError, match=r"unknown config key 'train.epochz'"):
        build_config({}, [f"data.root={tmp_path}", "train.epochz=3"], FinetuneConfig)
    with pytest.raises(FraferError, match=r"'data.root': required"):
        build_config({}, [], FinetuneConfig)


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["finetune", "--run-dir", str(tmp_path / "run"), "data.format=synthetic",
                 f"data.root={tmp_path / 'nope'}", "train.device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("frafer: error:") and "nope" in err[0]
    code = main(["evaluate", str(tmp_path / "nonexistent")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("frafer: error:") and "nonexistent" in err[0]
    code = main(["linear-probe", "--resume", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no config.yaml" in err[0]


def test_cli_linear_probe_evaluate_and_verify(data, fra_run, lfw, tmp_path, capsys, quick_figures):
    run = tmp_path / "lp"
    overrides = [o for o in TINY if not o.startswith("train.device")] + [
        f"data.root={data['train']}", f"data.extra_roots=[{data['val']},{data['test']}]", "probe.epochs=1",
        f"model.init={fra_run[0]}"]
    assert main(["linear-probe", "--run-dir", str(run), *overrides]) == 0
    assert f"completed at step 4; results: {run / 'results.md'}" in capsys.readouterr().out
    top1 = json.loads((run / "results.json").read_text())["best_val"]["test"]["top1"]
    assert main(["evaluate", str(run), "--workers", "0", "--out", str(tmp_path / "eval")]) == 0
    assert f"test: top-1 {top1:.2f}%" in capsys.readouterr().out and (tmp_path / "eval").is_dir()
    assert main(["verify", str(run), "--pairs", "lfw", "--root", str(lfw), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "lfw: accuracy" in out and (run / "model" / "verification_lfw_lfw.json").is_file()
    # --out is honoured, and another root of the same protocol gets a file of its own
    assert main(["verify", str(run), "--pairs", "lfw", "--root", str(lfw), "--workers", "0",
                 "--out", str(tmp_path / "mine.json")]) == 0
    assert json.loads((tmp_path / "mine.json").read_text())["protocol"] == "lfw"
    other = tmp_path / "second" / "faces"
    shutil.copytree(lfw, other)
    shutil.copy(lfw.parent / "pairs.txt", other.parent / "pairs.txt")
    assert main(["verify", str(run), "--pairs", "lfw", "--root", str(other), "--workers", "0"]) == 0
    assert (run / "model" / "verification_lfw_faces.json").is_file()
    assert (run / "model" / "verification_lfw_lfw.json").is_file()


def test_cli_verifies_a_random_init_trunk(lfw, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random = ["verify", "none", "--arch", "resnet18", "--width", "8", "--remove-maxpool", "--image-size", "32",
              "--pairs", "lfw", "--root", str(lfw), "--workers", "0"]
    assert main(random) == 0
    first = json.loads((tmp_path / "verification_lfw_lfw.json").read_text())
    assert first["weights"] == "random-resnet18-w8-nomaxpool-seed0" and first["image_size"] == 32
    assert first["layout"] == {"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 8, "remove_maxpool": True}
    assert main([*random, "--out", "again.json"]) == 0  # seeded: the same random trunk, the same figures
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["accuracy"] == first["accuracy"] and again["auc"] == first["auc"]


def test_config_keys_list_the_finetune_defaults(capsys):
    assert main(["config", "--kind", "finetune", "--keys"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "optim.lr = 0.0002" in out and "optim.weight_decay = 0.05" in out and "probe.path = 'cached'" in out


# ----------------------------------------------------------------------------------------------- subject folds


@pytest.fixture
def subject_folders(tmp_path) -> Path:
    """root/<expression>/S0k_n.png: 6 subjects x 7 expressions x 2 images, a colour per expression."""
    root = tmp_path / "ck"
    rng = np.random.default_rng(0)
    for c, name in enumerate(EXPRESSIONS[:7]):
        (root / name).mkdir(parents=True)
        for subject in range(1, 7):
            for n in range(2):
                pixels = rng.integers(0, 60, (32, 32, 3)) + np.array([30 * c, 200 - 25 * c, 90])
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"S{subject:02d}_{n}.png")
    return root


def test_subject_folds_are_disjoint_and_train(subject_folders, tmp_path, quick_figures):
    overrides = [*TINY, "data.format=folders", f"data.root={subject_folders}", r"data.subject_pattern=^(S\d+)_",
                 "data.folds=3", "data.fold=1", "data.balanced_sampler=true", "train.epochs=1"]
    cfg = build_config({}, overrides, FinetuneConfig)
    splits = prepare_splits(cfg.data, cfg.train.seed)
    train, val, test = ({s.subject for s in part} for part in (splits.train, splits.val, splits.test))
    assert len(test) == 2 and len(train) + len(val) == 4 and val
    assert not (train & test) and not (train & val) and not (val & test)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 84
    other = prepare_splits(build_config({}, [*overrides[:-3], "data.fold=0"], FinetuneConfig).data, 0)
    assert {s.subject for s in other.test}.isdisjoint(test)  # another fold tests other people
    result = finetune(cfg, tmp_path / "run")
    assert result.step == len(splits.train) // 8 and math.isfinite(result.last_loss)
    assert result.results["last"]["test"]["count"] == len(splits.test)
    report, _ = evaluate_bundle(tmp_path / "run", None, None, "test")  # the fold is recorded in the bundle
    assert report["count"] == len(splits.test)


def test_probe_feature_norm_folds_into_the_saved_head():
    """The linear probe's parameter-free batch-norm is folded into the Linear layer of every saved model: the plain
    trunk + Linear rebuilt from deployable_state_dict gives the probe's eval-mode logits."""

    torch.manual_seed(0)
    probe = FERClassifier(build_trunk("resnet18", (), 4, True), 7)
    probe.freeze_trunk()
    probe.add_feature_norm()
    probe.train()
    for _ in range(3):  # move the running statistics away from (0, 1)
        probe(torch.randn(8, 3, 32, 32) * 3 + 1)
    assert not torch.allclose(probe.feature_norm.running_mean, torch.zeros(32))
    x = torch.randn(4, 3, 32, 32)
    probe.eval()
    plain = FERClassifier(build_trunk("resnet18", (), 4, True), 7).eval()
    plain.load_state_dict(probe.deployable_state_dict())
    assert torch.allclose(plain(x), probe(x), atol=1e-5)


# ----------------------------------------------------------------------------------------------- class sets, all folds

CK_CLASSES = ("happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")  # CK+ has no neutral


@pytest.fixture
def ck_like(tmp_path) -> Path:
    """CK+-style class folders without neutral (6 subjects x 7 classes x 2 images) and an index.csv with a
    subject column and the dataset's own 3 folds by subject (fold3_by_subject), plus a column frafer ignores."""
    root = tmp_path / "ck+"
    rng = np.random.default_rng(0)
    lines = ["image,subject,session,fold3_by_subject"]
    for c, name in enumerate(CK_CLASSES):
        (root / name).mkdir(parents=True)
        for subject in range(1, 7):
            for n in range(2):
                pixels = rng.integers(0, 60, (32, 32, 3)) + np.array([30 * c, 200 - 25 * c, 90])
                file = f"S{subject:02d}_{n}.png"
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / file)
                lines.append(f"{name}/{file},S{subject:02d},{n},{(subject - 1) // 2}")
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    return root


def ck_cfg(root: Path, *more) -> FinetuneConfig:
    return build_config({}, [*TINY, "data.format=folders", f"data.root={root}", "data.subjects_csv=index.csv",
                             *more], FinetuneConfig)


def test_a_dataset_trains_on_the_classes_it_has(ck_like):
    splits = prepare_splits(ck_cfg(ck_like, "data.fold_column=fold3_by_subject", "data.fold=0").data, 0)
    assert splits.classes == CK_CLASSES and "neutral" not in splits.classes
    assert {s.label for s in splits.train} == set(range(7))  # labels index the trained classes
    six = prepare_splits(ck_cfg(ck_like, "data.fold_column=fold3_by_subject", "data.fold=0",
                                "data.classes=[happiness,sad,surprise,fear,disgust,angry]").data, 0)
    assert six.classes == CK_CLASSES[:6] and {s.label for s in six.test} <= set(range(6))
    assert six.notes["test: class not trained (contempt)"] == 4  # 2 test subjects x 2 images
    with pytest.raises(FraferError, match="has no 'neutral' images; its classes are happy, sad"):
        prepare_splits(ck_cfg(ck_like, "data.classes=[neutral,happy]").data, 0)
    with pytest.raises(FraferError, match="data.num_classes.*gives 7 classes .*data.classes"):
        prepare_splits(ck_cfg(ck_like, "data.num_classes=8").data, 0)


def test_all_folds_of_a_fold_column_in_one_command(ck_like, tmp_path, quick_figures, monkeypatch, capsys):
    real, extracted = cached_probe_module.extract_features, []

    def counting(model, samples, *args, **kwargs):
        extracted.extend(s.key for s in samples)
        return real(model, samples, *args, **kwargs)

    monkeypatch.setattr(cached_probe_module, "extract_features", counting)
    classes = "data.classes=[happy,sad,surprise,fear,disgust,anger]"
    cfg = ck_cfg(ck_like, "data.fold_column=fold3_by_subject", classes, "probe.epochs=2", "probe.flip_average=false")
    assert cfg.data.fold == -1  # the default: every fold
    result = linear_probe(cfg, tmp_path / "cv")
    table = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert [r["fold"] for r in table["rows"]] == [0, 1, 2] and sum(r["test_images"] for r in table["rows"]) == 72
    mean, std, pooled = table["summary"]
    tops = [r["last_top1"] for r in table["rows"]]
    assert mean["last_top1"] == pytest.approx(np.mean(tops)) and std["last_top1"] == pytest.approx(np.std(tops))
    assert pooled["test_images"] == 72 and result.results["folds"] == table
    assert "| mean |" in (tmp_path / "cv" / "folds.md").read_text()
    # each image went through the trunk once, although every image is in two folds' train splits
    assert len(extracted) == len(set(extracted)) == 72
    for k in range(3):  # each fold tests its own subjects, and its bundle records the 6 classes and its fold
        bundle = load_bundle(tmp_path / "cv" / f"fold_{k:02d}")
        assert bundle.classes == CK_CLASSES[:6] and bundle.info["data"]["fold"] == k
        report, _ = evaluate_bundle(tmp_path / "cv" / f"fold_{k:02d}", None, None, "test")
        assert report["count"] == 24
    with pytest.raises(FraferError, match="already holds a run"):
        linear_probe(cfg, tmp_path / "cv")


def test_all_subject_folds_fine_tune_and_resume(subject_folders, tmp_path, quick_figures):
    overrides = [*TINY, "data.format=folders", f"data.root={subject_folders}", r"data.subject_pattern=^(S\d+)_",
                 "data.folds=3", "train.epochs=1", "data.val_fraction=0"]
    cfg = build_config({}, overrides, FinetuneConfig)
    finetune(cfg, tmp_path / "cv")
    first = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert len(first["rows"]) == 3 and all(r["test_images"] == 28 for r in first["rows"])
    shutil.rmtree(tmp_path / "cv" / "fold_02")  # as if interrupted before the last fold
    again = finetune(cfg, tmp_path / "cv", resume=True)
    assert again.results["folds"] == first  # the finished folds are read back, the missing one re-run exactly


def test_pretrain_method_of_runs_written_before_the_method_key(tmp_path):
    from frafer.artifacts.trunk_init import pretrain_method

    weights = tmp_path / "run" / "checkpoints" / "step_00000001" / "weights.safetensors"
    weights.parent.mkdir(parents=True)
    assert pretrain_method(weights) == "unknown"
    (tmp_path / "run" / "config.yaml").write_text("loss: {lambda_c: 1.0, lambda_r: 0.0}\n")
    assert pretrain_method(weights) == "byol"  # BYOL was FRA's loss without its local terms
    (tmp_path / "run" / "config.yaml").write_text("loss: {lambda_c: 0.5, lambda_r: 0.1}\n")
    assert pretrain_method(weights) == "fra"
    (tmp_path / "run" / "config.yaml").write_text("method: moco_v2\n")
    assert pretrain_method(weights) == "moco_v2"


def test_the_demo_chooses_each_inits_learning_rate_on_val(data, tmp_path, quick_figures):
    from frafer.demo import finetune_choosing_lr

    recipe = tmp_path / "ft.yaml"
    recipe.write_text("train: {epochs: 1}\n")
    extra = [*TINY, f"data.root={data['train']}", f"data.extra_roots=[{data['val']},{data['test']}]"]
    chosen = finetune_choosing_lr(str(recipe), extra, (1e-4, 3e-3), tmp_path, "ft_random")
    assert set(chosen["val"]) == {1e-4, 3e-3}
    assert chosen["val"][chosen["lr"]] == max(chosen["val"].values())
    assert chosen["run_dir"] == tmp_path / f"ft_random_lr{chosen['lr']:g}"
    assert chosen["results"]["last"]["val"]["top1"] == chosen["val"][chosen["lr"]]
    assert yaml.safe_load((chosen["run_dir"] / "config.yaml").read_text())["optim"]["lr"] == chosen["lr"]
    assert (tmp_path / "ft_random_lr0.0001" / "model").is_dir() and (tmp_path / "ft_random_lr0.003" / "model").is_dir()


def test_the_demo_probes_and_fine_tunes_at_the_size_its_faces_were_written(tmp_path):
    from frafer.config.loader import load_config
    from frafer.demo import downstream_overrides

    root = Path(__file__).resolve().parents[2] / "configs"
    regions = load_config(str(root / "demo_regions.yaml"))
    assert regions.data.image_size == 80 and regions.train.epochs == 12  # over demo.yaml: 5×5 maps, 768 steps
    assert (regions.optim.weight_decay, regions.optim.weight_decay_scope) == (1e-4, "trunk")
    assert regions.data.source == "synthetic" and regions.model.width == 16  # the rest is the demo's
    data = {split: tmp_path / split for split in ("train", "val", "test")}
    downstream = load_config(str(root / "demo_finetune.yaml"), downstream_overrides(data, "none", 80), FinetuneConfig)
    assert downstream.data.image_size == 80 and downstream.data.root == str(tmp_path / "train")
    assert downstream.data.extra_roots == [str(tmp_path / "val"), str(tmp_path / "test")]
    mine = downstream_overrides(data, "none", 80, ["data.image_size=64"])  # the user's --ft comes last and wins
    assert load_config(str(root / "demo_finetune.yaml"), mine, FinetuneConfig).data.image_size == 64
