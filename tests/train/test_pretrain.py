"""The pre-training loop: exact resume, NaN stop, Ctrl-C checkpoint, corrupt files, early errors, export."""

import json

import pytest
import torch
import torchvision

from frafer.artifacts.checkpoint import latest_checkpoint, load_weights, save_weights
from frafer.cli import main
from frafer.config.loader import load_config
from frafer.errors import FraferError
from frafer.methods import fra as fra_method
from frafer.optim import lr_at, momentum_at
from frafer.train.pretrain import NonFiniteLoss, pretrain
from tests.conftest import TINY_PRETRAIN as TINY
from tests.conftest import pretrain_cfg as tiny

# MoCo v2's tiny run: a queue of two batches and two shuffle-BN batches per step of 8
METHOD_SETTINGS = {"fra": [], "moco_v2": ["method=moco_v2", "moco.queue_size=16", "moco.bn_batch=4",
                                          "moco.dim=16"],
                   # the trunk-only weight decay adds a third LARS group, which a resume must restore in order
                   "fra_trunk_decay": ["optim.weight_decay=1e-4", "optim.weight_decay_scope=trunk"]}


@pytest.mark.parametrize("method", ["fra", "moco_v2", "fra_trunk_decay"])
def test_resume_continues_exactly(faces, tmp_path, method):
    # 24 images / batch 8 = 3 steps per epoch; 5 steps cross an epoch boundary, the stop falls mid-epoch.
    m = METHOD_SETTINGS[method]
    straight = pretrain(tiny(faces, *m, "train.epochs=3", "train.max_steps=5"), tmp_path / "straight")
    first = pretrain(tiny(faces, *m, "train.epochs=3", "train.max_steps=2"), tmp_path / "resumed")
    assert first.step == 2 and first.stopped == "max_steps"
    resumed = pretrain(tiny(faces, *m, "train.epochs=3", "train.max_steps=5"), tmp_path / "resumed", resume=True)
    assert resumed.step == 5
    a = load_weights(latest_checkpoint(tmp_path / "straight") / "weights.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "resumed") / "weights.safetensors")
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert straight.last_loss == resumed.last_loss


def test_resume_with_another_weight_decay_scope_is_refused_by_name(faces, tmp_path):
    # the trunk scope adds a LARS parameter group, so the saved optimiser state no longer fits
    pretrain(tiny(faces, "train.epochs=2", "train.max_steps=2"), tmp_path / "run")
    with pytest.raises(FraferError, match="optim.weight_decay_scope"):
        pretrain(tiny(faces, "train.epochs=2", "optim.weight_decay_scope=trunk"), tmp_path / "run", resume=True)


def test_run_folder_records_config_seed_versions(faces, tmp_path):
    pretrain(tiny(faces, "train.epochs=1", "train.seed=7"), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["seed"] == 7 and info["versions"]["torch"] == torch.__version__ and "git_commit" in info
    assert load_config(tmp_path / "run" / "config.yaml").train.seed == 7
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["kind"] == "train"]
    assert [x["step"] for x in train] == [1, 2, 3] and all("relation" in x and "img_per_s" in x for x in train)


def _fail_at(monkeypatch, call: int, action):
    real, calls = fra_method.fra_loss, {"n": 0}

    def patched(out, cfg):
        calls["n"] += 1
        loss, parts = real(out, cfg)
        if calls["n"] == call:
            return action(loss, parts)
        return loss, parts

    monkeypatch.setattr(fra_method, "fra_loss", patched)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(faces, tmp_path, monkeypatch):
    def poison(loss, parts):
        parts["local"] = torch.tensor(float("nan"))
        return loss * float("nan"), parts

    _fail_at(monkeypatch, 3, poison)
    with pytest.raises(NonFiniteLoss, match=r"'local' is nan at step 3"):
        pretrain(tiny(faces, "train.epochs=2", "train.checkpoint_every=2"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_00000002"
    weights = load_weights(ckpt / "weights.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_ctrl_c_saves_a_checkpoint_to_resume_from(faces, tmp_path, monkeypatch):
    def interrupt(loss, parts):
        raise KeyboardInterrupt

    _fail_at(monkeypatch, 3, interrupt)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny(faces, "train.epochs=2"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    assert json.loads((ckpt / "meta.json").read_text())["reason"] == "interrupted" and ckpt.name == "step_00000002"
    monkeypatch.undo()
    assert pretrain(tiny(faces, "train.epochs=2"), tmp_path / "run", resume=True).step == 6


def test_corrupt_files_are_skipped_and_counted(faces, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(faces, root)
    (root / "happy" / "empty.png").write_bytes(b"")
    (root / "sad" / "text.jpg").write_text("not an image")
    good = next((root / "anger").glob("*.png"))
    (root / "anger" / "truncated.png").write_bytes(good.read_bytes()[:60])
    cfg = load_config(None, [*TINY, "data.source=folder", f"data.root={root}", "train.epochs=1", "train.batch_size=9"])
    result = pretrain(cfg, tmp_path / "run")
    assert result.step == 3  # 27 files / 9: every batch full although 3 files are broken
    out = capsys.readouterr()
    assert "skipped 3 unreadable file(s)" in out.out + out.err
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["skipped_files"] for x in lines if x["kind"] == "data"] == [3]


def test_missing_or_empty_root_fails_before_any_model(tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(fra_method, "FRA", no_model)
    with pytest.raises(FraferError, match="does not exist"):
        pretrain(load_config(None, [*TINY, "data.source=folder", f"data.root={tmp_path / 'nope'}"]), tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FraferError, match="empty"):
        pretrain(load_config(None, [*TINY, "data.source=folder", f"data.root={tmp_path / 'empty'}"]), tmp_path / "r")


def test_byol_trains_without_local_branch_and_every_record_names_its_method(faces, tmp_path):
    result = pretrain(tiny(faces, "train.epochs=1", "method=byol"), tmp_path / "byol")
    ckpt = latest_checkpoint(tmp_path / "byol")
    weights = load_weights(ckpt / "weights.safetensors")
    assert result.step == 3 and not any("decoder" in k or "local" in k for k in weights)
    assert json.loads((ckpt / "meta.json").read_text())["method"] == "byol"
    assert json.loads((tmp_path / "byol" / "run.json").read_text())["method"] == "byol"
    assert load_config(tmp_path / "byol" / "config.yaml").method == "byol"
    with pytest.raises(FraferError, match="pre-trained with method byol, the config says method fra"):
        pretrain(tiny(faces, "train.epochs=1"), tmp_path / "byol", resume=True)


def test_export_backbone_loads_into_torchvision(faces, tmp_path, capsys):
    overrides = [o for o in TINY if not o.startswith("model.width")] + [
        "data.source=folder", f"data.root={faces}", "train.epochs=1", "train.max_steps=1",
    ]
    assert main(["pretrain", "--run-dir", str(tmp_path / "run"), *overrides]) == 0
    assert main(["export-backbone", str(tmp_path / "run")]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(load_weights(path), strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    trained = load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors")
    assert torch.equal(net.conv1.weight, trained["online.trunk.conv1.weight"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_refuses_a_tampered_checkpoint(faces, tmp_path):
    pretrain(tiny(faces, "train.epochs=1"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    (ckpt / "weights.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(FraferError, match="not a readable safetensors"):
        pretrain(tiny(faces, "train.epochs=1"), tmp_path / "run", resume=True)
    import pickle

    (ckpt / "weights.safetensors").unlink()
    pretrain(tiny(faces, "train.epochs=1"), tmp_path / "run2")
    ckpt2 = latest_checkpoint(tmp_path / "run2")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    (ckpt2 / "state.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(FraferError, match="cannot be loaded safely"):
        pretrain(tiny(faces, "train.epochs=1"), tmp_path / "run2", resume=True)


def test_resume_refuses_a_checkpoint_of_the_old_layout(faces, tmp_path):
    """A layout-1 checkpoint (before DETR's decoder and the official LARS buffer) is refused, not read wrongly."""
    pretrain(tiny(faces, "train.epochs=2", "train.max_steps=2"), tmp_path / "run")
    meta_path = latest_checkpoint(tmp_path / "run") / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["layout"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FraferError, match="checkpoint layout 1, this version writes 2.*Start a new run"):
        pretrain(tiny(faces, "train.epochs=2"), tmp_path / "run", resume=True)


def test_gradient_clipping_limits_the_plain_sgd_updates(faces, tmp_path):
    # LARS rescales adapted weights by a trust ratio, so clipping shows on the excluded (plain SGD) parameters.
    def bn_change(run, *more):
        pretrain(tiny(faces, "train.epochs=1", "train.max_steps=1", "optim.warmup_epochs=0", *more), tmp_path / run)
        w = load_weights(latest_checkpoint(tmp_path / run) / "weights.safetensors")
        return (w["online.trunk.bn1.bias"] - w["momentum.trunk.bn1.bias"]).abs().max().item()

    assert bn_change("free") > 1e-4
    assert bn_change("clipped", "optim.grad_clip=1e-9") < 1e-6


def test_vggface2_layout_with_loose_boxes(tmp_path):
    from frafer.data.synthetic.renderer import SyntheticFaces

    root, faces = tmp_path / "vggface2" / "train", SyntheticFaces(12, size=48, num_identities=3)
    rows = ["NAME_ID,X,Y,W,H"]
    for i in range(12):
        name = f"n{i % 3:06d}/{i:04d}_01"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        faces[i][0].save(root / f"{name}.jpg")
        if i != 5:  # one image without a box is kept uncropped
            rows.append(f'"{name}",4,2,40,44')
    csv_path = tmp_path / "loose_bb_train.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    cfg = load_config(None, [*TINY, "data.source=vggface2", f"data.root={root}", f"data.bbox_csv={csv_path}",
                             "data.crop_margin=0.1", "train.batch_size=4", "train.epochs=1"])
    assert pretrain(cfg, tmp_path / "run").step == 3


def test_synthetic_source_renders_with_the_configured_expression_gain():
    from frafer.data.synthetic.renderer import SyntheticFaces
    from frafer.train.pretrain import build_pretrain_dataset

    keys = ["data.source=synthetic", "data.image_size=32", "data.synthetic.num_images=7"]
    strong = build_pretrain_dataset(load_config(None, [*keys, "data.synthetic.expression_gain=3.0"])).source.images
    assert isinstance(strong, SyntheticFaces) and strong.expression_gain == 3.0
    reference = SyntheticFaces(7, 32, 200, 0, expression_gain=3.0)
    assert all((strong.image(i) == reference.image(i)).all() for i in range(7))
    with pytest.raises(FraferError, match="expression_gain"):
        load_config(None, [*keys, "data.synthetic.expression_gain=0"])


def test_watching_a_run_does_not_change_it(faces, tmp_path):
    """The kNN monitor reads images through a DataLoader, which draws a seed from the global RNG; a run with
    monitors (at the start and after every epoch) must still train exactly like one without them."""
    plain = pretrain(tiny(faces, "train.epochs=2"), tmp_path / "plain")
    watched = pretrain(tiny(faces, "train.epochs=2", f"monitor.knn_train_root={faces}", f"monitor.knn_val_root={faces}",
                            "monitor.knn_at_start=true", "monitor.knn_every_epochs=1"), tmp_path / "watched")
    assert [r["epoch"] for r in watched.knn] == [0, 1, 2]
    a = load_weights(latest_checkpoint(tmp_path / "plain") / "weights.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "watched") / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert plain.last_loss == watched.last_loss


# ----------------------------------------------------------------------------------------------- run length


def _train_lines(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "train"]


def test_a_run_given_in_steps_completes_every_schedule(faces, tmp_path):
    # 3 steps an epoch; 5 steps = 1 2/3 epochs. Warm-up 2 steps, then the cosine reaches min_lr at step 5 exactly
    # and the momentum coefficient reaches ema_final: schedules span the run, not whole epochs.
    result = pretrain(tiny(faces, "train.steps=5", "optim.warmup_steps=2", "optim.base_lr=0.5"), tmp_path / "run")
    assert result.step == 5 and result.stopped == "completed"
    train = _train_lines(tmp_path / "run")
    assert [x["step"] for x in train] == [1, 2, 3, 4, 5]
    expected_lr = [lr_at(k, 5, 2, 0.5) for k in range(5)]
    assert [x["lr"] for x in train] == pytest.approx(expected_lr)
    assert expected_lr[0] < expected_lr[1] == expected_lr[2] == 0.5 > expected_lr[3] > expected_lr[4] > 0
    assert lr_at(5, 5, 2, 0.5) == 0  # the cosine ends where the run ends
    assert [x["ema"] for x in train] == pytest.approx([momentum_at(k, 5) for k in range(5)])
    meta = json.loads((latest_checkpoint(tmp_path / "run") / "meta.json").read_text())
    assert meta["total_steps"] == 5 and meta["epoch"] == pytest.approx(5 / 3, abs=1e-4)


def test_fractional_epochs_and_their_interruption_resume_exactly(faces, tmp_path):
    # 1.5 epochs of 3 steps = 5 steps (half-way rounds up); max_steps=4 interrupts inside the second epoch.
    straight = pretrain(tiny(faces, "train.epochs=1.5"), tmp_path / "straight")
    assert straight.step == 5 and straight.stopped == "completed"
    first = pretrain(tiny(faces, "train.epochs=1.5", "train.max_steps=4"), tmp_path / "resumed")
    assert first.step == 4 and first.stopped == "max_steps"
    resumed = pretrain(tiny(faces, "train.epochs=1.5"), tmp_path / "resumed", resume=True)
    assert resumed.step == 5 and resumed.stopped == "completed"
    a = load_weights(latest_checkpoint(tmp_path / "straight") / "weights.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "resumed") / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lrs = {run: [x["lr"] for x in _train_lines(tmp_path / run)] for run in ("straight", "resumed")}
    assert lrs["straight"] == lrs["resumed"] and len(lrs["straight"]) == 5


def test_resume_refuses_another_run_length(faces, tmp_path):
    pretrain(tiny(faces, "train.steps=5", "train.max_steps=2"), tmp_path / "run")
    with pytest.raises(FraferError, match="schedules span 5 steps, the config now gives 6"):
        pretrain(tiny(faces, "train.steps=6"), tmp_path / "run", resume=True)


def test_a_warm_up_longer_than_the_run_is_refused(faces, tmp_path):
    with pytest.raises(FraferError, match="optim.warmup_epochs.*30 steps is longer than the 6-step run"):
        pretrain(tiny(faces, "train.epochs=2", "optim.warmup_epochs=10"), tmp_path / "run")
    with pytest.raises(FraferError, match="'optim.warmup_steps': a warm-up of 7 steps .* 6-step run.*; lower it"):
        pretrain(tiny(faces, "train.epochs=2", "optim.warmup_steps=7"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_fresh_run_refuses_a_used_folder(faces, tmp_path, capsys):
    pretrain(tiny(faces, "train.steps=3"), tmp_path / "run")
    with pytest.raises(FraferError, match="already holds a run"):
        pretrain(tiny(faces, "train.steps=4"), tmp_path / "run")
    args = ["pretrain", "--run-dir", str(tmp_path / "run"), "--threads", "1", *TINY, "data.source=folder",
            f"data.root={faces}", "train.steps=4"]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")] == ["step_00000004"]
    assert load_config(tmp_path / "run" / "config.yaml").train.threads == 1
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["machine"]["threads"] == 1
    assert info["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_resume_falls_back_to_the_newest_intact_checkpoint(faces, tmp_path, capsys):
    straight = pretrain(tiny(faces, "train.steps=6"), tmp_path / "straight")
    cfg = ["train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3"]
    pretrain(tiny(faces, *cfg, "train.max_steps=4"), tmp_path / "run")  # checkpoints at steps 2 and 4
    newest = latest_checkpoint(tmp_path / "run")
    assert newest.name == "step_00000004"
    data = (newest / "weights.safetensors").read_bytes()
    (newest / "weights.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut short
    capsys.readouterr()
    resumed = pretrain(tiny(faces, *cfg), tmp_path / "run", resume=True)
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint step_00000004" in out and "resuming from" in out and "step_00000002" in out
    assert resumed.step == 6 and resumed.last_loss == straight.last_loss
    a = load_weights(latest_checkpoint(tmp_path / "straight") / "weights.safetensors")
    b = load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_before_mask_prototypes_resumes_and_rebuilds_them(faces, tmp_path, capsys):
    pretrain(tiny(faces, "train.epochs=2", "train.max_steps=2"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    weights = load_weights(ckpt / "weights.safetensors")
    # one update per view through each network: two per step
    assert int(weights["online.prototype_updates"]) == 4 and int(weights["momentum.prototype_updates"]) == 4
    old = {k: v for k, v in weights.items() if not k.endswith(("mask_prototypes", "prototype_updates"))}
    save_weights(ckpt / "weights.safetensors", old)  # as a checkpoint written before the buffers existed
    assert pretrain(tiny(faces, "train.epochs=2"), tmp_path / "run", resume=True).step == 6
    printed = capsys.readouterr()
    assert "predates mask_prototypes, prototype_updates" in printed.out + printed.err
    resumed = load_weights(latest_checkpoint(tmp_path / "run") / "weights.safetensors")
    assert int(resumed["online.prototype_updates"]) == 8  # the 4 steps after the resume
